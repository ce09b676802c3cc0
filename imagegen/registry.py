"""The models imagegen knows: one literal dict from a name to its spec."""

from dataclasses import dataclass

from torch import nn

from imagegen.errors import UsageError
from imagegen.models import dcgan


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: its frozen config class and its module class."""

    name: str
    summary: str
    config_cls: type
    model_cls: type[nn.Module]


MODELS: dict[str, ModelSpec] = {
    "dcgan": ModelSpec(
        name="dcgan",
        summary="DCGAN (Radford et al. 2015), non-saturating loss",
        config_cls=dcgan.DCGANConfig,
        model_cls=dcgan.DCGAN,
    ),
}


def get_spec(name: str) -> ModelSpec:
    """The spec registered under `name`; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r} (valid: {', '.join(MODELS)})") from None
