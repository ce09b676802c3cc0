"""The model contract: what every model gives the training loop and the commands.

A model is a frozen dataclass config plus a `GenerativeModel` built from it alone. Adding a
model means one file in this folder (its config, its networks, its training step) and one
line in `imagegen/models/registry.py`; tests/test_contract.py then runs it through every command.

    config               the frozen config dataclass the model was built from
    ema_module           the name of the attribute sampled from; training keeps its EMA copy
    normalisation        how pixels map to the networks' inputs and outputs, in words
    latent_dim           the size of the latents `generate` takes
    networks()           the separately optimised networks, by name (each may be DDP-wrapped)
    configure_optimizers(train)              one optimizer per network, by name (the
                                             training options: OptimizerSettings)
    training_step(real, optimizers, noise)   one step on a batch in [0, 1]; detached losses
    generate(z, net=None)                    latents -> images in [0, 1]

Conditional models (config.num_classes > 0) take the images' classes as well:
training_step(..., labels=y) and generate(z, net, labels=y), y (B,) int64 class indices.

A model's config may define `check_training(train)`: training options it cannot train with
(a usage error), checked when the run is planned, so `--dry-run` refuses them too.

Capabilities some models add, declared (not probed):

    can_reconstruct      reconstruct(x, net=None): images -> reconstructions, in [0, 1]
    has_likelihood       evaluate(x, noise, net=None): negative ELBO and bits/dim per image
    standing_statistics  the sampled network's BatchNorm statistics are re-estimated for the
                         averaged weights before it samples or is saved (see training/ema.py)
    fits_prior           fit_prior(net, images, labels, seed): a sampling prior fitted to the
                         encoded training images before the model samples or is saved, kept
                         in the sampling network (models/prior.py)
    encode(x, net=None), decode(codes, net=None)   images <-> posterior-space latents (the
                         models that reconstruct)
"""

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol

import torch
from torch import nn


class OptimizerSettings(Protocol):
    """The training options a model's optimizers take (TrainConfig has them): models do not
    import training."""

    lr: float
    lr_d: float | None
    beta1: float
    beta2: float


class TrainingSettings(Protocol):
    """The training options a model's config may refuse (`check_training`)."""

    sync_bn: bool


class ModelConfig(Protocol):
    """What every model's frozen config dataclass has (each adds its own fields).

    Optional, looked up by name by training: `check_training(train)` refuses training options
    the model cannot train with (in the plan, so --dry-run refuses too); `training_said()` is
    what the run's first line says of the config ("" for nothing)."""

    @property
    def resolution(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def latent_dim(self) -> int: ...


class GenerativeModel(nn.Module, ABC):
    """Named networks that training may wrap (in DDP), and the contract above.

    Data-parallel training wraps each network in DistributedDataParallel; training steps call
    `self.net(name)`, which is the wrapper when there is one, so gradients are averaged over
    the ranks. The wrappers are not submodules: state_dict keys stay those of the networks.
    """

    ema_module: ClassVar[str]
    normalisation: ClassVar[str]
    can_reconstruct: ClassVar[bool] = False
    has_likelihood: ClassVar[bool] = False
    standing_statistics: ClassVar[bool] = False
    config: ModelConfig

    def __init__(self) -> None:
        super().__init__()
        self._wrappers: dict[str, nn.Module] = {}

    @property
    def latent_dim(self) -> int:
        return int(self.config.latent_dim)

    @property
    def num_classes(self) -> int:
        """Classes a conditional model generates; 0: unconditional."""
        return int(getattr(self.config, "num_classes", 0))

    def check_labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The class indices a call needs: (n,) for a conditional model, None otherwise."""
        if not self.num_classes:
            if labels is not None:
                raise ValueError("an unconditional model takes no labels")
            return None
        if torch.jit.is_tracing():  # ONNX export: shapes are the graph's, not checked here
            return labels
        if labels is None or labels.shape != (n,):
            raise ValueError(f"a conditional model needs labels of shape ({n},)")
        return labels

    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """The separately optimised networks, by name."""

    def not_compiled(self) -> dict[str, str]:
        """Networks that `--compile` must leave as they are, by name, with the reason."""
        return {}

    def compile_networks(self) -> None:
        """torch.compile each network but `not_compiled()`'s, in place (state_dict keys stay)."""
        skipped = self.not_compiled()
        for name, network in self.networks().items():
            if name not in skipped:
                network.compile()

    @abstractmethod
    def configure_optimizers(self, train: OptimizerSettings) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per network name that `training_step` steps."""

    @abstractmethod
    def training_step(
        self,
        real: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        noise: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """One step on `real` (B, C, R, R) in [0, 1]; all randomness from `noise`."""

    @abstractmethod
    def generate(
        self, z: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents (B, latent_dim) -> images (B, C, R, R) in [0, 1]; `net` replaces the
        sampling network (an EMA copy of it); `labels` (B,): a conditional model's classes."""

    @property
    def fits_prior(self) -> bool:
        """Whether a sampling prior is fitted after the encoder (`fit_prior`)."""
        return False

    def describe(self) -> str:
        """What a run's first line says of this model beyond its name and preset ("")."""
        return ""

    def fit_prior(
        self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, seed: int
    ) -> float:
        """Fit the sampling prior of `net` to uint8 training `images` (N, C, R, R); returns
        its mean log-likelihood per latent."""
        raise NotImplementedError(f"{type(self).__name__} fits no prior")

    def encode(
        self, x: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images in [0, 1] (B, C, R, R) -> latents (B, latent) (can_reconstruct models)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def decode(
        self, codes: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents (B, latent) -> images in [0, 1] (can_reconstruct models)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def reconstruct(
        self, x: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images in [0, 1] -> their reconstructions in [0, 1] (can_reconstruct models)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def evaluate(
        self,
        x: torch.Tensor,
        noise: torch.Generator,
        net: nn.Module | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Negative ELBO and bits/dim per image (has_likelihood models)."""
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def sampling_network(self) -> nn.Module:
        """The module sampled from, whose moving average training keeps."""
        return getattr(self, self.ema_module)

    def set_wrappers(self, wrappers: dict[str, nn.Module]) -> None:
        unknown = set(wrappers) - set(self.networks())
        if unknown:
            raise ValueError(f"no network named {', '.join(sorted(unknown))}")
        self._wrappers = dict(wrappers)

    def net(self, name: str) -> nn.Module:
        """The network `name` as training calls it: its wrapper if it has one."""
        wrapper = self._wrappers.get(name)
        return wrapper if wrapper is not None else self.networks()[name]
