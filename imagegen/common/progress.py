"""Progress of long work, in one shape: the library reports `ProgressEvent`s to a callback
its caller gives, and never prints. Data decoding, reference features, eval, sample and train
all report through it.

    kind        what happened                                   fields it sets
    stage       a stage of work begins                          message
    progress    `done` of `total` images are made or processed  done, total
    decode      a dataset's first decode (then it is cached)    message (the data), done, total,
                                                                first (its first report)
    start       training starts                                 message, done (step), total, path
    step, log   a training step; a log line                     done, total, values, rate, eta_s
    sample, checkpoint   a file was written                     done, total, path
    fid         an FID was measured                             done, total, values, best
    warning     an alarm was raised                             done, total, message
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Kind(StrEnum):
    """What an event reports (see the table above)."""

    STAGE = "stage"
    PROGRESS = "progress"
    DECODE = "decode"
    START = "start"
    STEP = "step"
    LOG = "log"
    SAMPLE = "sample"
    CHECKPOINT = "checkpoint"
    FID = "fid"
    WARNING = "warning"


@dataclass(frozen=True)
class ProgressEvent:
    """One report of long work (see the table above)."""

    kind: Kind
    message: str = ""
    done: int = 0  # images done, or the training step
    total: int = 0  # images, or training steps, in all
    values: dict[str, float] = field(default_factory=dict)  # losses, FID
    rate: float = 0.0  # images per second
    eta_s: float = 0.0
    path: Path | None = None
    best: bool = False  # fid: the lowest so far (checkpoints/best.safetensors was written)
    first: bool = False  # decode, progress: the first report of `every` images or more

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))  # an unknown kind is a ValueError


Emit = Callable[[ProgressEvent], None]


def ignore(event: ProgressEvent) -> None:
    """The callback of a caller that wants no progress."""


class Counter:
    """Counts images done of `total` and reports them as `kind` events (every `every` images
    and at the end; every batch when `every` is 1)."""

    def __init__(self, emit: Emit | None, total: int, kind: Kind = Kind.PROGRESS,
                 message: str = "", every: int = 1) -> None:  # fmt: skip
        self.emit, self.total, self.kind, self.message = emit or ignore, total, kind, message
        self.every, self.done = every, 0

    def add(self, k: int) -> None:
        before, self.done = self.done, self.done + k
        if self.done // self.every > before // self.every or self.done == self.total:
            first = before < self.every <= self.done  # the first full `every`
            self.emit(ProgressEvent(self.kind, self.message, self.done, self.total, first=first))
