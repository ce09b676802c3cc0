"""Datasets: decode once into a uint8 tensor (N, C, H, W), cached on disk, batches from memory.

Sources: the named datasets in torchvision's folder layout under the data root, a folder of
images (searched recursively), a `.zip` of images, and a deterministic `synthetic` set.
"""

import contextvars
import difflib
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imagegen import locations
from imagegen.errors import UsageError, UserError
from imagegen.files import atomic_write_bytes, file_sha256

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NAMED_DATASETS = ("mnist", "fashion-mnist", "cifar10", "celeba", "synthetic")
SPLITS = ("train", "test")
CACHE_VERSION = 1
# Set by load_images while it decodes: where progress goes (see _report).
_PROGRESS: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "imagegen_decode_progress", default=None
)
MAX_PIXELS = 2**26  # 67 Mpixels: larger images are decompression bombs here, never decoded
MAX_FILE_BYTES = 64 * 2**20  # an image file (or zip member) larger than this is skipped
MAX_IDX_BYTES = 2**31  # an IDX file claiming more pixels than this is refused
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


@dataclass(frozen=True)
class ImageData:
    """A decoded dataset held in memory."""

    images: torch.Tensor  # (N, C, H, W) uint8
    name: str  # the dataset's name or path, as given
    split: str
    skipped: int = 0  # unreadable files that were left out
    skipped_examples: tuple[str, ...] = ()
    cache_file: str | None = None  # where the decoded tensor is cached, if it is

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


@dataclass
class _Source:
    """A dataset found on disk but not decoded yet."""

    name: str
    fingerprint: dict  # identifies the source's content for the cache key
    decode: Callable[[int], tuple[list[np.ndarray], list[str], int]]
    cacheable: bool = True
    files: list[str] = field(default_factory=list)


def load_images(
    dataset: str,
    *,
    resolution: int,
    channels: int | None = None,
    split: str = "train",
    root: str | Path | None = None,
    use_cache: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImageData:
    """Decode `dataset` at `resolution` into memory, from the on-disk cache when it can.

    `dataset` is a name from NAMED_DATASETS, a folder of images or a `.zip` of images.
    `channels` forces 1 or 3 channels; None keeps the dataset's own. `on_progress(done,
    total)` is called while images are decoded (the first use; not for a cache hit).
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
    if channels not in (None, 1, 3):
        raise UsageError(f"channels must be 1 or 3, got {channels}")
    if dataset == "synthetic":
        images = synthetic_images(resolution, channels or 3, split)
        return ImageData(images=images, name=dataset, split=split)
    source = find_source(dataset, split=split, root=root)
    key = dict(source.fingerprint, resolution=resolution, channels=channels, v=CACHE_VERSION)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    cache_file = locations.decoded_cache_dir() / f"{digest}.safetensors"
    if use_cache and source.cacheable and cache_file.is_file():
        cached = _read_cache(cache_file)
        if cached is not None:
            images, meta = cached
            return ImageData(
                images=images,
                name=dataset,
                split=split,
                skipped=int(meta.get("skipped", 0)),
                skipped_examples=tuple(json.loads(meta.get("skipped_examples", "[]"))),
                cache_file=str(cache_file),
            )
    token = _PROGRESS.set(on_progress)
    try:
        arrays, skipped, native_channels = source.decode(resolution)
    finally:
        _PROGRESS.reset(token)
    if not arrays:
        detail = f" ({len(skipped)} unreadable, e.g. {', '.join(skipped[:3])})" if skipped else ""
        raise UserError(f"no usable image in {dataset}{detail}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    if native_channels == 1:
        images = images[:, :1].contiguous()
    images = convert_channels(images, channels or native_channels)
    written = None
    if use_cache and source.cacheable:
        written = _write_cache(cache_file, images, skipped, key)
    return ImageData(
        images=images,
        name=dataset,
        split=split,
        skipped=len(skipped),
        skipped_examples=tuple(skipped[:5]),
        cache_file=str(written) if written else None,
    )


def check_dataset(
    dataset: str, *, split: str = "train", root: str | Path | None = None, download: bool = True
) -> str:
    """Check that `dataset` exists (downloading a named one if allowed) without decoding it."""
    if dataset == "synthetic":
        return "synthetic (built in, deterministic)"
    return find_source(dataset, split=split, root=root, download=download).name


def native_channels(dataset: str) -> int | None:
    """The channel count of a named dataset; None for folders and zips (known once decoded)."""
    return {"mnist": 1, "fashion-mnist": 1, "cifar10": 3, "celeba": 3, "synthetic": 3}.get(
        dataset.lower()
    )


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Bring (N, C, H, W) uint8 images to 1 or 3 channels (ITU-R 601 luma for RGB -> gray)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        gray = (images.float() * weights).sum(1, keepdim=True)
        return gray.round_().clamp_(0, 255).to(torch.uint8)
    raise UsageError(f"cannot convert {have}-channel images to {channels} channels")


def fit_image(image: Image.Image, resolution: int) -> np.ndarray:
    """Resize the shorter side to `resolution`, centre-crop to a square; (H, W, 3) uint8."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    return np.asarray(image, dtype=np.uint8)


def synthetic_images(resolution: int, channels: int, split: str = "train") -> torch.Tensor:
    """A deterministic set of soft coloured blobs on a dark background, (N, C, H, W) uint8."""
    n = 1024 if split == "train" else 256
    g = torch.Generator().manual_seed(1234 if split == "train" else 4321)
    coords = torch.linspace(0, 1, resolution)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (H, W)
    centres = torch.rand(n, 2, 2, generator=g) * 0.6 + 0.2  # two blobs per image
    radii = torch.rand(n, 2, generator=g) * 0.15 + 0.08
    colours = torch.rand(n, 2, 3, generator=g)
    images = torch.zeros(n, 3, resolution, resolution)
    for b in range(2):
        d2 = (xx - centres[:, b, 0, None, None]) ** 2 + (yy - centres[:, b, 1, None, None]) ** 2
        mask = torch.exp(-d2 / (2 * radii[:, b, None, None] ** 2))  # (N, H, W)
        images += mask[:, None] * colours[:, b, :, None, None]
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return convert_channels(images, channels)


# --- finding sources -------------------------------------------------------------------


def find_source(
    dataset: str, *, split: str, root: str | Path | None, download: bool = True
) -> _Source:
    """Locate `dataset` (name, folder or zip) on disk, downloading a named one if allowed."""
    name = dataset.lower()
    if name in _NAMED:
        return _NAMED[name](locations.data_root(root), split, download)
    path = Path(dataset).expanduser()
    if path.is_dir():
        return _folder_source(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        return _zip_source(path)
    if path.exists():
        raise UserError(f"dataset {dataset} is neither a folder of images nor a .zip")
    close = difflib.get_close_matches(name, NAMED_DATASETS, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UsageError(
        f"unknown dataset {dataset!r}: not a folder or .zip, and not one of "
        f"{', '.join(NAMED_DATASETS)}.{hint}"
    )


def _content_key(path: Path) -> list:
    """A dataset file's identity for the caches: its size and content digest, so that a
    copied, moved or re-provisioned file keeps its decoded images and reference features."""
    return [path.stat().st_size, file_sha256(path)]


def _first_existing(folder: Path, names: list[str]) -> Path | None:
    for n in names:
        for candidate in (folder / n, folder / f"{n}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _try_download(what: str, make: Callable[[], object], needed: str, download: bool) -> None:
    """Download through torchvision when allowed; otherwise explain exactly what is needed."""
    if not download:
        raise UserError(f"{what} not found: {needed}")
    if not locations.downloads_allowed():
        raise UserError(f"{what} not found and downloads are off ($IMAGEGEN_OFFLINE): {needed}")
    try:
        make()
    except Exception as e:  # any failure here means offline or blocked
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(
            f"{what} not found and could not be downloaded ({reason}): {needed}"
        ) from None


def _mnist_like(folder_name: str, label: str, tv_name: str) -> Callable[[Path, str, bool], _Source]:
    def find(root: Path, split: str, download: bool) -> _Source:
        raw = root / folder_name / "raw"
        stem = "train-images-idx3-ubyte" if split == "train" else "t10k-images-idx3-ubyte"
        path = _first_existing(raw, [stem])
        if path is None:
            import torchvision.datasets as tvd

            _try_download(
                label,
                lambda: getattr(tvd, tv_name)(str(root), train=split == "train", download=True),
                f"put {stem} (or {stem}.gz) in {raw}",
                download,
            )
            path = _first_existing(raw, [stem])
            if path is None:
                raise UserError(f"{label}: download did not produce {raw / stem}")

        def decode(resolution: int) -> tuple[list[np.ndarray], list[str], int]:
            images = read_idx_images(path)  # (N, 28, 28)
            return _fit_arrays(images, resolution), [], 1

        return _Source(f"{label} {split} ({path})", {"idx": _content_key(path)}, decode)

    return find


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


def read_cifar_batch(path: Path) -> np.ndarray:
    """Read one CIFAR-10 python batch file as (N, 32, 32, 3) uint8, without running code."""
    try:
        with path.open("rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = batch.get(b"data", batch.get("data"))
        arr = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, AttributeError) as e:
        raise UserError(f"cannot read CIFAR-10 batch {path}: {e}") from None
    return arr.transpose(0, 2, 3, 1)


def _cifar10(root: Path, split: str, download: bool) -> _Source:
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if not all((folder / n).is_file() for n in names):
        import torchvision.datasets as tvd

        _try_download(
            "CIFAR-10",
            lambda: tvd.CIFAR10(str(root), train=split == "train", download=True),
            f"put {', '.join(names)} in {folder} (from cifar-10-python.tar.gz)",
            download,
        )
    paths = [folder / n for n in names]

    def decode(resolution: int) -> tuple[list[np.ndarray], list[str], int]:
        images = np.concatenate([read_cifar_batch(p) for p in paths])
        return _fit_arrays(images, resolution), [], 3

    return _Source(
        f"CIFAR-10 {split} ({folder})", {"cifar": [_content_key(p) for p in paths]}, decode
    )


def _celeba(root: Path, split: str, download: bool) -> _Source:
    folder = root / "celeba" / "img_align_celeba"
    if not folder.is_dir():
        import torchvision.datasets as tvd

        _try_download(
            "CelebA",
            lambda: tvd.CelebA(str(root), split="all", download=True),
            f"unpack img_align_celeba.zip into {folder.parent} (and list_eval_partition.txt)",
            download,
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    partition = root / "celeba" / "list_eval_partition.txt"
    if partition.is_file():
        wanted = "0" if split == "train" else "2"
        keep = set()
        for line in partition.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == wanted:
                keep.add(parts[0])
        files = [p for p in files if p.name in keep]
    elif split == "test":
        raise UserError(f"CelebA test split needs {partition}")
    fingerprint = {"celeba": str(folder.resolve()), "split": split, "files": _digest(files, folder)}

    def decode(resolution: int) -> tuple[list[np.ndarray], list[str], int]:
        arrays, skipped, _ = _decode_files(files, lambda p: p.open("rb"), resolution, folder)
        return arrays, skipped, 3

    return _Source(f"CelebA {split} ({folder})", fingerprint, decode)


def _digest(files: list[Path], base: Path) -> str:
    """Identifies a list of files by their names, sizes and modification times."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(base)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _folder_source(folder: Path) -> _Source:
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in folder {folder}")
    fingerprint = {"folder": str(folder.resolve()), "files": _digest(files, folder)}

    def decode(resolution: int) -> tuple[list[np.ndarray], list[str], int]:
        return _decode_files(files, _open_image_file, resolution, folder)

    return _Source(f"folder {folder} ({len(files)} files)", fingerprint, decode)


def _zip_source(path: Path) -> _Source:
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(
                n
                for n in zf.namelist()
                if n.lower().endswith(IMAGE_EXTENSIONS) and not n.endswith("/")
            )
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"cannot read zip file {path}: {e}") from None
    if not names:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in zip {path}")

    def decode(resolution: int) -> tuple[list[np.ndarray], list[str], int]:
        arrays: list[np.ndarray] = []
        skipped: list[str] = []
        all_gray = True
        with zipfile.ZipFile(path) as zf:
            for chunk in _zip_chunks(zf, names):  # bounded memory, whatever the archive holds
                blobs = {n: _read_member(zf, n) for n in chunk}
                a, sk, channels = _decode_files(
                    chunk, lambda n, blobs=blobs: io.BytesIO(blobs[n]), resolution, None
                )
                arrays += a
                skipped += sk
                all_gray &= channels == 1 or not a
        return arrays, skipped, 1 if (arrays and all_gray) else 3

    return _Source(f"zip {path} ({len(names)} files)", {"zip": _content_key(path)}, decode)


def _open_image_file(path: Path) -> BinaryIO:
    """Open an image file for decoding; one larger than MAX_FILE_BYTES counts as unreadable."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise OSError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return path.open("rb")


def _zip_chunks(zf: zipfile.ZipFile, names: list[str]) -> Iterator[list[str]]:
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


def _read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, or b"" (unreadable) when it is damaged or larger than an image file
    can reasonably be: no more than MAX_FILE_BYTES are ever decompressed (zip bombs)."""
    try:
        with zf.open(name) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, zlib.error):
        return b""
    return b"" if len(data) > MAX_FILE_BYTES else data


def _decode_one(opener: Callable, item: object, resolution: int) -> tuple[np.ndarray, bool] | None:
    try:
        with opener(item) as f, Image.open(f) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:  # a decompression bomb: never decoded
                return None
            im.draft("RGB", (resolution, resolution))  # JPEG: decode at reduced size, faster
            gray = im.mode in _GRAY_MODES
            return fit_image(im, resolution), gray
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _report(done: int, total: int) -> None:
    """Tell the caller of load_images how far decoding is (every 1024 images and at the end)."""
    callback = _PROGRESS.get()
    if callback is not None and (done % 1024 == 0 or done == total):
        callback(done, total)


def _decode_files(
    items: list, opener: Callable, resolution: int, base: Path | None
) -> tuple[list[np.ndarray], list[str], int]:
    """Decode image files in threads (PIL releases the GIL); skip unreadable ones."""
    workers = min(8, os.cpu_count() or 1)
    results = []
    with ThreadPoolExecutor(workers) as pool:
        for result in pool.map(lambda it: _decode_one(opener, it, resolution), items):
            results.append(result)
            _report(len(results), len(items))
    arrays, skipped, all_gray = [], [], True
    for item, result in zip(items, results, strict=True):
        if result is None:
            skipped.append(str(item.relative_to(base)) if base else str(item))
            continue
        arrays.append(result[0])
        all_gray &= result[1]
    return arrays, skipped, 1 if (arrays and all_gray) else 3


def _fit_arrays(images: np.ndarray, resolution: int) -> list[np.ndarray]:
    """Fit (N, H, W[, 3]) uint8 arrays to `resolution`; returns (H, W, 3) arrays."""
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] == (resolution, resolution):
        return list(images)
    out = []
    for a in images:
        out.append(fit_image(Image.fromarray(a), resolution))
        _report(len(out), len(images))
    return out


def _read_cache(path: Path) -> tuple[torch.Tensor, dict] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("images"), f.metadata() or {}
    except (SafetensorError, OSError, KeyError, RuntimeError):
        return None  # a damaged cache entry is rebuilt, not an error


def _write_cache(path: Path, images: torch.Tensor, skipped: list[str], key: dict) -> Path | None:
    from safetensors.torch import save

    meta = {
        "skipped": str(len(skipped)),
        "skipped_examples": json.dumps(skipped[:5]),
        "key": json.dumps(key, sort_keys=True),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"images": images}, metadata=meta))
    except OSError:
        return None  # caching is an optimisation; a read-only cache folder is not an error
    return path


_NAMED: dict[str, Callable[[Path, str, bool], _Source]] = {
    "mnist": _mnist_like("MNIST", "MNIST", "MNIST"),
    "fashion-mnist": _mnist_like("FashionMNIST", "Fashion-MNIST", "FashionMNIST"),
    "cifar10": _cifar10,
    "celeba": _celeba,
}


class EpochBatches:
    """Batches drawn from an in-memory dataset in a per-epoch random order.

    The order depends only on (seed, epoch), so any step's batch can be recomputed: resume
    needs no loader state. In a job of `world_size` processes each step consumes one global
    batch of batch_size * world_size images, and rank r takes the r-th slice of it: the ranks
    see disjoint shards of every epoch. The last incomplete global batch of an epoch is dropped.
    """

    def __init__(
        self, images: torch.Tensor, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        n, global_batch = images.shape[0], batch_size * world_size
        if n < global_batch:
            what = f"the batch size {batch_size}"
            if world_size > 1:
                what = f"the global batch {batch_size} x {world_size} processes"
            raise UsageError(f"the dataset has {n} images, fewer than {what}")
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batches_per_epoch = n // global_batch
        self._epoch = -1
        self._order: torch.Tensor | None = None

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of image indices for `epoch` (the same on every rank)."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.images.shape[0], generator=g).to(self.images.device)
            self._epoch = epoch
        assert self._order is not None
        return self._order

    def batch(self, step: int) -> torch.Tensor:
        """This rank's uint8 batch (B, C, H, W) at optimisation step `step` (0-based)."""
        epoch, i = divmod(step, self.batches_per_epoch)
        start = (i * self.world_size + self.rank) * self.batch_size
        idx = self.order(epoch)[start : start + self.batch_size]
        return self.images.index_select(0, idx)


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
