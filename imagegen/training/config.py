"""TrainConfig: every training option, declared once (flag, help, default, resume)."""

from dataclasses import dataclass, fields
from typing import Literal

from imagegen.common.options import check_range, option, parse_colour


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run that is not the model's architecture or loss."""

    dataset: str = option(
        "synthetic",
        "mnist, fashion-mnist, cifar10, celeba, synthetic, a folder of images or a .zip.",
        short="-d",
        shown="required, unless --resume",
    )
    batch_size: int = option(64, "Images per step (per process under torchrun).")
    steps: int | None = option(
        None, "Optimisation steps to train in total.", resumable=True, shown="--epochs"
    )
    epochs: float = option(25.0, "Epochs, when --steps is not given.", resumable=True)
    lr: float = option(2e-4, "Adam learning rate of every network.", resumable=True)
    lr_d: float | None = option(
        None, "The discriminator's learning rate (GANs).", resumable=True, shown="--lr"
    )
    lr_decay: Literal["none", "linear"] = option("none", "none, or linear (to 0 at the last step).")
    beta1: float = option(0.5, "Adam beta1.")
    beta2: float = option(0.999, "Adam beta2.")
    ema_decay: float = option(
        0.999, "Decay of the sampling network's moving average; 0: sample the raw weights."
    )
    seed: int = option(0, "Random seed: the same seed on the same machine, the same weights.")
    sample_every: int = option(500, "Steps between sample grids.", resumable=True)
    checkpoint_every: int = option(1000, "Steps between checkpoints.", resumable=True)
    keep_checkpoints: int = option(
        3, "Step checkpoints to keep (besides latest and best).", resumable=True, flag="--keep"
    )
    log_every: int = option(50, "Steps between log lines.", resumable=True)
    num_samples: int = option(64, "Images in the fixed-noise sample grids (1 to 256).")
    fid_every: int | None = option(
        None,
        "Steps between FIDs of the EMA model against the training data; keeps "
        "checkpoints/best (RUN:best); 0: never. Not given: a run of 1,000,000 training images "
        "or more measures it by itself, as often as costs about 5% of its training time.",
        resumable=True,
        shown="auto",
    )
    fid_n: int = option(2048, "Images for each --fid-every FID.", resumable=True)
    precision: Literal["auto", "bf16", "fp32"] = option(
        "auto",
        "auto, bf16 or fp32; auto: bf16 on CUDA, and on CPUs with bf16 units for the models "
        "measured in bf16, else fp32; a resumed run left to auto keeps its own.",
        resumable=True,
    )
    compile: bool = option(
        False,
        "torch.compile each network, in place (checkpoints keep their keys).",
        resumable=True,
    )
    flip: bool = option(False, "Random horizontal flips of the data, drawn on the device.")
    background: str = option(
        "white",
        "Colour under transparent pixels (RGBA, grey+alpha, palette transparency), the same "
        "for every image, and the border of --fit pad: white, black or #rrggbb.",
    )
    transparent: bool = option(
        False,
        "Train on RGBA (4 channels): samples are PNGs with their own alpha; eval and FIDs "
        "composite them onto --background.",
    )
    conditional: bool = option(
        False,
        "Class-conditional model of the data's classes: class subfolders, a dataset.json "
        "(stylegan2-ada's), or mnist, fashion-mnist and cifar10's labels. A DCGAN's "
        "conditioning ramps in over its run (docs/models.md).",
    )
    fit: Literal["crop", "pad"] = option(
        "crop",
        "How a non-square image becomes square: crop its centre, or pad it whole on the "
        "background.",
    )
    sync_bn: bool = option(
        False,
        "torchrun jobs on CUDA: BatchNorm statistics over all ranks (SyncBatchNorm).",
        resumable=True,
        shown="per rank",
    )
    preset: str = option(
        "", "Recipe to start from; flags override it.", shown="the model's default preset"
    )
    tensorboard: bool | None = option(
        None,
        "Event files in RUN/tensorboard.",
        resumable=True,
        shown="on when tensorboard is installed",
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "sample_every", "checkpoint_every", "log_every"):
            check_range(self, name, low=1)
        if self.steps is not None:
            check_range(self, "steps", low=1)
        check_range(self, "epochs", low=0.0, low_open=True)
        check_range(self, "lr", low=0.0, low_open=True)
        if self.lr_d is not None:
            check_range(self, "lr_d", low=0.0, low_open=True)
        check_range(self, "beta1", low=0.0, high=1.0, high_open=True)
        check_range(self, "beta2", low=0.0, high=1.0, high_open=True)
        check_range(self, "ema_decay", low=0.0, high=1.0, high_open=True)
        check_range(self, "keep_checkpoints", low=1)
        check_range(self, "num_samples", low=1, high=256)
        if self.fid_every is not None:
            check_range(self, "fid_every", low=0)
        check_range(self, "fid_n", low=2)
        parse_colour(self.background)


# Fields that may change when a run is resumed (declared `resumable`); every other difference
# is refused. A new learning rate (after a diverged run, say) ends bit-exactness from that step
# on, by request.
RESUMABLE_CHANGES = frozenset(f.name for f in fields(TrainConfig) if f.metadata["resumable"])
