"""Write a named dataset's training images as a user's folder of class subfolders, PNG files
`OUT/<class>/NNNNN.png`: the input of `make demo-classes` (README, "Your own images, with
classes"), so the conditional example runs on a folder from a fresh clone.

    python docs/class_folder.py fashion-mnist checkpoints/fashion-folder --per-class 600
"""

import argparse
from pathlib import Path

import torch

from imagegen.common import locations
from imagegen.data import datasets as data
from imagegen.sampling.images import png_bytes


def write_folder(dataset: str, out: Path, per_class: int, root: Path | None) -> int:
    """The first `per_class` images of each class, at the data's own size; returns the count."""
    images = data.load_images(dataset, resolution=28 if "mnist" in dataset else 32, root=root)
    if images.labels is None:
        raise SystemExit(f"{dataset} has no classes: {images.label_problem}")
    written = 0
    for k, name in enumerate(images.labels.classes):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        picked = torch.nonzero(images.labels.of == k).flatten()[:per_class]
        for i, index in enumerate(picked.tolist()):
            (folder / f"{i:05d}.png").write_bytes(png_bytes(images.images[index]))
        written += len(picked)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="mnist, fashion-mnist or cifar10")
    parser.add_argument("out", type=Path, help="the folder to write (it must not exist)")
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--data-root", type=Path, default=locations.data_root())
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: remove it or name another folder")
    n = write_folder(args.dataset, args.out, args.per_class, args.data_root)
    print(f"{n} images of {args.dataset} in class subfolders under {args.out}")


if __name__ == "__main__":
    main()
