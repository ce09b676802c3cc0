"""Checkpoints: one safetensors file that alone rebuilds a model and resumes its training.

Tensors:   model/<state key>, ema/<state key>, optim/<name>/<param index>/<state key>,
           rng/<name>
Metadata:  format, format_version, imagegen_version, model, config (JSON), train_config
           (JSON), step, data_shape (JSON [C, H, W]), normalisation, dataset, optim (JSON of
           the optimizers' non-tensor state), counters (JSON), and for a conditional model
           classes (JSON {name: training images}, in class-index order).
Nothing is pickled. Files are written atomically.
"""

import json
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imagegen import __version__
from imagegen.common.errors import UserError, brief
from imagegen.common.files import atomic_write_bytes
from imagegen.common.options import build_dataclass, to_json
from imagegen.models.base import GenerativeModel
from imagegen.models.registry import MODELS, get_spec

FORMAT = "imagegen-checkpoint"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024
TRAINING = "training"  # the full training state
SAMPLER = "sampler"  # only the sampling network's (EMA) weights: `convert --weights-only`


@dataclass(frozen=True)
class Counters:
    """What a training checkpoint counts besides its step (JSON in its metadata). None: not
    recorded (older checkpoints, imports); readers fall back as they say."""

    world_size: int = 1  # processes of the job that wrote it
    ema_updates: int | None = None  # None: one per step
    images_seen: int | None = None  # None: step x batch size
    elapsed_s: float = 0.0  # training time so far
    best_fid: float | None = None  # of --fid-every; None: none measured
    batches_per_epoch: int | None = None
    precision: str | None = None  # what a resume left to `auto` keeps
    total_steps: int | None = None  # where a linear lr decay was planned to end
    fid_next: int | None = None  # a long run's next automatic FID (training/fid_schedule.py)
    rank_weights_sha256: tuple[str, ...] = ()  # torchrun jobs: each rank's weight digest

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Counters":
        """Counters from their JSON; unknown keys and wrong types are errors (ValueError)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown counters {', '.join(unknown)}")
        digests = tuple(values.get("rank_weights_sha256", ()))
        counters = cls(**{**values, "rank_weights_sha256": digests})
        integers = (
            "world_size", "ema_updates", "images_seen", "batches_per_epoch", "total_steps",
            "fid_next",
        )  # fmt: skip
        for name in integers:
            value = getattr(counters, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"counter {name} is not an integer: {value!r}")
        for name in ("elapsed_s", "best_fid"):
            value = getattr(counters, name)
            if value is not None and not isinstance(value, int | float):
                raise ValueError(f"counter {name} is not a number: {value!r}")
        return counters

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able counters, without those not recorded."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != ()}


@dataclass
class Checkpoint:
    """A validated checkpoint read from disk."""

    path: Path
    model_name: str
    config: Any  # the model's frozen config dataclass
    train_config: dict[str, Any]
    step: int
    data_shape: tuple[int, int, int]
    dataset: str
    counters: Counters
    tensors: dict[str, torch.Tensor]
    optim_meta: dict[str, Any]
    contents: str = TRAINING  # TRAINING: everything to resume; SAMPLER: the sampling network
    classes: dict[str, int] | None = None  # a conditional model's classes: {name: images}

    @property
    def class_names(self) -> list[str]:
        """A conditional model's class names by index ([] when unconditional); indices as
        names where the metadata does not name them all."""
        k = int(getattr(self.config, "num_classes", 0))
        names = list(self.classes or {})
        return names if len(names) == k else [str(i) for i in range(k)]

    @property
    def has_ema(self) -> bool:
        return any(k.startswith("ema/") for k in self.tensors)

    @property
    def is_sampler(self) -> bool:
        return self.contents == SAMPLER


def save_checkpoint(
    path: Path,
    *,
    model: GenerativeModel,
    model_name: str,
    train_config: Any,
    step: int,
    data_shape: tuple[int, int, int],
    dataset: str,
    ema: nn.Module | None = None,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    counters: Counters | None = None,
    classes: dict[str, int] | None = None,
) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename); `classes`: a
    conditional model's {name: training images}."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model/{key}"] = value.detach().cpu().contiguous()
    if ema is not None:
        for key, value in ema.state_dict().items():
            tensors[f"ema/{key}"] = value.detach().cpu().contiguous()
    optim_meta: dict[str, Any] = {}
    for name, opt in (optimizers or {}).items():
        sd = opt.state_dict()
        scalars: dict[str, Any] = {}
        for idx, state in sd["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{name}/{idx}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}/{key}"] = value
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    for name, state in (rng or {}).items():
        tensors[f"rng/{name}"] = state.detach().cpu().contiguous()
    metadata = _metadata(
        model, model_name, to_json(train_config), step, data_shape, dataset, classes
    )
    metadata["optim"] = json.dumps(optim_meta)
    metadata["counters"] = json.dumps((counters or Counters()).as_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _metadata(
    model: GenerativeModel,
    model_name: str,
    train_config_json: str,
    step: int,
    data_shape: tuple[int, int, int],
    dataset: str,
    classes: dict[str, int] | None = None,
) -> dict[str, str]:
    """The metadata every checkpoint has (the module docstring lists them)."""
    named = {"classes": json.dumps(classes)} if classes else {}
    return named | {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "imagegen_version": __version__,
        "model": model_name,
        "config": to_json(model.config),
        "train_config": train_config_json,
        "step": str(step),
        "data_shape": json.dumps(list(data_shape)),
        "normalisation": getattr(model, "normalisation", ""),
        "dataset": dataset,
    }


def read_header(path: Path) -> dict[str, Any]:
    """Parse and check a safetensors header without loading tensors; raise on bad files."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n > size - 8:
            raise UserError(f"{path} is not a safetensors file (or its header is truncated)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{path} is not a safetensors file (bad header)") from None
    if not isinstance(header, dict) or not all(
        _valid_entry(v) for k, v in header.items() if k != "__metadata__"
    ):
        raise UserError(f"{path} is not a safetensors file (bad header)")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise UserError(f"{path} is not a safetensors file (bad metadata)")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        raise UserError(f"{path} is truncated ({size} of {8 + n + end} bytes)")
    return header


def _json_dict(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _valid_entry(entry: object) -> bool:
    """A tensor's header entry: a dtype name, a shape of sizes, offsets start <= end."""
    if not isinstance(entry, dict):
        return False
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    return (
        isinstance(entry.get("dtype"), str)
        and isinstance(shape, list)
        and all(isinstance(d, int) and d >= 0 for d in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    )


def read_checkpoint(
    path: Path, expect_model: str | None = None, load_tensors: bool = True
) -> Checkpoint:
    """Read and validate an imagegen checkpoint; every problem is one clear UserError.

    Without `load_tensors` only the header is read (metadata, for planning): `tensors` is empty.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    header = read_header(path)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is a safetensors file but not an imagegen checkpoint")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise UserError(f"{path} has an unreadable format version") from None
    if version > FORMAT_VERSION or version < 1:
        raise UserError(
            f"{path} has checkpoint format version {version}; this imagegen "
            f"({__version__}) reads version {FORMAT_VERSION}"
        )
    model_name = meta.get("model", "")
    if expect_model is not None and model_name != expect_model:
        raise UserError(f"{path} holds a {model_name} model, not {expect_model}")
    if model_name not in MODELS:
        raise UserError(
            f"{path} holds an unknown model {model_name!r} (known: {', '.join(MODELS)})"
        )
    spec = get_spec(model_name)
    try:
        values = _json_dict(meta["config"])
        train_config = _json_dict(meta.get("train_config", "{}"))
        step = int(meta["step"])
        c, h, w = (int(v) for v in json.loads(meta["data_shape"]))
        optim_meta = _json_dict(meta.get("optim", "{}"))
        counters = Counters.from_dict(_json_dict(meta.get("counters", "{}")))
        classes = {str(k): int(v) for k, v in _json_dict(meta.get("classes", "{}")).items()}
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{path} has damaged metadata ({brief(e)})") from None
    try:
        config = build_dataclass(spec.config_cls, values, model_name)
    except UserError as e:
        raise UserError(f"{path} has a config this imagegen cannot build: {e}") from None
    try:
        tensors = load_file(str(path)) if load_tensors else {}
    except (SafetensorError, OSError, RuntimeError) as e:
        raise UserError(f"{path} is damaged: {e}") from None
    contents = meta.get("contents", TRAINING)
    if contents not in (TRAINING, SAMPLER):
        raise UserError(f"{path} has unknown contents {contents!r}")
    return Checkpoint(
        contents=contents,
        path=path,
        model_name=model_name,
        config=config,
        train_config=train_config,
        step=step,
        data_shape=(int(c), int(h), int(w)),
        dataset=meta.get("dataset", ""),
        counters=counters,
        tensors=tensors,
        optim_meta=optim_meta,
        classes=classes or None,
    )


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"{path}: {what} weights do not match its config ({first})") from None


def build_model(ckpt: Checkpoint, use_ema: bool = True) -> GenerativeModel:
    """Rebuild the checkpoint's model on the CPU; with `use_ema` its EMA weights sample."""
    spec = get_spec(ckpt.model_name)
    model = spec.model_cls(ckpt.config)
    if ckpt.is_sampler:  # the sampling network alone; the other networks stay as built
        _load_into(model.sampling_network(), _prefixed(ckpt.tensors, "ema/"), "EMA", ckpt.path)
        return model.eval()
    _load_into(model, _prefixed(ckpt.tensors, "model/"), "model", ckpt.path)
    if use_ema and ckpt.has_ema:
        _load_into(model.sampling_network(), _prefixed(ckpt.tensors, "ema/"), "EMA", ckpt.path)
    return model.eval()


def restore_training_state(
    ckpt: Checkpoint,
    model: GenerativeModel,
    ema: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, torch.Tensor]:
    """Load weights, EMA and optimizer state for resuming; return the saved RNG states."""
    if ckpt.is_sampler:
        raise UserError(
            f"{ckpt.path} holds the sampling network alone (convert --weights-only): it samples "
            "and evaluates, but cannot resume training"
        )
    _load_into(model, _prefixed(ckpt.tensors, "model/"), "model", ckpt.path)
    if not ckpt.has_ema:
        raise UserError(f"{ckpt.path} has no EMA weights; it cannot resume training")
    _load_into(ema, _prefixed(ckpt.tensors, "ema/"), "EMA", ckpt.path)
    for name, opt in optimizers.items():
        if name not in ckpt.optim_meta:
            raise UserError(f"{ckpt.path} has no optimizer state for {name}; cannot resume")
        meta = ckpt.optim_meta[name]
        state: dict[int, dict[str, Any]] = {}
        for key, value in _prefixed(ckpt.tensors, f"optim/{name}/").items():
            idx, _, field = key.partition("/")
            state.setdefault(int(idx), {})[field] = value
        for key, value in meta["scalars"].items():
            idx, _, field = key.partition("/")
            state.setdefault(int(idx), {})[field] = value
        groups = meta["param_groups"]
        current = opt.state_dict()["param_groups"]
        if len(groups) != len(current):
            raise UserError(f"{ckpt.path}: optimizer {name} does not match the model")
        for saved, now in zip(groups, current, strict=True):
            for device_flag in ("fused", "foreach", "capturable"):  # follow this device
                if device_flag in now:
                    saved[device_flag] = now[device_flag]
            saved["betas"] = tuple(saved["betas"]) if "betas" in saved else None
            if saved["betas"] is None:
                del saved["betas"]
        try:
            opt.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as e:
            raise UserError(
                f"{ckpt.path}: optimizer state for {name} does not load ({e})"
            ) from None
        _state_in_param_layout(opt)
    return _prefixed(ckpt.tensors, "rng/")


def _state_in_param_layout(opt: torch.optim.Optimizer) -> None:
    """Give each per-element state tensor (Adam's moments) its parameter's memory layout, as
    a fresh run's state has (zeros_like the parameter): they are saved contiguous, the
    parameters of a channels_last model are not, and a fused optimizer's kernel walks a
    parameter and its state in memory order, so a resumed run would pair them differently."""
    for group in opt.param_groups:
        for param in group["params"]:
            for key, value in opt.state.get(param, {}).items():
                same_shape = torch.is_tensor(value) and value.shape == param.shape
                if same_shape and value.stride() != param.stride():
                    opt.state[param][key] = torch.empty_like(param).copy_(value)


def save_sampler(path: Path, ckpt: Checkpoint, model: GenerativeModel) -> None:
    """Write the sampling network of `model` (built from `ckpt`) alone, with the config and
    step: a few MB that sample, eval and convert accept, instead of the training state."""
    from safetensors.torch import save

    tensors = {
        f"ema/{key}": value.detach().cpu().contiguous()
        for key, value in model.sampling_network().state_dict().items()
    }
    train_config = json.dumps(ckpt.train_config, sort_keys=True)
    metadata = _metadata(
        model,
        ckpt.model_name,
        train_config,
        ckpt.step,
        ckpt.data_shape,
        ckpt.dataset,
        ckpt.classes,
    )
    metadata["contents"] = SAMPLER
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
