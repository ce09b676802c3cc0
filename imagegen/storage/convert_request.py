"""What `imagegen convert` is asked: its options, declared once.

The `convert` command's flags, their help and defaults, and docs/cli.md's option table are
derived from these declarations (common.options.option), as `train`'s are from TrainConfig.
A light module (no torch): the command line builds its flags from it at startup.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegen.common.errors import UsageError
from imagegen.common.options import check_options, option

# The flags that name an imported model's architecture: the model config field each sets
# (pytorch/examples' names for the DCGAN's: nz, ngf, ndf, nc, image_size).
ARCHITECTURE_FLAGS = {
    "resolution": "resolution",
    "latent_dim": "latent_dim",
    "nz": "latent_dim",
    "ngf": "g_width",
    "ndf": "d_width",
    "nc": "channels",
    "image_size": "resolution",
}


@dataclass(frozen=True)
class ConvertRequest:
    """What to convert. The fields declared with `option` are the `convert` command's flags;
    `set_options` are its --set KEY=VALUE model options."""

    src: Path
    dst: Path
    set_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = option(None, "Model of a state dict.", shown="the config.json's beside it")
    resolution: int | None = option(None, "Image size of an imported model.", valid="[1, inf)")
    latent_dim: int | None = option(None, "Latent size of an imported model.", valid="[1, inf)")
    nz: int | None = option(None, "pytorch/examples: latent size (nz).", valid="[1, inf)")
    ngf: int | None = option(None, "pytorch/examples: generator width (ngf).", valid="[1, inf)")
    ndf: int | None = option(None, "pytorch/examples: discriminator width (ndf).", valid="[1, inf)")
    nc: int | None = option(None, "pytorch/examples: image channels (nc).", valid="[1, 4]")
    image_size: int | None = option(None, "pytorch/examples: image size (64).", valid="[1, inf)")
    discriminator: Path | None = option(
        None, "pytorch/examples: the netD_epoch_N.pth that goes with netG."
    )
    use_ema: bool = option(
        True, "Export the moving average of the weights (--no-ema: the raw weights).", flag="--ema"
    )
    weights_only: bool = option(
        False,
        "SRC (a checkpoint or run) -> DST.safetensors with the sampling network alone: a few "
        "MB that sample, eval and convert accept.",
    )
    force: bool = option(False, "Overwrite an existing destination.")

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def options(self) -> dict[str, Any]:
        """The imported model's config fields asked for: --set, then the architecture flags."""
        out = {ARCHITECTURE_FLAGS.get(k, k): v for k, v in self.set_options.items()}
        for flag, name in ARCHITECTURE_FLAGS.items():
            value = getattr(self, flag)
            if value is None:
                continue
            if str(out.get(name, value)) != str(value):
                raise UsageError(f"--{flag.replace('_', '-')} and another flag disagree on {name}")
            out[name] = value
        return out
