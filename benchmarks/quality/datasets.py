"""The datasets a recipe trains on, their equal-time twins (KEY-30min), the small-data
subset and the test images of the floor."""

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from imagegen.data import datasets as data
from quality.record import Results
from quality.settings import BenchError, Settings


@dataclass(frozen=True)
class Dataset:
    """A dataset as `imagegen train --dataset` takes it, its test split for the floor."""

    key: str
    train: str
    test: str
    test_split: str
    label: str
    whole: str = ""  # a subset's whole training set: final FIDs are measured against both
    subset: int = 0  # images of the fixed subset of `whole` that `train` is made of
    minutes: int = 0  # > 0: each recipe trains this long at its speed alone on `base`
    base: str = ""  # the dataset key whose runs' speeds set an equal-time run's images


SMALL = 1000  # images in the small-data row's subset (issue: the user's few hundred images)


EQUAL_TIME = 30  # minutes of training of the equal-time rows


def datasets(root: Path, work: Path) -> dict[str, Dataset]:
    """The datasets by key; each full one also as KEY-30min: every recipe trained for
    EQUAL_TIME minutes at its own speed alone on KEY (equal time, where the others are equal
    images)."""
    zips = root / "cifar10-jpeg"
    out = {
        "cifar10-jpeg": Dataset(
            "cifar10-jpeg",
            str(zips / "train.zip"),
            str(zips / "test.zip"),
            "train",  # a zip has no splits: test.zip is read as it is
            "CIFAR-10-JPEG (32 px)",
        ),
        "cifar10-jpeg-1k": Dataset(
            "cifar10-jpeg-1k",
            str(work / f"cifar10-jpeg-{SMALL}"),  # a folder of class subfolders, made once
            str(zips / "test.zip"),
            "train",
            f"CIFAR-10-JPEG, {SMALL:,} images (32 px)",
            whole=str(zips / "train.zip"),
            subset=SMALL,
        ),
        "mnist": Dataset("mnist", "mnist", "mnist", "test", "MNIST (32 px)"),
        "synthetic": Dataset("synthetic", "synthetic", "synthetic", "test", "synthetic blobs"),
    }
    for key, ds in list(out.items()):
        if not ds.subset:
            label = f"{ds.label}, {EQUAL_TIME} min of training"
            timed = replace(ds, key=f"{key}-{EQUAL_TIME}min", label=label, minutes=EQUAL_TIME)
            out[timed.key] = replace(timed, base=key)
    return out


def subset_folder(ds: Dataset, results: Results) -> None:
    """The small-data row's training images: a fixed random subset (seed 0) of the whole
    training zip's images, their JPEG bytes copied unchanged into class subfolders, made once
    (written aside, then renamed into place). The record keeps a digest of the chosen names."""
    import shutil
    import zipfile

    folder = Path(ds.train)
    if not (folder / "done").is_file():
        with zipfile.ZipFile(ds.whole) as zf:
            names = sorted(n for n in zf.namelist() if n.lower().endswith((".jpg", ".png")))
            pick = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))
            chosen = sorted(names[i] for i in pick[: ds.subset].tolist())
            part = folder.with_name(folder.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            for name in chosen:  # train/<class>/NNNN.jpg -> <class>/NNNN.jpg
                out = part / Path(*Path(name).parts[1:])
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(name))
        (part / "names.txt").write_text("".join(n + "\n" for n in chosen))
        (part / "done").write_text("")
        part.rename(folder)
    names = (folder / "names.txt").read_text()
    digest = hashlib.sha256(names.encode()).hexdigest()[:16]
    row = results.get(f"{ds.key}/subset")
    if row is None:
        results.put(f"{ds.key}/subset", {"images": ds.subset, "names_sha256": digest})
    elif row["names_sha256"] != digest:
        raise BenchError(f"{folder} holds another subset than the record measured: move it")


def test_folder(ds: Dataset, settings: Settings) -> Path:
    """The test images as PNG files, for `imagegen eval FOLDER` (the floor), made once."""
    folder = settings.work / f"{ds.key}-test-images"
    if (folder / "done").is_file():
        return folder
    images = data.load_images(ds.test, resolution=32, split=ds.test_split, root=settings.data_root)
    from imagegen.sampling.images import png_bytes

    folder.mkdir(parents=True, exist_ok=True)
    pick = torch.randperm(images.images.shape[0], generator=torch.Generator().manual_seed(0))
    for i in pick[: settings.final_n].tolist():
        (folder / f"{i:05d}.png").write_bytes(png_bytes(images.images[i]))
    (folder / "done").write_text("")
    return folder
