"""Progress of long work (sampling many images, evaluation) as events the caller renders:
the library never prints."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """A stage begins (`message`), or `done` of `total` images are made or processed."""

    kind: str  # "stage" | "progress"
    message: str = ""
    done: int = 0
    total: int = 0


Emit = Callable[[ProgressEvent], None]


def counter(emit: Emit, total: int) -> Callable[[int], None]:
    """An on_batch callback (k images done) that reports progress events of `total`."""
    done = [0]

    def on_batch(k: int) -> None:
        done[0] += k
        emit(ProgressEvent("progress", done=done[0], total=total))

    return on_batch
