"""The models imagegen knows: one literal dict from a name to its spec."""

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from imagegen.errors import UsageError
from imagegen.models import dcgan, vae, vaegan


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: its frozen config class, its module class, its defaults."""

    name: str
    summary: str
    config_cls: type
    model_cls: type[nn.Module]
    train_defaults: dict[str, Any] = field(default_factory=dict)  # over TrainConfig's


MODELS: dict[str, ModelSpec] = {
    "dcgan": ModelSpec(
        name="dcgan",
        summary="DCGAN (Radford et al. 2015), non-saturating loss",
        config_cls=dcgan.DCGANConfig,
        model_cls=dcgan.DCGAN,
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
