"""The models imagegen knows: one literal dict from a name to its spec."""

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from imagegen.errors import UsageError
from imagegen.models import dcgan, vae, vaegan


@dataclass(frozen=True)
class Preset:
    """A named recipe: training options and model options over the defaults."""

    summary: str
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    model: dict[str, Any] = field(default_factory=dict)  # the model's config fields


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: its frozen config class, its module class, its defaults.

    The config classes' defaults are the papers'; `presets` are recipes over them, and a new
    run starts from `default_preset` unless another is named. Flags override presets.
    """

    name: str
    summary: str
    config_cls: type
    model_cls: type[nn.Module]
    train_defaults: dict[str, Any] = field(default_factory=dict)  # over TrainConfig's
    presets: dict[str, Preset] = field(default_factory=dict)
    default_preset: str = ""

    def preset(self, name: str | None) -> tuple[str, Preset]:
        """The preset `name` (the default one for None); an unknown name lists the valid."""
        name = self.default_preset if name is None else name
        if name == "" and not self.presets:
            return "", Preset(summary="the paper's defaults")
        if name not in self.presets:
            valid = ", ".join(self.presets) or "none"
            raise UsageError(f"unknown preset {name!r} for {self.name} (valid: {valid})")
        return name, self.presets[name]


MODELS: dict[str, ModelSpec] = {
    "dcgan": ModelSpec(
        name="dcgan",
        summary="DCGAN (Radford et al. 2015), non-saturating loss",
        config_cls=dcgan.DCGANConfig,
        model_cls=dcgan.DCGAN,
        presets={
            "classic": Preset(
                summary="pytorch/examples' DCGAN: BatchNorm in D, BCE loss, Adam 2e-4 "
                "(0.5, 0.999), samples from the raw generator (no EMA)",
                train={"ema_decay": 0.0},
            ),
            "sn-hinge": Preset(
                summary="spectral normalisation in D, hinge loss, EMA generator",
                model={"d_norm": "spectral", "loss": "hinge"},
            ),
        },
        default_preset="sn-hinge",
    ),
    "vae": ModelSpec(
        name="vae",
        summary="VAE (Kingma & Welling 2014), Bernoulli or Gaussian likelihood, beta-KL",
        config_cls=vae.VAEConfig,
        model_cls=vae.VAE,
        train_defaults={"lr": 1e-3, "beta1": 0.9},
    ),
    "vaegan": ModelSpec(
        name="vaegan",
        summary="VAE-GAN (Larsen et al. 2016), feature-space reconstruction",
        config_cls=vaegan.VAEGANConfig,
        model_cls=vaegan.VAEGAN,
    ),
}


def get_spec(name: str) -> ModelSpec:
    """The spec registered under `name`; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r} (valid: {', '.join(MODELS)})") from None
