"""TrainConfig: every training option, declared once (flag, help, default, resume)."""

from dataclasses import dataclass, fields
from typing import Literal

from imagegen.common.options import check_options, option, parse_colour


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run that is not the model's architecture or loss."""

    dataset: str = option(
        "synthetic",
        "mnist, fashion-mnist, cifar10, celeba, synthetic, a folder of images or a .zip.",
        short="-d",
        shown="required, unless --resume",
    )
    batch_size: int = option(64, "Images per step (per process under torchrun).", valid="[1, inf)")
    steps: int | None = option(
        None,
        "Optimisation steps to train in total.",
        resumable=True,
        shown="--epochs",
        valid="[1, inf)",
    )
    epochs: float = option(
        25.0, "Epochs, when --steps is not given.", resumable=True, valid="(0, inf)"
    )
    lr: float = option(
        2e-4, "Adam learning rate of every network.", resumable=True, valid="(0, inf)"
    )
    lr_d: float | None = option(
        None,
        "The discriminator's learning rate (GANs).",
        resumable=True,
        shown="--lr",
        valid="(0, inf)",
    )
    lr_decay: Literal["none", "linear"] = option(
        "none",
        "none, or linear (to 0 at the last step, from --lr-decay-start on).",
        resumable=True,
    )
    lr_decay_start: float = option(
        0.0,
        "Fraction of the planned steps after which --lr-decay linear begins; 0: from the "
        "first step.",
        resumable=True,
        valid="[0, 1)",
    )
    beta1: float = option(0.5, "Adam beta1.", valid="[0, 1)")
    beta2: float = option(0.999, "Adam beta2.", valid="[0, 1)")
    ema_decay: float = option(
        0.999,
        "Decay of the sampling network's moving average; 0: sample the raw weights.",
        valid="[0, 1)",
    )
    seed: int = option(0, "Random seed: the same seed on the same machine, the same weights.")
    sample_every: int = option(500, "Steps between sample grids.", resumable=True, valid="[1, inf)")
    checkpoint_every: int = option(
        1000, "Steps between checkpoints.", resumable=True, valid="[1, inf)"
    )
    keep_checkpoints: int = option(
        3,
        "Step checkpoints to keep (besides latest and best).",
        resumable=True,
        flag="--keep",
        valid="[1, inf)",
    )
    log_every: int = option(50, "Steps between log lines.", resumable=True, valid="[1, inf)")
    num_samples: int = option(
        64, "Images in the fixed-noise sample grids (1 to 256).", valid="[1, 256]"
    )
    fid_every: int | None = option(
        None,
        "Steps between FIDs of the EMA model against the training data; keeps "
        "checkpoints/best (RUN:best); 0: never. Not given: a run of 1,000,000 training images "
        "or more measures it by itself, as often as costs about 5% of its training time.",
        resumable=True,
        shown="auto",
        valid="[0, inf)",
    )
    fid_n: int = option(2048, "Images for each --fid-every FID.", resumable=True, valid="[2, inf)")
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
        check_options(self)
        parse_colour(self.background)


# Fields that may change when a run is resumed (declared `resumable`); every other difference
# is refused. A new learning rate (after a diverged run, say) ends bit-exactness from that step
# on, by request.
RESUMABLE_CHANGES = frozenset(f.name for f in fields(TrainConfig) if f.metadata["resumable"])
