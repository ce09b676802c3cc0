"""Image decoding: files (PNG, JPEG, WebP, BMP; MNIST's IDX; CIFAR-10's batches) to uint8
arrays of one square size, with limits that keep hostile files from hurting (decompression
bombs, oversized files, pickles that run code): an unreadable file is skipped, never fatal.
"""

import gzip
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imagegen.common.errors import UsageError, UserError
from imagegen.common.options import COLOURS
from imagegen.common.progress import Counter

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_PIXELS = 2**26  # 67 Mpixels: larger images are decompression bombs here, never decoded
MAX_FILE_BYTES = 64 * 2**20  # an image file (or zip member) larger than this is skipped
MAX_IDX_BYTES = 2**31  # an IDX file claiming more pixels than this is refused
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}
WHITE = COLOURS["white"]


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Bring (N, C, H, W) uint8 images to 1, 3 or 4 channels (ITU-R 601 luma for RGB -> gray;
    opaque alpha for RGBA)."""
    have = images.shape[1]
    if have == channels:
        return images
    if channels == 4 and have in (1, 3):
        rgb = images.expand(-1, 3, -1, -1) if have == 1 else images
        opaque = torch.full_like(rgb[:, :1], 255)
        return torch.cat([rgb, opaque], dim=1)
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        gray = (images.float() * weights).sum(1, keepdim=True)
        return gray.round_().clamp_(0, 255).to(torch.uint8)
    raise UsageError(f"cannot convert {have}-channel images to {channels} channels")


@dataclass(frozen=True)
class Fitting:
    """How an image file becomes a square RGB array of the training size."""

    background: tuple[int, int, int] = WHITE  # under transparent pixels; pad's border
    fit: str = "crop"  # a non-square image: "crop" its centre, or "pad" it whole
    keep_alpha: bool = False  # RGBA arrays (--transparent): nothing composited, pad clear

    @property
    def colour(self) -> str:
        """The background in words: white, black or #rrggbb."""
        names = {rgb: name for name, rgb in COLOURS.items()}
        return names.get(self.background, "#{:02x}{:02x}{:02x}".format(*self.background))


@dataclass
class Decoded:
    """What decoding a source gave."""

    arrays: list[np.ndarray]  # (H, W, 3) uint8 each
    skipped: list[str]  # the unreadable files
    channels: int  # 1 when every image was grey, else 3
    transparent: int = 0  # images that had transparency, composited onto the background
    kept: list[int] | None = None  # the items decoded, by index (None: every one)


def composite(images: torch.Tensor, background: tuple[int, int, int]) -> torch.Tensor:
    """RGBA uint8 images (N, 4, H, W) over `background`: RGB uint8 (N, 3, H, W)."""
    rgb, alpha = images[:, :3].float(), images[:, 3:].float() / 255
    under = torch.tensor(background, dtype=torch.float32).view(1, 3, 1, 1)
    return (rgb * alpha + under * (1 - alpha)).round_().clamp_(0, 255).to(torch.uint8)


def has_transparency(image: Image.Image) -> bool:
    """Whether the image has an alpha channel or a transparent palette index or colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """The image's transparent pixels composited onto `background`: an RGB image."""
    rgba = image.convert("RGBA")  # palette transparency too, without Pillow's warning
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def fit_image(image: Image.Image, resolution: int, fitting: Fitting = Fitting()) -> np.ndarray:
    """An (H, W, 3) uint8 square of `resolution` ((H, W, 4) with `keep_alpha`): transparency
    composited onto the background;
    crop: the shorter side resized to `resolution` and the centre cut; pad: the longer side
    resized to it and the whole image centred on the background."""
    if fitting.keep_alpha:
        image = image.convert("RGBA")
    elif has_transparency(image):
        image = flatten(image, fitting.background)
    else:
        image = image.convert("RGB")
    w, h = image.size
    if fitting.fit == "pad":
        scale = resolution / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        fill = (0, 0, 0, 0) if fitting.keep_alpha else fitting.background
        canvas = Image.new(image.mode, (resolution, resolution), fill)
        canvas.paste(image, ((resolution - nw) // 2, (resolution - nh) // 2))
        return np.asarray(canvas, dtype=np.uint8)
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    return np.asarray(image, dtype=np.uint8)


def read_idx_labels(path: Path) -> np.ndarray:
    """Read an IDX label file (MNIST's, optionally gzipped) as (N,) int64."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic, n = struct.unpack(">II", f.read(8))
            if magic != 0x00000801:
                raise UserError(f"{path} is not an IDX label file (magic {magic:#010x})")
            data = f.read(min(n, MAX_IDX_BYTES))
    except (OSError, struct.error, EOFError, zlib.error) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < n:
        raise UserError(f"{path} is truncated: expected {n} labels")
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64)


def idx_count(path: Path) -> int:
    """The number of images an IDX image file's header declares (optionally gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic, n = struct.unpack(">II", f.read(8))
    except (OSError, struct.error, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if magic != 0x00000803:
        raise UserError(f"{path} is not an IDX image file (magic {magic:#010x})")
    return n


def read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX image file (MNIST's format, optionally gzipped) as (N, H, W) uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(16)
            magic, n, rows, cols = struct.unpack(">IIII", head)
            if magic != 0x00000803:
                raise UserError(f"{path} is not an IDX image file (magic {magic:#010x})")
            size = n * rows * cols
            if size > MAX_IDX_BYTES:  # read no more than the header says, and never a bomb
                raise UserError(
                    f"{path} claims {n} images of {rows}x{cols} ({size:,} bytes); refused"
                )
            data = f.read(size)
    except (OSError, struct.error, EOFError, zlib.error) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < size:
        raise UserError(f"{path} is truncated: expected {n} images of {rows}x{cols}")
    return np.frombuffer(data, dtype=np.uint8, count=size).reshape(n, rows, cols)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batch files while refusing anything but plain data and numpy arrays."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch file, without running code: images (N, 32, 32, 3) uint8
    and their labels (N,) int64."""
    try:
        with path.open("rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = batch.get(b"data", batch.get("data"))
        arr = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch.get(b"labels", batch.get("labels")), dtype=np.int64)
        if labels.shape != (arr.shape[0],):
            raise ValueError(f"{labels.size} labels for {arr.shape[0]} images")
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, AttributeError, TypeError) as e:
        raise UserError(f"cannot read CIFAR-10 batch {path}: {e}") from None
    return arr.transpose(0, 2, 3, 1), labels


def open_image_file(path: Path) -> BinaryIO:
    """Open an image file for decoding; one larger than MAX_FILE_BYTES counts as unreadable."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise OSError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return path.open("rb")


def zip_chunks(zf: zipfile.ZipFile, names: list[str]) -> Iterator[list[str]]:
    """Members in chunks of at most 256 MB declared, so a chunk's bytes fit in memory."""
    chunk: list[str] = []
    size = 0
    for name in names:
        declared = min(zf.getinfo(name).file_size, MAX_FILE_BYTES)
        if chunk and size + declared > 256 * 2**20:
            yield chunk
            chunk, size = [], 0
        chunk.append(name)
        size += declared
    if chunk:
        yield chunk


def read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, or b"" (unreadable) when it is damaged or larger than an image file
    can reasonably be: no more than MAX_FILE_BYTES are ever decompressed (zip bombs)."""
    try:
        with zf.open(name) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, zlib.error):
        return b""
    return b"" if len(data) > MAX_FILE_BYTES else data


def _decode_one(
    opener: Callable, item: object, resolution: int, fitting: Fitting
) -> tuple[np.ndarray, bool, bool] | None:
    """One file as (array, grey, had transparency); None when it is unreadable."""
    try:
        with opener(item) as f, Image.open(f) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:  # a decompression bomb: never decoded
                return None
            im.draft("RGB", (resolution, resolution))  # JPEG: decode at reduced size, faster
            alpha = has_transparency(im)
            grey_fill = len(set(fitting.background)) == 1  # composited or padded: still grey
            padded = fitting.fit == "pad" and im.size[0] != im.size[1]
            grey = im.mode in _GRAY_MODES and (grey_fill or not (alpha or padded))
            grey &= not fitting.keep_alpha
            return fit_image(im, resolution, fitting), grey, alpha
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def decode_files(
    items: list,
    opener: Callable,
    resolution: int,
    base: Path | None,
    done: Counter,
    fitting: Fitting,
) -> Decoded:
    """Decode image files in threads (PIL releases the GIL); skip unreadable ones. `done`
    counts them (its total: these items, unless the caller has set it)."""
    done.total = done.total or len(items)
    workers = min(8, os.cpu_count() or 1)
    results = []
    with ThreadPoolExecutor(workers) as pool:
        for result in pool.map(lambda it: _decode_one(opener, it, resolution, fitting), items):
            results.append(result)
            done.add(1)
    kept: list[int] = []
    out, all_grey = Decoded([], [], 3, kept=kept), True
    for i, (item, result) in enumerate(zip(items, results, strict=True)):
        if result is None:
            out.skipped.append(str(item.relative_to(base)) if base else str(item))
            continue
        kept.append(i)
        out.arrays.append(result[0])
        all_grey &= result[1]
        out.transparent += result[2]
    out.channels = 4 if fitting.keep_alpha else 1 if (out.arrays and all_grey) else 3
    return out


def fit_arrays(images: np.ndarray, resolution: int, done: Counter) -> list[np.ndarray]:
    """Fit (N, H, W[, 3]) uint8 arrays to `resolution`; returns (H, W, 3) arrays."""
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] == (resolution, resolution):
        return list(images)
    out = []
    for a in images:
        out.append(fit_image(Image.fromarray(a), resolution))
        done.total = len(images)
        done.add(1)
    return out
