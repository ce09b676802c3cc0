"""Class labels of a dataset, read from what the user already has: class subfolders (sorted
names), a `dataset.json` in stylegan2-ada's format (`{"labels": [["path", int], ...]}`), or a
named dataset's own label files. Found from the file names alone, before any image is decoded.
"""

import json
from dataclasses import dataclass

import torch

from imagegen.common.errors import UsageError, UserError

DATASET_JSON = "dataset.json"
MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class Labels:
    """One class index per image (or per file, before decoding), and the classes' names."""

    classes: tuple[str, ...]
    of: torch.Tensor  # (N,) int64, indices into `classes`
    how: str  # where they came from, in words: "class subfolders", "dataset.json", ...

    def counts(self) -> list[int]:
        """Images per class, in the order of `classes`."""
        return torch.bincount(self.of, minlength=len(self.classes)).tolist()

    def kept(self, keep: list[int]) -> "Labels":
        """The labels of the files at `keep` (those that decoded), in that order."""
        return Labels(self.classes, self.of[torch.tensor(keep, dtype=torch.long)], self.how)

    def summary(self) -> str:
        """ "10 classes (class subfolders): cat 500, dog 500, ..." (the first 6 named)."""
        shown = [f"{c} {n}" for c, n in zip(self.classes, self.counts(), strict=True)][:6]
        more = ", ..." if len(self.classes) > 6 else ""
        return f"{len(self.classes)} classes ({self.how}): {', '.join(shown)}{more}"


@dataclass(frozen=True)
class Layout:
    """What a dataset's files say about classes: labels, or why there are none to use."""

    labels: Labels | None
    problem: str = ""  # why a conditional run cannot use this data ("" when labelled)


def _examples(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def from_paths(names: list[str]) -> Layout:
    """Labels from class subfolders: `names` are the image files' relative paths ("/"
    separated). Folders every file shares (a zip's `train/`) are stepped into first; then each
    file's first folder is its class. Images loose beside class folders make it ambiguous."""
    parts = [n.split("/") for n in names]
    depth = 0
    while all(len(p) > depth + 1 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1  # a folder that holds everything: not a class
    loose = [n for n, p in zip(names, parts, strict=True) if len(p) == depth + 1]
    if len(loose) == len(names):
        return Layout(None, "its images are not in class subfolders (and it has no dataset.json)")
    if loose:
        folders = len({p[depth] for p in parts if len(p) > depth + 1})
        return Layout(
            None,
            f"{len(loose)} image(s) lie loose beside {folders} class subfolder(s), so their "
            f"class is unknown: {_examples(loose)} (move them into a class subfolder)",
        )
    classes = sorted({p[depth] for p in parts})
    index = {c: i for i, c in enumerate(classes)}
    of = torch.tensor([index[p[depth]] for p in parts], dtype=torch.long)
    return Layout(Labels(tuple(classes), of, "class subfolders"))


def from_dataset_json(text: bytes, names: list[str], where: str) -> Layout:
    """Labels from a stylegan2-ada `dataset.json`: {"labels": [["path", int], ...]} (null:
    no labels). Paths are relative to the dataset's top; every image must have one."""
    try:
        listed = json.loads(text).get("labels")
        if listed is None:
            return Layout(None, f'{where} says it has no labels ("labels": null)')
        pairs = [(str(path).replace("\\", "/"), label) for path, label in listed]
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(
            f'{where} is not a dataset.json of the form {{"labels": [["path", int], ...]}} '
            f"({type(e).__name__})"
        ) from None
    table = _label_table(pairs, where)
    missing = [n for n in names if n not in table]
    if missing:
        return Layout(
            None, f"{len(missing)} image(s) have no label in {where}: {_examples(missing)}"
        )
    values = sorted({table[n] for n in names})
    index = {v: i for i, v in enumerate(values)}
    of = torch.tensor([index[table[n]] for n in names], dtype=torch.long)
    return Layout(Labels(tuple(str(v) for v in values), of, DATASET_JSON))


def _label_table(pairs: list[tuple[str, object]], where: str) -> dict[str, int]:
    """{path: class index} from dataset.json's pairs; a label that is not a whole number of 0
    or more, or a path labelled twice with two classes, is refused (a usage error)."""
    table: dict[str, int] = {}
    for path, label in pairs:
        if isinstance(label, bool) or not isinstance(label, int):
            raise UsageError(f"{where}: the label of {path} is {label!r}: labels are integers")
        if label < 0:
            raise UsageError(f"{where}: the label of {path} is {label}: labels start at 0")
        if table.setdefault(path, label) != label:
            raise UsageError(f"{where} labels {path} twice: {table[path]} and {label}")
    return table


def named(classes: tuple[str, ...], of: torch.Tensor, what: str) -> Layout:
    """A named dataset's own labels (its label files)."""
    return Layout(Labels(classes, of.to(torch.long), f"{what}'s labels"))


def class_counts(labels: Labels | None) -> dict[str, int]:
    """{class name: images} for config.json and checkpoints; {} without labels."""
    if labels is None:
        return {}
    return dict(zip(labels.classes, labels.counts(), strict=True))


def of_images(
    model_classes: list[str], data: Labels | None, where: str, problem: str
) -> torch.Tensor:
    """The class indices (N,) of a dataset's images for a conditional model trained on
    `model_classes`: the data must name the same classes (in the same order)."""
    if data is None:
        raise UserError(
            f"a conditional model needs the classes of the images it encodes, and {where} has "
            f"none: {problem}"
        )
    if list(data.classes) != list(model_classes):
        raise UserError(
            f"{where} has the classes {', '.join(data.classes)}; the model was trained on "
            f"{', '.join(model_classes)}"
        )
    return data.of
