"""The sizes of a folder's or zip's images, read from their headers (nothing is decoded): what
eval compares a folder at, when no size is given."""

import hashlib
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imagegen.common import locations
from imagegen.common.errors import UserError
from imagegen.common.files import atomic_write_bytes
from imagegen.data.datasets import find_source
from imagegen.data.decode import IMAGE_EXTENSIONS

# The named datasets' training sizes: their own (MNIST's 28 px rounded up), and CelebA's
# aligned 178x218 faces at the size DCGANs are conventionally trained on.
NAMED_RESOLUTIONS = {"mnist": 32, "fashion-mnist": 32, "cifar10": 32, "celeba": 64}


def training_resolution(dataset: str, supported: tuple[int, ...]) -> tuple[int | None, str]:
    """The size a run trains at when --resolution is not given, and why: a named dataset's own;
    a folder's or zip's most common shorter side, rounded (in octaves) to a `supported` size;
    None for the synthetic set (the model's default)."""
    if dataset in NAMED_RESOLUTIONS:
        size = NAMED_RESOLUTIONS[dataset]
        return size, f"resolution {size} (the data's own; --resolution to change it)"
    if dataset == "synthetic":
        return None, ""
    counts = image_sizes(dataset)
    if not counts:
        return None, ""
    (w, h), n = max(counts.items(), key=lambda kv: kv[1])
    side = min(w, h)
    size = min(supported, key=lambda r: (abs(math.log2(r / side)), -r))
    return size, (
        f"resolution {size} (the data's most common size, {w}x{h} in {n} of "
        f"{sum(counts.values())} images, rounded to a supported one; --resolution to change it)"
    )


def image_sizes(dataset: str) -> dict[tuple[int, int], int]:
    """How many images of a folder or zip have each (width, height), read from their headers
    (nothing is decoded). Unreadable files are left out. Cached by the files' fingerprint."""
    source = find_source(dataset, split="train", root=None, download=False)
    key = hashlib.sha256(json.dumps(source.fingerprint, sort_keys=True).encode()).hexdigest()
    cache = locations.decoded_cache_dir() / f"sizes-{key[:32]}.json"
    if cache.is_file():
        try:
            return {tuple(k): v for k, v in json.loads(cache.read_text())}
        except (ValueError, TypeError):
            pass
    counts: dict[tuple[int, int], int] = {}
    path = Path(dataset).expanduser()
    if path.is_dir():
        items = [
            (p, p.open) for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        for item, opener in items:
            _count_size(counts, lambda item=item, opener=opener: opener("rb"))
    else:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.endswith("/"):
                    _count_size(counts, lambda name=name: zf.open(name))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, json.dumps([[list(k), v] for k, v in counts.items()]).encode())
    except OSError:
        pass
    return counts


def _count_size(counts: dict[tuple[int, int], int], opener: Callable) -> None:
    try:
        with opener() as f, Image.open(f) as im:
            counts[im.size] = counts.get(im.size, 0) + 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        pass


def native_resolution(dataset: str) -> tuple[int, str]:
    """The size a folder or zip is evaluated at, and how it was chosen: its images' own size
    when all are square and of one size; otherwise the most common shorter side, said so."""
    counts = image_sizes(dataset)
    if not counts:
        raise UserError(f"no readable image in {dataset}")
    (w, h), n = max(counts.items(), key=lambda kv: kv[1])
    if len(counts) == 1 and w == h:
        return w, f"native {w}x{h}"
    side = min(w, h)
    total = sum(counts.values())
    return side, (
        f"{len(counts)} image size(s), e.g. {w}x{h} ({n} of {total}): resized on the shorter "
        f"side to {side} and centre-cropped to {side}x{side} first"
    )
