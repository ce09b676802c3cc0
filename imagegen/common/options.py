"""The strict config plumbing shared by every config: options declared once, checked values.

Configs are frozen dataclasses. Values come, lowest priority first, from the dataclass
defaults, a TOML file, then command-line flags. Unknown keys are errors, never warnings.
"""

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import field, fields
from pathlib import Path
from typing import Any

from imagegen.common.errors import UsageError, UserError


def option(
    default: Any,
    help: str,
    *,
    resumable: bool = False,
    flag: str | None = None,
    short: str | None = None,
    shown: str | None = None,
    valid: str | None = None,
) -> Any:
    """A command's option, declared once: its default, its help, whether a resumed run may
    change it, (where it is not `--field-name`) its flag and the interval its values lie in
    (`valid`, as check_range writes it: "[1, inf)"; checked by check_options). The commands'
    flags, their help and defaults, the resume check and docs/cli.md's option tables are derived
    from these. `shown` replaces the default in help texts where the value alone would not say
    it."""
    if valid is not None:
        _interval(valid)  # a malformed interval fails at import, not when a user meets it
    meta = {
        "help": help, "resumable": resumable, "flag": flag, "short": short, "shown": shown,
        "valid": valid,
    }  # fmt: skip
    return field(default=default, metadata=meta)


def check_options(request: object) -> None:
    """Refuse an option of `request` (a dataclass of `option`s) that lies outside its declared
    interval; the error names the flag: `--n must be in [1, 100000], got 0`. None (not given,
    or off) is always valid."""
    for f in fields(request):  # type: ignore[arg-type]
        valid = f.metadata.get("valid")
        if valid is not None and getattr(request, f.name) is not None:
            check_range(request, f.name, valid, label=flag_of(f))


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of an option declared with `option`: its own, else --field-name."""
    return f.metadata["flag"] or f"--{f.name.replace('_', '-')}"


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


def check_range(config: object, name: str, valid: str, label: str | None = None) -> None:
    """Refuse a field that is not finite or lies outside the interval `valid`, written as in
    mathematics: "[0, 1)", "(0, inf)", "[1, 256]". The error names the option (`label`, else the
    field) and the interval: `lr must be in (0, inf), got nan`."""
    value = getattr(config, name)
    low, high, low_open, high_open = _interval(valid)
    ok = math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        raise UsageError(f"{label or name} must be in {valid}, got {value!r}")


def _interval(text: str) -> tuple[float, float, bool, bool]:
    """ "[a, b)" as (a, b, a open, b open); "inf" and "-inf" stand for no bound."""
    inside = text[1:-1].split(",")
    if len(text) < 5 or text[0] not in "[(" or text[-1] not in ")]" or len(inside) != 2:
        raise ValueError(f"not an interval: {text!r}")
    low, high = (float(part) for part in inside)
    return low, high, text[0] == "(" or low == -math.inf, text[-1] == ")" or high == math.inf


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
    """A config dataclass (or a dict of its fields) as a plain JSON-able dict."""
    return dict(config) if isinstance(config, dict) else dataclasses.asdict(config)


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
