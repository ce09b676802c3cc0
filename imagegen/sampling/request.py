"""What `imagegen sample` is asked: its options, declared once.

The `sample` command's flags, their help and defaults, and docs/cli.md's option table are
derived from these declarations (config.option), as `train`'s are from TrainConfig. A light
module (no torch): the command line builds its flags from it at startup.
"""

from dataclasses import dataclass
from pathlib import Path

from imagegen.common.options import check_options, option

MAX_N = 100_000  # images one sample command writes


@dataclass(frozen=True)
class SampleRequest:
    """What to sample and where to write it. The fields declared with `option` are the
    `sample` command's flags."""

    source: Path | None = None  # checkpoint file or run folder; None: the newest run
    n: int = option(
        64,
        "Number of images (1 to 100,000; a grid holds at most 4,096); a conditional model "
        "without --class: whole rows, one per class (--n 64 of 10 classes: 10 rows of 6).",
        short="-n",
        valid=f"[1, {MAX_N}]",
    )
    seeds: tuple[int, ...] | None = option(
        None,
        "One image per seed instead of --n from --seed: 0-63, 1,5,9-12; a seed gives the same "
        "image in any list; --individual files are seed0005.png; a conditional model without "
        "--class draws each seed in every class (a row per class, a column per seed).",
    )
    trunc: float | None = option(
        None,
        "The truncation trick (Brock et al. 2019): latent entries beyond +-TRUNC drawn again, "
        "so typical images with less variety (e.g. 0.7); the JSON's latents says so.",
        shown="off",
        valid="(0, inf)",
    )
    class_: str | None = option(
        None,
        "A conditional model's class, by name or index; an unknown name lists the valid ones; "
        "an unconditional model refuses it.",
        flag="--class",
        shown="each class, a row each",
    )
    seed: int = option(0, "Seed for the latents: the same seed gives byte-identical files.")
    out: Path | None = option(
        None,
        "The grid: .png, .jpg/.jpeg (quality 95), .webp (lossless) or, for an interpolation, an "
        "animated .gif, the format its suffix names; never a checkpoint, never in a run's "
        "checkpoints/.",
        short="-o",
        shown="RUN/samples/sample-seedS-nN.png",
    )
    nrow: int | None = option(None, "Images per grid row.", shown="about sqrt(n)", valid="[1, inf)")
    individual: Path | None = option(
        None,
        "One PNG per image into this folder: 000000.png, ... (a conditional model's: "
        "000000-CLASS.png).",
    )
    interpolate: int | None = option(
        None,
        "Rows of STEPS spherical interpolations between random latents; with --out walk.gif (or "
        ".webp, lossless, alpha kept) an endless animation, one frame per step and back, the "
        "rows side by side.",
        valid="[2, inf)",
    )
    reconstruct: bool = option(
        False,
        "A model with an encoder: --n dataset images (a seeded random choice), each row above a "
        "row of their reconstructions; prints pixel MSE and PSNR, and for a model with a "
        "likelihood (the VAE) the negative ELBO in nats and bits/dim, on those images.",
    )
    split: str = option("test", "--reconstruct: the split to draw from.")
    dataset: str | None = option(
        None, "--reconstruct: another dataset than the run's.", short="-d", shown="the run's"
    )
    data_root: str | None = option(
        None, "--reconstruct: folder of named datasets.", shown="the run's"
    )
    use_ema: bool = option(
        True, "Sample the moving average of the weights (--no-ema: the raw weights).", flag="--ema"
    )
    device: str = option("auto", "auto, cpu or cuda.")
    force: bool = option(False, "Overwrite an existing output.")

    def __post_init__(self) -> None:
        check_options(self)
