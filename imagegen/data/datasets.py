"""Datasets: decoded once into a uint8 tensor (N, C, H, W) and cached on disk (the decoding
itself: decode.py; the batch order: batches.py).

Sources: the named datasets in torchvision's folder layout under the data root, a folder of
images (searched recursively), a `.zip` of images, and a deterministic `synthetic` set.
"""

import difflib
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagegen.common import locations
from imagegen.common.errors import UsageError, UserError
from imagegen.common.files import atomic_write_bytes, file_sha256
from imagegen.common.options import parse_colour
from imagegen.common.progress import Counter, Emit, Kind
from imagegen.data import labels as labelling
from imagegen.data.decode import (
    IMAGE_EXTENSIONS,
    Decoded,
    Fitting,
    convert_channels,
    decode_files,
    fit_arrays,
    idx_count,
    open_image_file,
    read_cifar_batch,
    read_idx_images,
    read_idx_labels,
    read_member,
    zip_chunks,
)
from imagegen.data.labels import Labels, Layout

CIFAR_BATCH = 10_000  # images in each CIFAR-10 batch file
NAMED_DATASETS = ("mnist", "fashion-mnist", "cifar10", "celeba", "synthetic")
SYNTHETIC_SIZES = {"train": 1024, "test": 256}  # the synthetic set's images per split
_SYNTHETIC_CLASSES = Layout(None, "the synthetic set has no classes")
SPLITS = ("train", "test")
CACHE_VERSION = 2  # 2: class labels kept with the images


@dataclass(frozen=True)
class ImageData:
    """A decoded dataset held in memory."""

    images: torch.Tensor  # (N, C, H, W) uint8
    name: str  # the dataset's name or path, as given
    split: str
    skipped: int = 0  # unreadable files that were left out
    skipped_examples: tuple[str, ...] = ()
    cache_file: str | None = None  # where the decoded tensor is cached, if it is
    transparent: int = 0  # images that had transparency, composited onto the background
    labels: Labels | None = None  # one class per image, where the data has classes
    label_problem: str = ""  # why it has none a conditional run could use

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def skipped_text(self, where: str = "") -> str:
        """The files left out, in words: "skipped 2 unreadable file(s)[ in WHERE]: a, b"."""
        more = ", ..." if self.skipped > len(self.skipped_examples) else ""
        place = f" in {where}" if where else ""
        names = ", ".join(self.skipped_examples)
        return f"skipped {self.skipped} unreadable file(s){place}: {names}{more}"


@dataclass
class _Source:
    """A dataset found on disk but not decoded yet."""

    name: str
    fingerprint: dict  # identifies the source's content for the cache key
    decode: Callable[[int, Counter, Fitting], Decoded]
    cacheable: bool = True
    fitted: bool = True  # image files, whose decoding depends on the Fitting (not IDX, CIFAR)
    files: list[str] = field(default_factory=list)
    # the classes, from file names or label files: read when asked, before any decoding
    find_layout: Callable[[], Layout] = lambda: Layout(None, "it has no classes")
    # the images it holds, before decoding: its image files (unreadable ones are skipped later)
    count: Callable[[], int] = lambda: 0


def load_images(
    dataset: str,
    *,
    resolution: int,
    channels: int | None = None,
    split: str = "train",
    root: str | Path | None = None,
    use_cache: bool = True,
    emit: Emit | None = None,
    fitting: Fitting = Fitting(),
) -> ImageData:
    """Decode `dataset` at `resolution` into memory, from the on-disk cache when it can.

    `dataset` is a name from NAMED_DATASETS, a folder of images or a `.zip` of images.
    `channels` forces 1 or 3 channels; None keeps the dataset's own. `emit` hears "decode"
    events (every 1024 images and at the end) while images are decoded: the first use, not a
    cache hit. `fitting` says how image files become squares: transparency composited onto
    its background, non-square images cropped or padded.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
    if channels not in (None, 1, 3, 4):
        raise UsageError(f"channels must be 1, 3 or 4, got {channels}")
    if dataset == "synthetic":
        images = synthetic_images(resolution, channels or 3, split)
        return ImageData(images, dataset, split, label_problem=_SYNTHETIC_CLASSES.problem)
    source = find_source(dataset, split=split, root=root)
    key = dict(source.fingerprint, resolution=resolution, channels=channels, v=CACHE_VERSION)
    if source.fitted:
        key |= {"background": list(fitting.background), "fit": fitting.fit, "alpha": 1}
        key |= {"keep_alpha": True} if fitting.keep_alpha else {}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    cache_file = locations.decoded_cache_dir() / f"{digest}.safetensors"
    if use_cache and source.cacheable and cache_file.is_file():
        cached = _read_cache(cache_file)
        if cached is not None:
            images, labels, meta = cached
            return ImageData(
                images=images,
                name=dataset,
                split=split,
                skipped=int(meta.get("skipped", 0)),
                skipped_examples=tuple(json.loads(meta.get("skipped_examples", "[]"))),
                cache_file=str(cache_file),
                transparent=int(meta.get("transparent", 0)),
                labels=labels,
                label_problem=meta.get("label_problem", ""),
            )
    decoded = source.decode(
        resolution, Counter(emit, 0, Kind.DECODE, source.name, every=1024), fitting
    )
    arrays, skipped, native_channels = decoded.arrays, decoded.skipped, decoded.channels
    if not arrays:
        detail = f" ({len(skipped)} unreadable, e.g. {', '.join(skipped[:3])})" if skipped else ""
        raise UserError(f"no usable image in {dataset}{detail}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    if native_channels == 1:
        images = images[:, :1].contiguous()
    images = convert_channels(images, channels or native_channels)
    layout = source.find_layout()
    labels = layout.labels
    if labels is not None and decoded.kept is not None:  # the unreadable files' labels go
        labels = labels.kept(decoded.kept)
    if labels is not None and labels.of.shape[0] != images.shape[0]:
        raise UserError(f"{source.name}: {labels.of.shape[0]} labels for {images.shape[0]} images")
    written = None
    if use_cache and source.cacheable:
        written = _write_cache(
            cache_file, images, skipped, key, decoded.transparent, labels, layout.problem
        )
    return ImageData(
        images=images,
        name=dataset,
        split=split,
        skipped=len(skipped),
        skipped_examples=tuple(skipped[:5]),
        cache_file=str(written) if written else None,
        transparent=decoded.transparent,
        labels=labels,
        label_problem=layout.problem,
    )


def fitting_for(options: Mapping[str, Any]) -> Fitting:
    """The Fitting a run's training options (TrainConfig's fields, as a dict) name; runs
    recorded before these options: white, crop, no alpha."""
    return Fitting(
        parse_colour(options.get("background", "white")),
        options.get("fit", "crop"),
        bool(options.get("transparent", False)),
    )


@dataclass(frozen=True)
class Census:
    """What a dataset's files say before any decoding: its description, its classes, and how
    many images it holds (its image files: unreadable ones are skipped when it is decoded)."""

    name: str
    layout: Layout
    images: int


def check_dataset(
    dataset: str, *, split: str = "train", root: str | Path | None = None, download: bool = True
) -> str:
    """Check that `dataset` exists (downloading a named one if allowed) without decoding it."""
    return dataset_census(dataset, split=split, root=root, download=download).name


def dataset_census(
    dataset: str, *, split: str = "train", root: str | Path | None = None, download: bool = True
) -> Census:
    """`dataset` described, its classes and its size, as its files say (before decoding)."""
    if dataset == "synthetic":
        n = SYNTHETIC_SIZES[split]
        return Census("synthetic (built in, deterministic)", _SYNTHETIC_CLASSES, n)
    source = find_source(dataset, split=split, root=root, download=download)
    return Census(source.name, source.find_layout(), source.count())


def native_channels(dataset: str) -> int | None:
    """The channel count of a named dataset; None for folders and zips (known once decoded)."""
    return {"mnist": 1, "fashion-mnist": 1, "cifar10": 3, "celeba": 3, "synthetic": 3}.get(
        dataset.lower()
    )


def synthetic_images(resolution: int, channels: int, split: str = "train") -> torch.Tensor:
    """A deterministic set of soft coloured blobs on a dark background, (N, C, H, W) uint8."""
    n = SYNTHETIC_SIZES[split]
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


def _mnist_like(
    folder_name: str, label: str, tv_name: str, classes: tuple[str, ...]
) -> Callable[[Path, str, bool], _Source]:
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

        def decode(resolution: int, done: Counter, fitting: Fitting) -> Decoded:
            images = read_idx_images(path)  # (N, 28, 28)
            return Decoded(fit_arrays(images, resolution, done), [], 1)

        def find_layout() -> Layout:
            stem = "train-labels-idx1-ubyte" if split == "train" else "t10k-labels-idx1-ubyte"
            found = _first_existing(raw, [stem])
            if found is None:
                return Layout(None, f"its label file {stem} is not in {raw}")
            of = torch.from_numpy(read_idx_labels(found).copy())
            return labelling.named(classes, of, label)

        key = {"idx": _content_key(path)}
        return _Source(
            f"{label} {split} ({path})",
            key,
            decode,
            fitted=False,
            find_layout=find_layout,
            count=lambda: idx_count(path),
        )

    return find


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

    def decode(resolution: int, done: Counter, fitting: Fitting) -> Decoded:
        images = np.concatenate([read_cifar_batch(p)[0] for p in paths])
        return Decoded(fit_arrays(images, resolution, done), [], 3)

    def find_layout() -> Layout:
        of = torch.from_numpy(np.concatenate([read_cifar_batch(p)[1] for p in paths]))
        return labelling.named(labelling.CIFAR10_CLASSES, of, "CIFAR-10")

    key = {"cifar": [_content_key(p) for p in paths]}
    name = f"CIFAR-10 {split} ({folder})"
    count = lambda: CIFAR_BATCH * len(paths)  # noqa: E731
    return _Source(name, key, decode, fitted=False, find_layout=find_layout, count=count)


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

    def decode(resolution: int, done: Counter, fitting: Fitting) -> Decoded:
        decoded = decode_files(files, lambda p: p.open("rb"), resolution, folder, done, fitting)
        decoded.channels = 3
        return decoded

    no_classes = Layout(None, "CelebA's attributes are not classes")
    return _Source(
        f"CelebA {split} ({folder})",
        fingerprint,
        decode,
        find_layout=lambda: no_classes,
        count=lambda: len(files),
    )


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
    fingerprint: dict[str, Any] = {"folder": str(folder.resolve()), "files": _digest(files, folder)}
    names = [p.relative_to(folder).as_posix() for p in files]
    listing = folder / labelling.DATASET_JSON
    if listing.is_file():  # its labels are part of what the cache holds
        fingerprint["dataset_json"] = _content_key(listing)

    def decode(resolution: int, done: Counter, fitting: Fitting) -> Decoded:
        return decode_files(files, open_image_file, resolution, folder, done, fitting)

    def find_layout() -> Layout:
        if listing.is_file():
            return labelling.from_dataset_json(listing.read_bytes(), names, str(listing))
        return labelling.from_paths(names)

    name = f"folder {folder} ({len(files)} files)"
    return _Source(name, fingerprint, decode, find_layout=find_layout, count=lambda: len(files))


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

    def decode(resolution: int, done: Counter, fitting: Fitting) -> Decoded:
        kept: list[int] = []
        out, all_grey, done.total = Decoded([], [], 3, kept=kept), True, len(names)
        with zipfile.ZipFile(path) as zf:
            for chunk in zip_chunks(zf, names):  # bounded memory, whatever the archive holds
                blobs = {n: read_member(zf, n) for n in chunk}
                part = decode_files(
                    chunk, lambda n, b=blobs: io.BytesIO(b[n]), resolution, None, done, fitting
                )
                kept += [len(out.arrays) + len(out.skipped) + i for i in part.kept or []]
                out.arrays += part.arrays
                out.skipped += part.skipped
                out.transparent += part.transparent
                all_grey &= part.channels == 1 or not part.arrays
        out.channels = 1 if (out.arrays and all_grey) else 3
        return out

    def find_layout() -> Layout:
        with zipfile.ZipFile(path) as zf:
            if labelling.DATASET_JSON in zf.namelist():
                text = read_member(zf, labelling.DATASET_JSON)
                return labelling.from_dataset_json(text, names, f"{path}:dataset.json")
        return labelling.from_paths(names)

    name = f"zip {path} ({len(names)} files)"
    key = {"zip": _content_key(path)}
    return _Source(name, key, decode, find_layout=find_layout, count=lambda: len(names))


def _read_cache(path: Path) -> tuple[torch.Tensor, Labels | None, dict] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            images, labels = f.get_tensor("images"), None
            if "classes" in meta:
                classes = tuple(json.loads(meta["classes"]))
                labels = Labels(classes, f.get_tensor("labels"), meta["labels_how"])
            return images, labels, meta
    except (SafetensorError, OSError, KeyError, RuntimeError, ValueError):
        return None  # a damaged cache entry is rebuilt, not an error


def _write_cache(
    path: Path,
    images: torch.Tensor,
    skipped: list[str],
    key: dict,
    transparent: int,
    labels: Labels | None,
    label_problem: str,
) -> Path | None:
    from safetensors.torch import save

    meta = {
        "transparent": str(transparent),
        "skipped": str(len(skipped)),
        "skipped_examples": json.dumps(skipped[:5]),
        "key": json.dumps(key, sort_keys=True),
        "label_problem": label_problem,
    }
    tensors = {"images": images}
    if labels is not None:
        meta |= {"classes": json.dumps(list(labels.classes)), "labels_how": labels.how}
        tensors["labels"] = labels.of.contiguous()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save(tensors, metadata=meta))
    except OSError:
        return None  # caching is an optimisation; a read-only cache folder is not an error
    return path


_NAMED: dict[str, Callable[[Path, str, bool], _Source]] = {
    "mnist": _mnist_like("MNIST", "MNIST", "MNIST", labelling.MNIST_CLASSES),
    "fashion-mnist": _mnist_like(
        "FashionMNIST", "Fashion-MNIST", "FashionMNIST", labelling.FASHION_MNIST_CLASSES
    ),
    "cifar10": _cifar10,
    "celeba": _celeba,
}
