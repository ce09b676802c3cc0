"""TensorBoard event files in the run folder (RUN/tensorboard/): losses, images/s, FID,
alarms and the sample grids, for `tensorboard --logdir checkpoints/`.

Written only where the `tensorboard` package is installed (`pip install 'imagegen[tensorboard]'`);
`--tensorboard` asks for it (an error without the package), `--no-tensorboard` turns it off.
On resume, events after the checkpoint's step are dropped (purge_step), as log.jsonl's lines are.
"""

import importlib.util
from pathlib import Path

import torch

from imagegen.common.errors import UsageError

FOLDER = "tensorboard"


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def wanted(option: bool | None) -> bool:
    """Whether to write events: the option, or (None) whether the package is installed."""
    if option and not available():
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install 'imagegen[tensorboard]'"
        )
    return available() if option is None else option


class TensorBoardLog:
    """A SummaryWriter under RUN/tensorboard that starts at `start_step`."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(Path(run_dir) / FOLDER), purge_step=start_step + 1 if start_step else None
        )

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def grid(self, step: int, grid: torch.Tensor) -> None:
        """A uint8 grid (C, H, W) of the fixed-noise samples."""
        self.writer.add_image("samples", grid, step)

    def text(self, step: int, tag: str, message: str) -> None:
        self.writer.add_text(tag, message, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
