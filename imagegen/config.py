"""Training options and the strict config plumbing shared by every model.

Configs are frozen dataclasses. Values come, lowest priority first, from the dataclass
defaults, a TOML file, then command-line flags. Unknown keys are errors, never warnings.
"""

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from imagegen.errors import UsageError, UserError


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run that is not the model's architecture or loss."""

    dataset: str = "synthetic"
    batch_size: int = 64
    steps: int | None = None  # total optimisation steps; None: use `epochs`
    epochs: float = 25.0  # used when `steps` is None (pytorch/examples' default)
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.999
    seed: int = 0
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    num_samples: int = 64  # images in the fixed-noise progress grids
    fid_every: int = 0  # steps between FID evaluations of the EMA model; 0: never
    fid_n: int = 2048  # images generated (and reference images) for each FID
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, else fp32
    compile: bool = False  # torch.compile each network (in place: checkpoints keep their keys)
    flip: bool = False  # random horizontal flips, drawn on the device
    sync_bn: bool = False  # torchrun jobs: BatchNorm statistics over all ranks (SyncBatchNorm)

    def __post_init__(self) -> None:
        for name in ("batch_size", "sample_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"steps must be at least 1, got {self.steps}")
        if self.epochs <= 0:
            raise UsageError(f"epochs must be positive, got {self.epochs}")
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UsageError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.keep_checkpoints < 1:
            raise UsageError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}")
        if not 1 <= self.num_samples <= 256:
            raise UsageError(f"num_samples must be in 1..256, got {self.num_samples}")
        if self.fid_every < 0:
            raise UsageError(f"fid_every must be >= 0, got {self.fid_every}")
        if self.fid_n < 2:
            raise UsageError(f"fid_n must be at least 2, got {self.fid_n}")


# Fields that may change when a run is resumed; every other difference is refused.
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "epochs",
        "sample_every",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "fid_every",
        "fid_n",
        "precision",
        "compile",
        "sync_bn",
    }
)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check and convert one value to a dataclass field's annotated type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UsageError:
                continue
        raise UsageError(f"{key}: expected {annotation}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise UsageError(
                f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}"
            )
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UsageError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise UsageError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UsageError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise UsageError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"{key}: expected a string, got {value!r}")
    raise UsageError(f"{key}: unsupported option type {annotation}")


def build_dataclass(cls: type, values: dict[str, Any], what: str) -> Any:
    """Build frozen dataclass `cls` from `values`; unknown keys and bad types are errors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UsageError(
            f"unknown {what} option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
            f"(valid: {', '.join(names)})"
        )
    coerced = {k: _coerce(v, hints[k], f"{what} option {k}") for k, v in values.items()}
    return cls(**coerced)


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain JSON-able dict."""
    return dataclasses.asdict(config)


def to_json(config: Any) -> str:
    """A config dataclass as canonical JSON (sorted keys)."""
    return json.dumps(to_dict(config), sort_keys=True)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two config dicts, as `key: old -> new`."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def parse_assignments(items: list[str]) -> dict[str, str]:
    """Parse repeated `KEY=VALUE` options; keys may use dashes or underscores."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file: training options at top level, model options in [model]."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}
