"""What `imagegen encode`, `decode`, `interpolate` and `reconstruct` are asked: their options,
declared once (as SampleRequest's are). A light module (no torch): the command line builds the
flags from it at startup. The fields without help are the commands' positional arguments.
"""

from dataclasses import dataclass
from pathlib import Path

from imagegen.common.options import check_options, option


@dataclass(frozen=True)
class _UseModel:
    """The options every autoencoder command shares."""

    class_: str | None = option(
        None,
        "A conditional model's class for every image, by name or index (encoding and decoding "
        "both need it); an unconditional model refuses it.",
        flag="--class",
        shown="none; decode: the file's classes",
    )
    use_ema: bool = option(
        True, "Use the moving average of the weights (--no-ema: the raw weights).", flag="--ema"
    )
    device: str = option("auto", "auto, cpu or cuda.")
    force: bool = option(False, "Overwrite an existing output.")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class EncodeRequest(_UseModel):
    """Images -> their latents (posterior means) in a file."""

    source: Path | None = None  # checkpoint file or run folder
    inputs: tuple[Path, ...] = ()  # image files and folders of them
    out: Path | None = option(
        None,
        "The latents file: .safetensors or .npz (latents (N, d) float32, the files' names, "
        "and a conditional model's classes).",
        short="-o",
        shown="latents.safetensors",
    )


@dataclass(frozen=True)
class DecodeRequest(_UseModel):
    """A latents file -> images."""

    source: Path | None = None
    latents: Path | None = None  # a file `encode` wrote (or any (N, d) array named latents)
    out: Path | None = option(
        None, "The grid: .png, .jpg/.jpeg or .webp.", short="-o", shown="LATENTS.png"
    )
    nrow: int | None = option(None, "Images per grid row.", shown="about sqrt(n)", valid="[1, 256]")


@dataclass(frozen=True)
class InterpolateRequest(_UseModel):
    """Two images -> the decoded straight line between their latents."""

    source: Path | None = None
    first: Path | None = None
    second: Path | None = None
    steps: int = option(
        8, "Images from the first to the second, both ends included (2-256).", valid="[2, 256]"
    )
    out: Path | None = option(
        None,
        "A .png (or .jpg, .webp) row: the first image, the steps, the second image; or an "
        "animated .gif, a frame per step and back.",
        short="-o",
        shown="interpolation.png",
    )


@dataclass(frozen=True)
class ReconstructRequest(_UseModel):
    """Images -> a grid of each row above its reconstruction, and the pixel error."""

    source: Path | None = None
    inputs: tuple[Path, ...] = ()
    out: Path | None = option(
        None, "The grid: .png, .jpg/.jpeg or .webp.", short="-o", shown="reconstructions.png"
    )
    nrow: int = option(8, "Images per row (each row above its reconstructions).", valid="[1, 256]")
