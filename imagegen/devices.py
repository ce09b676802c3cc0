"""Devices and numeric precision: which device a command runs on, and autocast."""

import contextlib

import torch

from imagegen.errors import UsageError, UserError

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; asking for a missing CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r} (valid: auto, cpu, cuda)")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on CUDA (no GradScaler needed) and fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision "bf16"; otherwise nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
