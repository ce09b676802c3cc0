"""Turning image tensors into PNG files: quantisation, grids, atomic writes."""

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from imagegen.common.errors import UsageError
from imagegen.common.files import atomic_write_bytes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8, rounded as torchvision's save_image does."""
    return images.detach().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile uint8 images (N, C, H, W) into one (C, H', W') image, `nrow` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = min(nrow, n)
    rows = math.ceil(n / nrow)
    grid = torch.zeros(
        c, rows * (h + padding) + padding, ncol * (w + padding) + padding, dtype=images.dtype
    )
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def png_bytes(image: torch.Tensor, fmt: str = "PNG") -> bytes:
    """Encode one uint8 image (C, H, W) with C in {1, 3, 4} as PNG bytes (deterministic), or in
    another PIL format (JPEG at quality 95, lossless WebP)."""
    arr = image.cpu().permute(1, 2, 0).numpy()
    arr = arr[..., 0] if arr.shape[2] == 1 else arr
    if fmt == "JPEG" and arr.ndim == 3 and arr.shape[2] == 4:
        raise UsageError("JPEG has no alpha channel: write RGBA samples as .png or .webp")
    buf = io.BytesIO()
    by_format: dict[str, dict[str, Any]] = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}
    options = by_format.get(fmt, {})
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt, **options)
    return buf.getvalue()


def write_png(path: Path, image: torch.Tensor, fmt: str = "PNG") -> None:
    """Write one uint8 image (C, H, W) as a PNG (or `fmt`), atomically."""
    atomic_write_bytes(Path(path), png_bytes(image, fmt))


FRAME_MS = 120  # an animation's frame time


def animation_bytes(frames: list[torch.Tensor], fmt: str) -> bytes:
    """uint8 frames (C, H, W) as an endlessly looping animation, there and back again: a GIF
    (RGB or grey; no alpha) or a lossless animated WebP (alpha kept)."""
    if fmt == "GIF" and frames[0].shape[0] == 4:
        raise UsageError("GIF has no alpha channel: write an RGBA animation as .webp")
    images = []
    for frame in [*frames, *frames[-2:0:-1]]:  # forwards, then back without repeating the ends
        arr = frame.cpu().permute(1, 2, 0).numpy()
        images.append(
            Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))
        )
    options = {"WEBP": {"lossless": True}}.get(fmt, {})
    buf = io.BytesIO()
    images[0].save(
        buf,
        format=fmt,
        save_all=True,
        append_images=images[1:],
        duration=FRAME_MS,
        loop=0,
        **options,
    )
    return buf.getvalue()
