"""A model that lives outside imagegen/: a tiny generator trained by moment matching (the
batch's per-pixel mean and standard deviation of its samples against the real batch's).

It exists to show that the training loop and the commands know no model by name: registered
under a name of its own, it trains, resumes, samples, evaluates and converts like the others."""

from dataclasses import dataclass

import torch
from torch import nn

from imagegen.models.base import GenerativeModel, OptimizerSettings


@dataclass(frozen=True)
class ToyConfig:
    """A generator of `width` hidden units."""

    resolution: int = 32
    channels: int = 3
    latent_dim: int = 8
    width: int = 16


class ToyGenerator(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.shape = (config.channels, config.resolution, config.resolution)
        pixels = config.channels * config.resolution**2
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim, config.width), nn.ReLU(), nn.Linear(config.width, pixels)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).view(-1, *self.shape)  # (B, C, R, R) in [0, 1]


class Toy(GenerativeModel):
    ema_module = "generator"
    normalisation = "pixels in [0, 1]; sigmoid output"
    config: ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = ToyGenerator(config)

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def configure_optimizers(self, train: OptimizerSettings) -> dict[str, torch.optim.Optimizer]:
        params = self.generator.parameters()
        return {"generator": torch.optim.Adam(params, train.lr, (train.beta1, train.beta2))}

    def training_step(
        self,
        real: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        noise: torch.Generator,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        z = torch.randn(real.shape[0], self.latent_dim, generator=noise, device=real.device)
        fake = self.net("generator")(z)  # (B, C, R, R)
        loss = (fake.mean(0) - real.mean(0)).pow(2).mean()
        loss = loss + (fake.std(0) - real.std(0)).pow(2).mean()
        optimizers["generator"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["generator"].step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check_labels(labels, z.shape[0])
        return (net if net is not None else self.generator)(z)
