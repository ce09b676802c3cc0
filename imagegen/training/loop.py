"""The training loop, the same for every model: `run_training(plan)` trains a planned run.

The loop (`_train`) reads top to bottom: draw a batch, take the model's training step, update
the moving average, then at their intervals log, sample, measure FID and checkpoint. The pieces
it calls are named here: `_Session` (what a run is set up with), `_LossMeter` (losses summed
on the device, read once per log line), `_Checkpointer` (checkpoints, rotation, latest/best).
"""

import contextlib
import functools
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imagegen import __version__
from imagegen.common import jsonl
from imagegen.common.devices import autocast, precision_reason, resolve_device, resolve_precision
from imagegen.common.errors import PeerError, UserError
from imagegen.common.files import atomic_link_or_copy, remove_stray_temp_files
from imagegen.common.options import build_dataclass, to_dict
from imagegen.common.progress import Emit, Kind, ProgressEvent, ignore
from imagegen.data import datasets as data
from imagegen.data import labels as labelling
from imagegen.data.batches import EpochBatches
from imagegen.evaluation import inception
from imagegen.models.base import GenerativeModel, ModelConfig
from imagegen.models.registry import get_spec
from imagegen.sampling.generation import class_grid
from imagegen.sampling.images import make_grid, to_uint8, write_png
from imagegen.storage import checkpoint, runs
from imagegen.training import distributed, tensorboard_log
from imagegen.training.config import TrainConfig
from imagegen.training.ema import EMA, STANDING_SEED
from imagegen.training.fid_monitor import FIDMonitor
from imagegen.training.fid_schedule import FIDSchedule
from imagegen.training.health import Alarm, HealthMonitor
from imagegen.training.lr_schedule import LRSchedule, resumed_note, set_lr_scale
from imagegen.training.plan import TrainPlan
from imagegen.training.tensorboard_log import TensorBoardLog


@dataclass(frozen=True)
class TrainResult:
    """What a run did, for the CLI's summary and `--json`."""

    run_dir: Path
    checkpoint: Path | None
    step: int
    total_steps: int
    losses: dict[str, float]
    images_per_s: float
    data_wait: float  # share of step time spent producing batches
    elapsed_s: float
    files: list[str]
    interrupted: bool = False
    resumed_from: int | None = None
    world_size: int = 1  # processes of a torchrun job; images_per_s counts all of them
    alarms: list[Alarm] = field(default_factory=list)  # raised during the run
    already_complete: bool = False  # resumed at its last step: nothing was trained or written
    # the run's FIDs (--fid-every): the best and the last, with their steps; None: none measured
    fid: dict[str, float] | None = None

    @property
    def warnings(self) -> list[str]:
        """Each alarm as one line, with its advice."""
        return [a.text for a in self.alarms]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "step": self.step,
            "total_steps": self.total_steps,
            "fid": self.fid,
            "losses": self.losses,
            "images_per_s": round(self.images_per_s, 2),
            "data_wait": round(self.data_wait, 4),
            "elapsed_s": round(self.elapsed_s, 3),
            "files": self.files,
            "interrupted": self.interrupted,
            "resumed_from": self.resumed_from,
            "world_size": self.world_size,
            "warnings": self.warnings,
            "alarms": [a.as_dict() for a in self.alarms],
            "already_complete": self.already_complete,
        }


class _StopFlag:
    """Ctrl-C or SIGTERM asks the loop to checkpoint and stop; a second one interrupts at once.

    torchrun passes the signal it receives on to its workers once; schedulers send SIGTERM
    before they kill a job.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


@dataclass
class _Session:
    """Everything a run trains with, set up (and restored from its checkpoint) on the device."""

    plan: TrainPlan
    context: distributed.Context
    device: torch.device
    images: data.ImageData
    batches: EpochBatches
    labels: torch.Tensor | None  # (N,) class indices on the device: a conditional run's
    config: ModelConfig  # the model's frozen config dataclass
    model: GenerativeModel
    ema: EMA
    optimizers: dict[str, torch.optim.Optimizer]
    noise: torch.Generator
    precision: str
    precision_why: str  # in words, for the run's first line
    fitting: data.Fitting  # the background and fit the data was decoded with
    total: int
    ckpt: checkpoint.Checkpoint | None
    start_step: int = 0
    images_seen: int = 0
    elapsed_before: float = 0.0
    best_fid: float = math.inf
    started: float = field(default_factory=time.perf_counter)
    prior_fitted_at: int = -1  # the EMA update count the sampling prior was fitted at
    fid: FIDSchedule | None = None  # when it measures its FID (set once the run starts)

    @property
    def train(self) -> TrainConfig:
        return self.plan.train

    @functools.cached_property
    def lr_schedule(self) -> LRSchedule:  # read every step: built once
        return LRSchedule(self.train.lr_decay, self.train.lr_decay_start, self.total)

    @property
    def global_batch(self) -> int:
        return self.train.batch_size * self.context.world_size

    def batch(self, step: int) -> torch.Tensor:
        """The real images of `step` (B, C, R, R) in [0, 1], flipped where drawn, NHWC."""
        real = self.batches.batch(step).float().div_(255)
        if self.train.flip:  # drawn from the saved noise stream: resume stays exact
            flip = torch.rand(real.shape[0], generator=self.noise, device=self.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        return real.contiguous(memory_format=torch.channels_last)

    def batch_labels(self, step: int) -> dict[str, torch.Tensor]:
        """The classes of `step`'s images, as training_step takes them ({}: unconditional)."""
        if self.labels is None:
            return {}
        return {"labels": self.labels.index_select(0, self.batches.indices(step))}


def _setup(plan: TrainPlan, context: distributed.Context, emit: Emit) -> _Session:
    """Load the data, build the model, optimizers and EMA, and restore a checkpoint.

    The first use of a dataset decodes it (then it is cached): `emit` hears "decode" events
    with the images done of the total."""
    spec, train = get_spec(plan.model), plan.train
    device = distributed.local_device(resolve_device(plan.device), context)
    ckpt = checkpoint.read_checkpoint(plan.resume_from) if plan.resume_from else None
    fitting = data.fitting_for(to_dict(train))  # how image files become squares
    with distributed.local_main_first(context):  # one decode per machine fills the cache
        images = data.load_images(
            train.dataset,
            resolution=plan.model_config["resolution"],
            channels=plan.data_channels,  # as the plan loaded them: the decode is cached
            root=plan.data_root,
            emit=emit,
            fitting=fitting,
        )
    batches = EpochBatches(
        images.images.to(device), train.batch_size, train.seed, context.rank, context.world_size
    )
    total = plan.total_steps  # the plan's: --steps, or --epochs of the data's image files
    config = build_dataclass(spec.config_cls, plan.model_config, plan.model)
    labels = _class_labels(images, config, plan, ckpt) if train.conditional else None
    torch.manual_seed(train.seed)  # the same initial weights on every rank
    # channels_last: oneDNN (CPU) and cuDNN (GPU) convolutions are faster in NHWC.
    model = spec.model_cls(config).to(device, memory_format=torch.channels_last).train()
    if train.sync_bn and context.enabled:
        distributed.convert_sync_batchnorm(model.networks(), device)
    # Each rank draws its own latents, posterior noise and flips; rank 0's stream is the
    # single-process one.
    noise_seed = distributed.noise_seed(train.seed, context.rank)
    # A resumed run left to `auto` keeps the precision it was trained at (exact resume, also
    # on a machine where auto would choose otherwise): the checkpoint records it; for older
    # checkpoints, the run's config.json.
    kept = None
    if ckpt and train.precision == "auto":
        kept = ckpt.counters.precision or runs.recorded_precision(ckpt.path)
        kept = kept if kept in ("bf16", "fp32") else None
    precision = kept or resolve_precision(train.precision, device, spec.cpu_bf16)
    session = _Session(
        plan=plan,
        context=context,
        device=device,
        images=images,
        batches=batches,
        labels=None if labels is None else labels.to(device),
        config=config,
        model=model,
        ema=EMA(model.sampling_network(), train.ema_decay),
        optimizers=model.configure_optimizers(train),
        noise=torch.Generator(device).manual_seed(noise_seed),
        precision=precision,
        precision_why=precision_reason(train.precision, device, spec.cpu_bf16, kept),
        fitting=fitting,
        total=total,
        ckpt=ckpt,
    )
    configured = [[g["lr"] for g in opt.param_groups] for opt in session.optimizers.values()]
    if ckpt is not None:
        _restore(session, ckpt, noise_seed)
    # The learning rates follow the config, also on resume (where --lr may have changed);
    # the schedule scales each group's initial lr.
    for opt, lrs in zip(session.optimizers.values(), configured, strict=True):
        for group, lr in zip(opt.param_groups, lrs, strict=True):
            group["initial_lr"] = group["lr"] = lr
    if train.compile:
        model.compile_networks()
    if context.enabled:  # after loading: DDP starts from rank 0's weights, which all ranks have
        model.set_wrappers(distributed.wrap(model.networks(), device))
    return session


def _class_labels(
    images: data.ImageData, config: Any, plan: TrainPlan, ckpt: checkpoint.Checkpoint | None
) -> torch.Tensor:
    """A conditional run's labels (N,); a resumed run's data must have the classes it had."""
    labels = images.labels
    if labels is None:
        raise UserError(f"{plan.dataset} has no classes now: {images.label_problem}")
    had = ckpt.class_names if ckpt is not None else list(labels.classes)
    if list(labels.classes) != had or len(had) != config.num_classes:
        raise UserError(
            f"{plan.dataset} has the classes {', '.join(labels.classes)} now; the run was "
            f"trained on {', '.join(had)}"
        )
    return labels.of


def _restore(session: _Session, ckpt: checkpoint.Checkpoint, noise_seed: int) -> None:
    """Weights, EMA, optimizer moments, noise stream and counters from a checkpoint."""
    rng = checkpoint.restore_training_state(
        ckpt, session.model, session.ema.module, session.optimizers
    )
    rank = session.context.rank
    saved = rng.get("noise" if rank == 0 else f"noise.{rank}")
    if saved is not None and saved.numel() == session.noise.get_state().numel():
        session.noise.set_state(saved)
    else:  # moved between devices, or a rank the run did not have: not exact
        session.noise.manual_seed(noise_seed + ckpt.step)
    counted = ckpt.counters
    session.start_step = ckpt.step
    session.ema.updates = ckpt.step if counted.ema_updates is None else counted.ema_updates
    session.elapsed_before = counted.elapsed_s
    session.images_seen = (
        ckpt.step * session.train.batch_size if counted.images_seen is None else counted.images_seen
    )
    session.best_fid = math.inf if counted.best_fid is None else counted.best_fid
    if session.model.fits_prior:  # the checkpoint's prior was fitted to these weights
        session.prior_fitted_at = session.ema.updates


class _LossMeter:
    """Losses summed on the device between log lines; read (and averaged over the ranks) in
    one host synchronisation per log line, together with the stop flag."""

    def __init__(self, context: distributed.Context, device: torch.device) -> None:
        self.context, self.device = context, device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for k, v in losses.items():
            v = v.detach().float()  # a bf16 sum stops growing at 256: sum in fp32
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def read(self, stop_requested: bool) -> tuple[dict[str, float], bool]:
        """Mean losses since the last read, and whether any rank asked to stop."""
        flag = torch.tensor([float(stop_requested)], device=self.device)
        totals = torch.cat([torch.stack(list(self.sums.values())), flag])
        values = distributed.sum_across(totals, self.context).cpu().tolist()  # one host sync
        stop = values.pop() > 0
        n = self.count * self.context.world_size
        means = {k: v / n for k, v in zip(self.sums, values, strict=True)}
        self.sums, self.count = {}, 0
        return means, stop


def _weights_finite(model: torch.nn.Module, ema: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of the model and its EMA is finite (one sync)."""
    tensors = [t for m in (model, ema) for t in (*m.parameters(), *m.buffers())]
    checks = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


class _Checkpointer:
    """Writes checkpoints (rank 0), keeps the last `keep`, and points latest/best at them.

    Every rank calls `save` at the same steps: the noise states and weight digests of all
    ranks are gathered into rank 0's file. Non-finite weights are never written.
    """

    def __init__(self, session: _Session, emit: Emit) -> None:
        self.s, self.emit = session, emit
        self.folder = runs.checkpoints_dir(session.plan.run_dir)
        self.saved_at = -1
        self.last_good: tuple[int, Path] | None = None
        self.files: list[str] = []
        if session.ckpt is not None and session.plan.resume_from is not None:
            self.last_good = (session.ckpt.step, session.plan.resume_from)

    def save(self, step: int) -> Path:
        s, context = self.s, self.s.context
        path = self.folder / f"{runs.step_name(step)}.safetensors"
        if self.saved_at == step:
            return path
        if not _weights_finite(s.model, s.ema.module):
            raise _diverged(s, self.last_good, step, "the weights are not finite")
        self.saved_at = step
        states = distributed.gather(s.noise.get_state().numpy().tobytes(), context)
        digests: list[str] = []
        if context.enabled:
            digests = distributed.gather(distributed.weights_digest(s.model), context)
            if len(set(digests)) > 1:
                raise UserError(
                    f"rank {context.rank}: the ranks' weights differ at step {step} "
                    f"(SHA-256 {', '.join(d[:12] for d in digests)}); the job is out of sync"
                )
        if not context.is_main:
            return path
        _ready_to_sample(s)
        rng = {
            "noise" if r == 0 else f"noise.{r}": torch.frombuffer(bytearray(b), dtype=torch.uint8)
            for r, b in enumerate(states)
        }
        counters = checkpoint.Counters(
            world_size=context.world_size,
            ema_updates=s.ema.updates,
            images_seen=s.images_seen,
            elapsed_s=s.elapsed_before + time.perf_counter() - s.started,
            best_fid=s.best_fid if math.isfinite(s.best_fid) else None,
            batches_per_epoch=s.batches.batches_per_epoch,
            precision=s.precision,
            total_steps=s.total,
            fid_next=s.fid.next_step if s.fid is not None and s.fid.auto else None,
            rank_weights_sha256=tuple(digests),
        )
        try:
            self._write(path, step, rng, counters)
        except UserError as e:
            kept = (
                f"step {self.last_good[0]} ({self.last_good[1]}) is intact"
                if self.last_good
                else "no earlier checkpoint exists"
            )
            raise UserError(f"{e}; the checkpoint of step {step} was not written, {kept}") from None
        self.last_good = (step, path)
        self.files.append(str(path))
        self.emit(ProgressEvent(Kind.CHECKPOINT, done=step, total=s.total, path=path))
        return path

    def _write(self, path: Path, step: int, rng: dict, counters: checkpoint.Counters) -> None:
        s = self.s
        checkpoint.save_checkpoint(
            path,
            model=s.model,
            model_name=s.plan.model,
            train_config=s.train,
            step=step,
            data_shape=s.images.shape,
            dataset=s.train.dataset,
            ema=s.ema.module,
            optimizers=s.optimizers,
            rng=rng,
            counters=counters,
            classes=_classes(s) if s.labels is not None else None,
        )
        atomic_link_or_copy(path, self.folder / runs.LATEST)
        runs.rotate(s.plan.run_dir, s.train.keep_checkpoints)

    def mark_best(self, path: Path) -> None:
        if self.s.context.is_main:
            atomic_link_or_copy(path, self.folder / runs.BEST)
            self.files.append(str(self.folder / runs.BEST))


def _diverged(s: _Session, last_good: tuple[int, Path] | None, step: int, what: str) -> UserError:
    """The one-line error for a run whose losses or weights stopped being finite."""
    lr = s.train.lr
    if last_good is None:
        advice = f"no checkpoint was written yet: start again with a lower --lr (e.g. {lr / 4:g})"
    else:
        advice = (
            f"the last good checkpoint is step {last_good[0]}: resume it with a lower learning "
            f"rate, e.g. imagegen train {s.plan.model} --resume {last_good[1]} --lr {lr / 4:g}"
        )
    message = f"training diverged at step {step}: {what}; nothing non-finite was saved; {advice}"
    return UserError(message) if s.context.is_main else PeerError(message)


def _describe_compile(model: Any) -> str:
    """Which networks --compile compiled, and why not the others."""
    skipped = model.not_compiled()
    compiled = [name for name in model.networks() if name not in skipped]
    why = "; ".join(
        f"not {name}: {reason}, which torch.compile lacks" for name, reason in skipped.items()
    )
    return f"compiled {', '.join(compiled) or 'nothing'}" + (f" ({why})" if why else "")


def _lr_schedule_moved(s: _Session) -> str:
    """A resumed run's note where its lr schedule moved ('' where not, or a new run)."""
    if s.ckpt is None:
        return ""
    before = LRSchedule.stored(s.ckpt.train_config, s.ckpt.counters.total_steps or s.total)
    return resumed_note(before, s.lr_schedule, s.ckpt.step)


def _describe_start(s: _Session) -> str:
    plan, images, context, ckpt = s.plan, s.images, s.context, s.ckpt
    parts = [
        f"{plan.model} on {plan.dataset}: {images.images.shape[0]} images "
        f"{tuple(images.shape)}, {s.batches.batches_per_epoch} batches/epoch, device {s.device}"
    ]
    if s.train.preset:
        parts.append(f"preset {s.train.preset}")
    if described := s.model.describe():
        parts.append(described)
    moved = _lr_schedule_moved(s)
    if (schedule := s.lr_schedule.describe()) and not moved:
        parts.append(schedule)  # (a moved one is said with the resume)
    if plan.resolution_how:
        parts.append(plan.resolution_how)
    parts.append(f"precision {s.precision_why}")
    if s.train.compile:
        parts.append(_describe_compile(s.model))
    if context.enabled:
        backend = "nccl" if s.device.type == "cuda" else "gloo"
        bn = "synchronised (SyncBatchNorm)" if s.train.sync_bn else "per rank"
        parts.append(
            f"{context.world_size} processes ({backend}) x batch {s.train.batch_size} = "
            f"global batch {s.global_batch}, BatchNorm statistics {bn}"
        )
    elif s.train.sync_bn:
        parts.append("--sync-bn has no effect in a single process")
    if ckpt is not None:
        parts.append(f"resumed from step {ckpt.step}")
        trained_with = ckpt.counters.world_size
        if trained_with != context.world_size:
            parts.append(
                f"it was trained by {trained_with} process(es), now {context.world_size}: it "
                "continues with the new global batch, not bit-exactly"
            )
        if moved:
            parts.append(moved)
    if images.transparent:
        colour = s.fitting.colour
        parts.append(
            f"{images.transparent} of {images.images.shape[0]} images had transparency: "
            f"composited onto {colour} (--background)"
        )
    if s.train.transparent:
        parts.append("RGBA: samples keep an alpha channel (--transparent)")
    if s.train.fit == "pad":
        parts.append("non-square images padded (--fit pad)")
    if images.skipped:
        parts.append(images.skipped_text())
    if s.fid is not None and (fid := s.fid.describe()):
        parts.append(fid)
    if few := _few_images_advice(s):
        parts.append(few)
    if advice := plan.length_advice:
        parts.append(advice)
    if classes := _describe_classes(s):
        parts.append(classes)
    return "; ".join(parts)


PRIOR_SEED = 7  # added to the run's seed: the sampling prior's subset and k-means++ start
# A user's folder of fewer training images than this: the first line suggests --flip.
FEW_IMAGES = 5000


def _few_images_advice(s: _Session) -> str:
    """For a user's small folder or zip without --flip: what mirror images did on small data
    (docs/models.md, Small data), for the user to judge, since not every subject mirrors."""
    n = s.images.images.shape[0]
    if s.train.flip or s.train.dataset in data.NAMED_DATASETS or n >= FEW_IMAGES:
        return ""
    return (
        f"{n} images are few to learn from: if a mirror image is as valid as the original, "
        "--flip doubles them (it lowered the FID on small data: docs/models.md, Small data)"
    )


def _classes(s: _Session) -> dict[str, int]:
    """The data's classes and their training images ({} without classes)."""
    return labelling.class_counts(s.images.labels)


def _describe_classes(s: _Session) -> str:
    """The data's classes on the first line: used, or how to use them."""
    labels = s.images.labels
    if labels is None:
        return ""
    if s.labels is not None:
        said = getattr(s.config, "training_said", lambda: "")()  # the model's own words
        return f"conditional on {labels.summary()}" + (f"; {said}" if said else "")
    return f"{labels.summary()}; not used: --conditional trains a class-conditional model"


def _write_run_folder(s: _Session) -> list[str]:
    """Rank 0: create (or replace) the run folder and write config.json; on resume, drop
    the log and metrics lines written after the checkpoint resumed from."""
    plan, run_dir = s.plan, s.plan.run_dir
    if plan.replace_run_dir:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = plan.as_dict() | {
        "model_config": to_dict(s.config),
        "data_shape": list(s.images.shape),
        "images": int(s.images.images.shape[0]),
        "skipped_images": s.images.skipped,
        "batches_per_epoch": s.batches.batches_per_epoch,
        "total_steps": s.total,
        "device": str(s.device),
        "precision": s.precision,
        "world_size": s.context.world_size,
        "global_batch_size": s.global_batch,
        "classes": _classes(s),
        "imagegen_version": __version__,
    }
    files = [str(runs.write_config(run_dir, resolved))]  # first: it marks an imagegen run
    runs.samples_dir(run_dir).mkdir(exist_ok=True)
    runs.checkpoints_dir(run_dir).mkdir(exist_ok=True)
    for folder in (run_dir, runs.samples_dir(run_dir), runs.checkpoints_dir(run_dir)):
        remove_stray_temp_files(folder)  # a process killed during a write leaves them
    if s.ckpt is not None:
        runs.truncate_records(run_dir, s.start_step)
    else:
        (run_dir / runs.LOG).unlink(missing_ok=True)
    return [*files, str(run_dir / runs.LOG)]


@dataclass
class _Position:
    step: int = 0


def run_training(
    plan: TrainPlan,
    on_event: Emit | None = None,
    context: distributed.Context = distributed.SINGLE,
) -> TrainResult:
    """Train as planned; on Ctrl-C or SIGTERM write a checkpoint and return `interrupted`.

    In a torchrun job every rank calls this inside `distributed.process_group`, with the same
    plan; rank 0 alone writes the run folder and reports events.
    """
    position = _Position()
    try:
        return _train(plan, on_event if context.is_main else None, context, position)
    except Exception as e:
        if context.enabled and distributed.is_communication_error(e):
            raise distributed.lost_contact(e, context, position.step) from None
        raise


def _already_complete(s: _Session) -> TrainResult:
    """A resumed run that is at its last step: nothing is trained, nothing is written."""
    latest = runs.checkpoints_dir(s.plan.run_dir) / runs.LATEST
    return TrainResult(
        run_dir=s.plan.run_dir,
        checkpoint=latest if latest.is_file() else s.plan.resume_from,
        step=s.start_step,
        total_steps=s.total,
        losses={},
        images_per_s=0.0,
        data_wait=0.0,
        elapsed_s=time.perf_counter() - s.started,
        files=[],
        resumed_from=s.start_step,
        world_size=s.context.world_size,
        already_complete=True,
    )


class _Reporter:
    """Losses, throughput and alarms: the log lines (log.jsonl), TensorBoard and events."""

    def __init__(
        self,
        s: _Session,
        emit: Emit,
        log: Any,
        tb: TensorBoardLog | None,
    ) -> None:
        self.s, self.emit, self.log, self.tb = s, emit, log, tb
        self.meter, self.health = _LossMeter(s.context, s.device), HealthMonitor()
        self.alarms: list[Alarm] = []
        self.losses: dict[str, float] = {}
        self.ips = 0.0
        self.window_images, self.window_start = 0, time.perf_counter()
        self.data_time = self.step_time = 0.0

    def step_done(self, losses: dict[str, torch.Tensor], t0: float, t1: float, t2: float) -> None:
        """Account one step: its losses, its data time (t0..t1) and its whole time (t0..t2)."""
        self.meter.add(losses)
        self.window_images += self.s.global_batch
        self.data_time, self.step_time = self.data_time + t1 - t0, self.step_time + t2 - t0

    def progress(self, step: int) -> None:
        self.emit(
            ProgressEvent(
                Kind.STEP, done=step, total=self.s.total, values=self.losses, rate=self.ips
            )
        )

    def warn(self, step: int, alarms: list[Alarm]) -> list[Alarm]:
        for alarm in alarms:
            self.alarms.append(alarm)
            self.emit(ProgressEvent(Kind.WARNING, alarm.text, step, self.s.total))
            if self.tb is not None:
                self.tb.text(step, "warnings", alarm.text)
        return alarms

    def log_line(self, step: int, stop_requested: bool, last_good: Any) -> bool:
        """Read the losses, write a log line, check them; return whether to stop now.

        Non-finite losses stop the run with an error (after the line is written)."""
        s = self.s
        self.losses, stop = self.meter.read(stop_requested)
        now = time.perf_counter()
        self.ips = self.window_images / max(now - self.window_start, 1e-9)
        self.window_images, self.window_start = 0, now
        bad = [f"{k} is {v}" for k, v in self.losses.items() if not math.isfinite(v)]
        if not bad and not _weights_finite(s.model, s.ema.module):
            bad = ["the weights are not finite"]
        new = [] if bad else self.warn(step, self.health.check(step, self.losses))
        record: dict[str, Any] = {
            "step": step,
            "epoch": round(step / s.batches.batches_per_epoch, 4),
            **{k: round(v, 6) for k, v in self.losses.items()},
            "images_per_s": round(self.ips, 2),
            "data_wait": round(self.data_wait, 4),
            "elapsed_s": round(s.elapsed_before + now - s.started, 3),
        }
        if new:
            record["warnings"] = [a.text for a in new]
            record["alarms"] = [a.as_dict() for a in new]
        if self.log is not None:
            jsonl.write_line(self.log, record)
        if self.tb is not None and not bad:
            self.tb.scalars(step, self.losses | {"images_per_s": self.ips})
        if bad:
            raise _diverged(s, last_good, step, ", ".join(bad))
        eta = (s.total - step) / max(self.ips / s.global_batch, 1e-9)
        self.emit(ProgressEvent(Kind.LOG, "", step, s.total, self.losses, self.ips, eta))
        return stop

    @property
    def data_wait(self) -> float:
        return self.data_time / max(self.step_time, 1e-9)


def _ready_to_sample(s: _Session, refit: bool = True) -> torch.nn.Module:
    """Rank 0: the EMA module, with BatchNorm statistics of its own weights where the model
    asks for them, and its sampling prior fitted where the model fits one (with `refit` False,
    for a sample grid, only if it never was: the last fit serves). Without averaging
    (decay 0) the copied statistics are the weights' own, and are kept (re-estimating them
    measured worse: docs/models.md, the DCGAN)."""
    if s.model.standing_statistics and s.train.ema_decay > 0:
        s.ema.standing_statistics(_standing_generate(s.model), s.model.latent_dim, s.device)
    stale = s.prior_fitted_at != s.ema.updates and (refit or s.prior_fitted_at < 0)
    if s.model.fits_prior and stale:
        # from the weights alone, with a seed of its own: resume stays exact
        s.model.fit_prior(s.ema.module, s.images.images, s.labels, s.train.seed + PRIOR_SEED)
        s.prior_fitted_at = s.ema.updates
    return s.ema.module


def _standing_generate(model: GenerativeModel) -> Callable:
    """`generate(z, net)` for the standing statistics: a conditional model's images of classes
    drawn uniformly, from a fixed seed of their own (the training noise is untouched)."""
    if not model.num_classes:
        return model.generate
    g = torch.Generator().manual_seed(STANDING_SEED + 1)

    def generate(z: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
        y = torch.randint(model.num_classes, (z.shape[0],), generator=g).to(z.device)
        return model.generate(z, net, labels=y)

    return generate


def _fixed_samples(s: _Session) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """The sample grids' fixed latents, classes (a conditional run's: one row per class) and
    images per row (None: a square grid)."""
    g = torch.Generator().manual_seed(s.train.seed + 2)
    n, labels, per_row = s.train.num_samples, None, None
    if s.model.num_classes:
        labels, per_row = class_grid(n, s.model.num_classes)
        labels, n = labels.to(s.device), len(labels)
    return torch.randn(n, s.config.latent_dim, generator=g).to(s.device), labels, per_row


def _sample(s: _Session, fixed: tuple, step: int, tb: TensorBoardLog | None) -> Path:
    """Rank 0: the EMA model's grid of the fixed latents, samples/step-NNNNNNN.png."""
    path = runs.samples_dir(s.plan.run_dir) / f"{runs.step_name(step)}.png"
    z, labels, per_row = fixed
    images = s.model.generate(z, _ready_to_sample(s, refit=False), labels=labels)
    grid = make_grid(to_uint8(images.cpu()), per_row)
    write_png(path, grid)
    if tb is not None:
        tb.grid(step, grid)
    return path


def _measure_fid(
    s: _Session,
    monitor: FIDMonitor | None,
    checkpointer: _Checkpointer,
    reporter: _Reporter,
    step: int,
) -> None:
    """Rank 0 measures and records the FID; every rank learns whether to save a new best."""
    fid = monitor.fid(s.model, _ready_to_sample(s)) if monitor is not None else math.inf
    improved = distributed.broadcast(fid < s.best_fid, s.context)
    if monitor is not None:
        record = {"step": step, "fid": round(fid, 4), "fid_n": s.train.fid_n, "best": improved}
        jsonl.append(s.plan.run_dir / runs.METRICS, record | {"protocol": monitor.protocol})
        checkpointer.files.append(str(s.plan.run_dir / runs.METRICS))
        reporter.warn(step, reporter.health.check_fid(step, fid))
        if reporter.tb is not None:
            reporter.tb.scalars(step, {"fid": fid}, prefix="eval")
    if improved:
        s.best_fid = fid
        checkpointer.mark_best(checkpointer.save(step))
    reporter.emit(ProgressEvent(Kind.FID, "", step, s.total, {"fid": fid}, best=improved))


def _train(
    plan: TrainPlan,
    on_event: Emit | None,
    context: distributed.Context,
    position: _Position,
) -> TrainResult:
    emit = on_event or ignore
    s = _setup(plan, context, emit)
    train, total, main = s.train, s.total, context.is_main
    if s.start_step > total:
        raise UserError(
            f"{plan.resume_from} is at step {s.start_step}, past the {total} steps asked for; "
            f"give more than {s.start_step} steps to train on (the run is left as it is)"
        )
    if s.start_step == total:
        return _already_complete(s)
    files = _write_run_folder(s) if main else []
    checkpointer = _Checkpointer(s, emit)
    fixed = _fixed_samples(s)
    s.fid = _fid_schedule(s)
    emit(ProgressEvent(Kind.START, _describe_start(s), s.start_step, total, path=plan.run_dir))
    monitor = _fid_monitor(s) if s.fid.on and main else None
    step = position.step = s.start_step
    interrupted = False
    with _StopFlag() as stop, contextlib.ExitStack() as stack:
        log = stack.enter_context((plan.run_dir / runs.LOG).open("a")) if main else None
        tb = None
        if main and tensorboard_log.wanted(train.tensorboard):
            tb = TensorBoardLog(plan.run_dir, s.start_step)
            stack.callback(tb.close)
        reporter = _Reporter(s, emit, log, tb)
        while step < total:
            t0 = time.perf_counter()
            real = s.batch(step)  # (B, C, R, R) in [0, 1]
            if s.lr_schedule.decays:
                set_lr_scale(s.optimizers, s.lr_schedule.scale(step))
            t1 = time.perf_counter()
            with autocast(s.device, s.precision):
                losses = s.model.training_step(real, s.optimizers, s.noise, **s.batch_labels(step))
            if main:  # only rank 0's moving average is ever saved or sampled
                s.ema.update(s.model.sampling_network())
            reporter.step_done(losses, t0, t1, time.perf_counter())
            step = position.step = step + 1
            s.images_seen += s.global_batch
            # One process stops at the next step; a job at the next log line, where the ranks
            # agree on it (a rank that stopped alone would leave the others waiting).
            stop_now = stop.requested and not context.enabled
            if step % train.log_every == 0 or step == total or stop_now:
                stop_now = reporter.log_line(step, stop.requested, checkpointer.last_good)
            else:
                reporter.progress(step)
            if main and (step % train.sample_every == 0 or step == total):
                files.append(str(_sample(s, fixed, step, tb)))
                emit(ProgressEvent(Kind.SAMPLE, done=step, total=total, path=Path(files[-1])))
            if s.fid.due(step):
                _timed_fid(s, monitor, checkpointer, reporter, step)
            if step % train.checkpoint_every == 0 or step == total or stop_now:
                checkpointer.save(step)
            if stop_now:
                interrupted = True
                break
    return _result(s, step, reporter, [*files, *checkpointer.files], interrupted)


def _fid_schedule(s: _Session) -> FIDSchedule:
    """--fid-every, or, not given, the automatic FIDs of a long run (where the Inception
    weights are installed)."""
    weights = s.train.fid_every is not None
    if not weights:
        try:
            inception.find_weights()
            weights = True
        except UserError:
            pass
    recorded = s.ckpt.counters.fid_next if s.ckpt is not None else None
    return FIDSchedule.plan(
        s.train.fid_every, s.total, s.total * s.global_batch, weights, s.start_step, recorded
    )


def _timed_fid(
    s: _Session,
    monitor: FIDMonitor | None,
    checkpointer: _Checkpointer,
    reporter: _Reporter,
    step: int,
) -> None:
    """An FID, and its cost against the training steps' sets the next automatic one (the
    same on every rank)."""
    start = time.perf_counter()
    _measure_fid(s, monitor, checkpointer, reporter, step)
    fid_s = time.perf_counter() - start
    step_s = reporter.step_time / max(step - s.start_step, 1)
    fid_s, step_s = distributed.broadcast((fid_s, step_s), s.context)
    assert s.fid is not None
    s.fid.measured(step, fid_s, step_s)


def _fid_monitor(s: _Session) -> FIDMonitor:
    t = s.train
    return FIDMonitor(
        t.dataset, s.images, t.fid_n, s.config.latent_dim, t.seed, s.plan.data_root, s.device,
        s.fitting,
        s.images.labels.counts() if s.labels is not None and s.images.labels is not None else None,
    )  # fmt: skip


def _result(
    s: _Session, step: int, reporter: _Reporter, files: list[str], interrupted: bool
) -> TrainResult:
    latest = runs.checkpoints_dir(s.plan.run_dir) / runs.LATEST
    return TrainResult(
        run_dir=s.plan.run_dir,
        checkpoint=latest if latest.is_file() else None,
        step=step,
        total_steps=s.total,
        losses=reporter.losses,
        images_per_s=(step - s.start_step) * s.global_batch / max(reporter.step_time, 1e-9),
        data_wait=reporter.data_wait,
        elapsed_s=time.perf_counter() - s.started,
        files=sorted(f for f in set(files) if Path(f).exists()),  # rotated ones are gone
        interrupted=interrupted,
        resumed_from=s.ckpt.step if s.ckpt is not None else None,
        world_size=s.context.world_size,
        alarms=reporter.alarms,
        fid=fid_summary(s.plan.run_dir),
    )


def fid_summary(run_dir: Path) -> dict[str, float] | None:
    """The best and the last FID of a run's --fid-every measurements (metrics.jsonl), with their
    steps and last/best; None where none was measured."""
    path = run_dir / runs.METRICS
    if not path.is_file():
        return None
    measured = [r for r in jsonl.read(path) if "fid" in r and "fid_n" in r]
    if not measured:
        return None
    best, last = min(measured, key=lambda r: r["fid"]), max(measured, key=lambda r: r["step"])
    return {
        "best": best["fid"],
        "best_step": best["step"],
        "last": last["fid"],
        "last_step": last["step"],
        "last_over_best": round(last["fid"] / best["fid"], 4),
    }
