"""Training options and the strict config plumbing shared by every model.

Configs are frozen dataclasses. Values come, lowest priority first, from the dataclass
defaults, a TOML file, then command-line flags. Unknown keys are errors, never warnings.
"""

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from imagegen.errors import UsageError, UserError


def option(
    default: Any,
    help: str,
    *,
    resumable: bool = False,
    flag: str | None = None,
    short: str | None = None,
    shown: str | None = None,
) -> Any:
    """A training option, declared once: its default, its help, whether a resumed run may
    change it, and (where it is not `--field-name`) its flag. The `train` command's flags, their
    help and defaults, the resume check and docs/cli.md's option table are derived from these.
    `shown` replaces the default in help texts where the value alone would not say it."""
    meta = {"help": help, "resumable": resumable, "flag": flag, "short": short, "shown": shown}
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of an option declared with `option`: its own, else --field-name."""
    return f.metadata["flag"] or f"--{f.name.replace('_', '-')}"


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run that is not the model's architecture or loss."""

    dataset: str = option(
        "synthetic",
        "mnist, fashion-mnist, cifar10, celeba, synthetic, a folder of images or a .zip.",
        short="-d",
        shown="required, unless --resume",
    )
    batch_size: int = option(64, "Images per step (per process under torchrun).")
    steps: int | None = option(
        None, "Optimisation steps to train in total.", resumable=True, shown="--epochs"
    )
    epochs: float = option(25.0, "Epochs, when --steps is not given.", resumable=True)
    lr: float = option(2e-4, "Adam learning rate of every network.", resumable=True)
    lr_d: float | None = option(
        None, "The discriminator's learning rate (GANs).", resumable=True, shown="--lr"
    )
    lr_decay: Literal["none", "linear"] = option("none", "none, or linear (to 0 at the last step).")
    beta1: float = option(0.5, "Adam beta1.")
    beta2: float = option(0.999, "Adam beta2.")
    ema_decay: float = option(
        0.999, "Decay of the sampling network's moving average; 0: sample the raw weights."
    )
    seed: int = option(0, "Random seed: the same seed on the same machine, the same weights.")
    sample_every: int = option(500, "Steps between sample grids.", resumable=True)
    checkpoint_every: int = option(1000, "Steps between checkpoints.", resumable=True)
    keep_checkpoints: int = option(
        3, "Step checkpoints to keep (besides latest and best).", resumable=True, flag="--keep"
    )
    log_every: int = option(50, "Steps between log lines.", resumable=True)
    num_samples: int = option(64, "Images in the fixed-noise sample grids (1 to 256).")
    fid_every: int = option(
        0,
        "Steps between FIDs of the EMA model against the training data; keeps "
        "checkpoints/best; 0: never.",
        resumable=True,
    )
    fid_n: int = option(2048, "Images for each --fid-every FID.", resumable=True)
    precision: Literal["auto", "bf16", "fp32"] = option(
        "auto",
        "auto, bf16 or fp32; auto: bf16 on CUDA, and on CPUs with bf16 units for the models "
        "measured in bf16, else fp32; a resumed run left to auto keeps its own.",
        resumable=True,
    )
    compile: bool = option(
        False,
        "torch.compile each network, in place (checkpoints keep their keys).",
        resumable=True,
    )
    flip: bool = option(False, "Random horizontal flips of the data, drawn on the device.")
    background: str = option(
        "white",
        "Colour under transparent pixels (RGBA, grey+alpha, palette transparency), the same "
        "for every image, and the border of --fit pad: white, black or #rrggbb.",
    )
    transparent: bool = option(
        False,
        "Train on RGBA (4 channels): samples are PNGs with their own alpha; eval and FIDs "
        "composite them onto --background.",
    )
    conditional: bool = option(
        False,
        "Class-conditional model of the data's classes: class subfolders, a dataset.json "
        "(stylegan2-ada's), or mnist, fashion-mnist and cifar10's labels. A DCGAN's "
        "conditioning ramps in over its run (docs/models.md).",
    )
    fit: Literal["crop", "pad"] = option(
        "crop",
        "How a non-square image becomes square: crop its centre, or pad it whole on the "
        "background.",
    )
    sync_bn: bool = option(
        False,
        "torchrun jobs on CUDA: BatchNorm statistics over all ranks (SyncBatchNorm).",
        resumable=True,
        shown="per rank",
    )
    preset: str = option(
        "", "Recipe to start from; flags override it.", shown="the model's default preset"
    )
    tensorboard: bool | None = option(
        None,
        "Event files in RUN/tensorboard.",
        resumable=True,
        shown="on when tensorboard is installed",
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "sample_every", "checkpoint_every", "log_every"):
            check_range(self, name, low=1)
        if self.steps is not None:
            check_range(self, "steps", low=1)
        check_range(self, "epochs", low=0.0, low_open=True)
        check_range(self, "lr", low=0.0, low_open=True)
        if self.lr_d is not None:
            check_range(self, "lr_d", low=0.0, low_open=True)
        check_range(self, "beta1", low=0.0, high=1.0, high_open=True)
        check_range(self, "beta2", low=0.0, high=1.0, high_open=True)
        check_range(self, "ema_decay", low=0.0, high=1.0, high_open=True)
        check_range(self, "keep_checkpoints", low=1)
        check_range(self, "num_samples", low=1, high=256)
        check_range(self, "fid_every", low=0)
        check_range(self, "fid_n", low=2)
        parse_colour(self.background)


COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0)}  # the background's names


def parse_colour(text: str) -> tuple[int, int, int]:
    """`white`, `black` or `#rrggbb` as (r, g, b); anything else is a usage error."""
    value = text.strip().lower()
    if value in COLOURS:
        return COLOURS[value]
    digits = value.removeprefix("#")
    if value.startswith("#") and len(digits) == 6:
        try:
            return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
        except ValueError:
            pass
    raise UsageError(f"background must be white, black or #rrggbb, got {text!r}")


def check_range(
    config: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Refuse a field that is not finite or lies outside [low, high] (open ends: `*_open`).

    The error names the option and its valid range: `lr must be in (0, inf), got nan`.
    """
    value = getattr(config, name)
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        raise UsageError(f"{name} must be in {left}{lo}, {hi}{right}, got {value!r}")


# Fields that may change when a run is resumed (declared `resumable`); every other difference
# is refused. A new learning rate (after a diverged run, say) ends bit-exactness from that step
# on, by request.
RESUMABLE_CHANGES = frozenset(f.name for f in fields(TrainConfig) if f.metadata["resumable"])


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
    built = cls(**coerced)  # __post_init__ checks ranges and names them
    for key, value in coerced.items():  # a backstop for fields no __post_init__ checks
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{what} option {key} must be a finite number, got {value!r}")
    return built


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
    if path.is_dir():
        raise UserError(f"--config {path} is a folder; give a TOML file")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}
