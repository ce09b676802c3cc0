"""Planning a training run: resolve presets, options, the run folder and resume state, and check
the data, before anything is written. A plan is printable (`--dry-run`) and is what every rank
of a torchrun job trains from."""

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegen.common import locations
from imagegen.common.devices import resolve_device
from imagegen.common.errors import UsageError, UserError
from imagegen.common.options import build_dataclass, differences, to_dict
from imagegen.common.progress import Emit
from imagegen.data import datasets as data
from imagegen.data import image_sizes
from imagegen.data.labels import Layout
from imagegen.models.blocks import RESOLUTIONS
from imagegen.models.registry import ModelSpec, get_spec
from imagegen.storage import checkpoint, runs
from imagegen.training import distributed, tensorboard_log
from imagegen.training.config import RESUMABLE_CHANGES, TrainConfig

# A run planned this many times the images after which its preset's FID curve was measured to
# flatten is told so on its first line (Preset.flattens).
FAR_PAST = 2


@dataclass(frozen=True)
class TrainRequest:
    """What the user asked for; options hold only what was given explicitly."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's config fields
    data_root: str | None = None
    device: str = "auto"
    run_dir: Path | None = None
    resume: Path | None = None
    force: bool = False


@dataclass(frozen=True)
class TrainPlan:
    """A fully resolved run, ready to start (or to print, for --dry-run)."""

    model: str
    model_config: dict[str, Any]
    train: TrainConfig
    dataset: str  # description of the data source
    run_dir: Path
    device: str
    data_root: str | None
    total_steps: int  # the run's length: --steps, or --epochs of the data's images
    # the channels the data is loaded with (None: a folder's or zip's own, as decoded; the
    # model's are model_config's)
    data_channels: int | None = None
    resume_from: Path | None = None
    replace_run_dir: bool = False
    resume_step: int | None = None  # the step of the checkpoint resumed from
    resolution_how: str = ""  # how the resolution was chosen, where the data chose it
    # fractions of the planned steps over which the conditioning ramps in (ModelSpec.
    # conditional_ramp), resolved into model_config's cond_start, cond_end; None: none asked
    conditional_ramp: tuple[float, float] | None = None

    @property
    def length_advice(self) -> str:
        """For the first line of a run planned far past where its preset's FID curve was
        measured to flatten ('' for the others)."""
        preset = get_spec(self.model).presets.get(self.train.preset)
        flat = preset.flattens if preset else None
        planned = self.total_steps * self.train.batch_size * distributed.from_env().world_size
        if flat is None or planned < FAR_PAST * flat.images:
            return ""
        return (
            f"{planned:,} training images planned, far past where this recipe's FID curve "
            f"flattens: {flat.said} (docs/long-runs.md); about {flat.images:,} buy most of it"
        )

    def as_dict(self) -> dict[str, Any]:
        advice = self.length_advice
        return (
            {
                "model": self.model,
                "model_config": self.model_config,
                "train_config": to_dict(self.train),
                "dataset": self.dataset,
                "run_dir": str(self.run_dir),
                "device": self.device,
                "data_root": self.data_root,
                "total_steps": self.total_steps,
                "resume_from": str(self.resume_from) if self.resume_from else None,
            }
            | ({"conditional_ramp": list(self.conditional_ramp)} if self.conditional_ramp else {})
            | ({"length_advice": advice} if advice else {})
        )


def plan_training(
    request: TrainRequest, download: bool = True, emit: Emit | None = None
) -> TrainPlan:
    """Resolve options, the run folder and resume state; check (or fetch) the data. A folder's
    or zip's images are decoded here (once: then cached), for their channels and their count;
    `emit` hears that decode."""
    spec = get_spec(request.model)
    device = resolve_device(request.device)
    if request.options.get("sync_bn") and distributed.from_env().enabled:
        distributed.check_sync_batchnorm(device)  # torchrun's processes: CUDA only
    if request.resume is not None:
        return _plan_resume(request, download, emit)
    train, options, resolution_how = _new_run_options(spec, request)
    run_dir = (
        Path(request.run_dir) if request.run_dir else runs.next_run_dir(spec.name, train.dataset)
    )
    replace_run = _check_new_run_dir(run_dir, request.force)
    census = data.dataset_census(train.dataset, root=request.data_root, download=download)
    options |= _conditioning(train, census.layout, census.name)
    asked = _asked_channels(train, request.model_options, options.pop("channels", None))
    channels, images = asked, census.images
    if channels is None:  # a folder's or zip's own: as its images decode
        resolution = options.get("resolution", _default(spec.config_cls, "resolution"))
        fitting = data.fitting_for(to_dict(train))
        loaded = data.load_images(
            train.dataset, resolution=resolution, root=request.data_root, emit=emit, fitting=fitting
        )
        channels, images = loaded.shape[0], len(loaded.images)
    total = run_length(train, images)
    ramp = spec.conditioning_ramp(train.conditional, options)
    options |= ramp_steps(ramp, total) | {"channels": channels}
    config = build_dataclass(spec.config_cls, options, request.model)
    if hasattr(config, "check_training"):  # what this model cannot train with
        config.check_training(train)
    return TrainPlan(
        model=spec.name,
        model_config=to_dict(config),
        train=train,
        dataset=census.name,
        run_dir=run_dir,
        device=request.device,
        data_root=str(locations.data_root(request.data_root).resolve()),
        total_steps=total,
        data_channels=asked,
        replace_run_dir=replace_run,
        resolution_how=resolution_how,
        conditional_ramp=ramp,
    )


def _new_run_options(
    spec: ModelSpec, request: TrainRequest
) -> tuple[TrainConfig, dict[str, Any], str]:
    """A new run's training config, its model options so far (the resolution the data's own
    where none is asked) and how that resolution was chosen."""
    options, model_options = preset_options(spec, request.options, request.model_options)
    dataset = str(options.get("dataset", ""))
    if data.native_channels(dataset) is None and Path(dataset).expanduser().exists():
        # A folder or zip: store its absolute path so the run can be resumed from anywhere.
        options["dataset"] = str(Path(options["dataset"]).expanduser().resolve())
    train = build_dataclass(TrainConfig, options, "training")
    tensorboard_log.wanted(train.tensorboard)  # asked for without the package: refused now
    if "num_classes" in request.model_options:
        raise UsageError("num_classes is the data's: train with --conditional instead")
    resolution_how = ""
    if "resolution" not in model_options:  # the data's own size, where it has one
        size, resolution_how = image_sizes.training_resolution(train.dataset, RESOLUTIONS)
        model_options |= {"resolution": size} if size is not None else {}
    return train, model_options, resolution_how


def _asked_channels(train: TrainConfig, model_options: dict[str, Any], given: Any) -> int | None:
    """The channels the data is loaded with: --channels, 4 with --transparent, a named
    dataset's own; None: a folder's or zip's own (known once decoded)."""
    if train.transparent:  # RGBA, whatever the data's own channels
        if model_options.get("channels") not in (None, 4):
            raise UsageError("--transparent trains on 4 channels (RGBA): leave --channels out")
        return 4
    return given or data.native_channels(train.dataset)


def _default(config_cls: type, name: str) -> Any:
    """A config field's default."""
    return next(f.default for f in dataclasses.fields(config_cls) if f.name == name)


def preset_options(
    spec: ModelSpec, options: dict[str, Any], model_options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new run's training and model options before the data is read: the model's training
    defaults, then its preset's (`options["preset"]`, else its default one), then those
    asked; the preset's name among the training options."""
    preset_name, preset = spec.preset(options.get("preset"))
    train = spec.train_defaults | preset.train | options | {"preset": preset_name}
    return train, preset.model | model_options


def run_length(train: TrainConfig, images: int) -> int:
    """The run's length in optimisation steps: --steps, else --epochs of `images` in whole
    global batches (every process of a torchrun job takes a batch each step)."""
    world = distributed.from_env().world_size
    per_epoch = images // (train.batch_size * world)
    if per_epoch < 1:
        what = f"the batch size {train.batch_size}"
        if world > 1:
            what = f"the global batch {train.batch_size} x {world} processes"
        raise UsageError(f"the dataset has {images} images, fewer than {what}")
    return train.steps or math.ceil(train.epochs * per_epoch)


def ramp_steps(ramp: tuple[float, float] | None, total: int) -> dict[str, int]:
    """The model options cond_start, cond_end of a conditioning that ramps in over the
    fractions `ramp` of `total` steps ({} where it does not ramp by the run's length)."""
    if ramp is None:
        return {}
    start = round(ramp[0] * total)
    return {"cond_start": start, "cond_end": max(round(ramp[1] * total), start + 1)}


def _conditioning(train: TrainConfig, layout: Layout, described: str) -> dict:
    """The model option a conditional run sets ({} otherwise); refuse data without classes."""
    if not train.conditional:
        return {}
    if layout.labels is None:
        raise UsageError(f"--conditional needs classes, but {described}: {layout.problem}")
    return {"num_classes": len(layout.labels.classes)}


def _check_new_run_dir(run_dir: Path, force: bool) -> bool:
    """Whether a new run replaces `run_dir`; refuse what must not be replaced."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} is a file, not a folder")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return False
    if not force:
        raise UserError(
            f"run folder exists: {run_dir} (use --resume {run_dir} to continue it, "
            "or --force to replace it)"
        )
    if not (run_dir / runs.CONFIG).is_file():
        raise UserError(f"refusing to replace {run_dir}: it is not an imagegen run folder")
    return True


def _resumed_options(stored: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """The training options of a resumed run: stored ones, with what may change on resume.

    A run's length is its `steps`, or `epochs` when steps is None: asking for epochs on resume
    of a run made with --steps replaces the step count (and the reverse).
    """
    merged = {**stored, **asked}
    if "epochs" in asked and "steps" not in asked:
        merged["steps"] = None
    return merged


def _plan_resume(request: TrainRequest, download: bool, emit: Emit | None) -> TrainPlan:
    assert request.resume is not None
    path = runs.find_checkpoint(request.resume)
    ckpt = checkpoint.read_checkpoint(path, expect_model=request.model, load_tensors=False)
    stored_model = to_dict(ckpt.config)
    asked_model = to_dict(
        build_dataclass(
            type(ckpt.config), {**stored_model, **request.model_options}, ckpt.model_name
        )
    )
    diff = differences(stored_model, asked_model)
    if diff:
        raise UserError(f"cannot resume {path} with a different model config: {'; '.join(diff)}")
    stored_train = to_dict(build_dataclass(TrainConfig, ckpt.train_config, "training"))
    train = build_dataclass(
        TrainConfig, _resumed_options(stored_train, request.options), "training"
    )
    diff = [
        d
        for d in differences(stored_train, to_dict(train))
        if d.split(":")[0] not in RESUMABLE_CHANGES
    ]
    if diff:
        raise UserError(f"cannot resume {path} with different training options: {'; '.join(diff)}")
    tensorboard_log.wanted(train.tensorboard)
    if train.steps is not None and train.steps < ckpt.step:
        raise UserError(
            f"{path} is at step {ckpt.step}, past the --steps {train.steps} asked for; "
            f"give more than {ckpt.step} steps to train on (the run is left as it is)"
        )
    run_dir = _resume_run_dir(request, path, ckpt.model_name, train.dataset)
    data_root = request.data_root or runs.recorded_data_root(path)
    census = data.dataset_census(train.dataset, root=data_root, download=download)
    images = census.images
    if train.steps is None and data.native_channels(train.dataset) is None:
        # --epochs of a folder's or zip's readable images: as they decode (then cached)
        fitting = data.fitting_for(to_dict(train))
        loaded = data.load_images(
            train.dataset,
            resolution=stored_model["resolution"],
            channels=stored_model["channels"],
            root=data_root,
            emit=emit,
            fitting=fitting,
        )
        images = len(loaded.images)
    return TrainPlan(
        model=ckpt.model_name,
        model_config=stored_model,
        train=train,
        dataset=census.name,
        run_dir=run_dir,
        device=request.device,
        data_root=data_root,
        total_steps=run_length(train, images),
        data_channels=stored_model["channels"],
        resume_from=path,
        resume_step=ckpt.step,
    )


def _resume_run_dir(request: TrainRequest, path: Path, model: str, dataset: str) -> Path:
    """Where a resumed run writes: --run-dir, else the checkpoint's own run, else a new one."""
    own = runs.run_of(path)
    if request.run_dir:
        run_dir = Path(request.run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--run-dir {run_dir} is a file, not a folder")
        if run_dir.exists() and any(run_dir.iterdir()) and run_dir != own:
            raise UserError(f"run folder exists: {run_dir}")
        return run_dir
    return own if own is not None else runs.next_run_dir(model, dataset)
