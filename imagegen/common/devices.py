"""Devices and numeric precision: which device a command runs on, and autocast."""

import contextlib
from pathlib import Path

import torch

from imagegen.common.errors import UsageError, UserError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; asking for a missing CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r} (valid: auto, cpu, cuda)")
    return torch.device(name)


_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_native_bf16() -> str | None:
    """The CPU's native bf16 instruction set (amx_bf16, avx512_bf16), or None (also where
    /proc/cpuinfo cannot tell, as outside Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return next((f for f in _BF16_FLAGS if f in flags), None)


def resolve_precision(precision: str, device: torch.device, cpu_bf16: bool = False) -> str:
    """`auto` is bf16 autocast on CUDA (no GradScaler needed); on a CPU, bf16 where the CPU
    has native bf16 units and the model's `cpu_bf16` holds (the quality benchmark measured
    the same FID in bf16 as in fp32 for it), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if cpu_bf16 and cpu_native_bf16() else "fp32"


def precision_reason(
    asked: str, device: torch.device, cpu_bf16: bool = False, kept: str | None = None
) -> str:
    """In words, why a run trains at the precision it does: `bf16 (auto: ...)`. `kept`: the
    precision a resumed run keeps from its checkpoint."""
    if kept is not None:
        return f"{kept} (kept from the checkpoint)"
    chosen = resolve_precision(asked, device, cpu_bf16)
    if asked != "auto":
        return f"{chosen} (asked for)"
    if device.type == "cuda":
        return f"{chosen} (auto: bf16 autocast on CUDA)"
    native = cpu_native_bf16()
    if chosen == "bf16":
        return f"bf16 (auto: this CPU has {native})"
    why = f"this CPU has {native}, but this model is not measured in bf16" if native else None
    return f"fp32 (auto: {why or 'no bf16 units'})"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision "bf16"; otherwise nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
