"""The DCGAN as the paper defines it: shapes, layers, initialisation, loss targets."""

import math

import pytest
import torch
from torch import nn

from imagegen.common.errors import UsageError
from imagegen.models.dcgan import DCGAN, DCGANConfig
from imagegen.models.gan_losses import discriminator_loss, generator_loss
from imagegen.training.config import TrainConfig


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(resolution: int, channels: int) -> None:
    cfg = DCGANConfig(resolution=resolution, channels=channels, latent_dim=10, g_width=4, d_width=4)
    model = DCGAN(cfg)
    z = torch.randn(5, 10)
    x = model.generator(z)
    assert x.shape == (5, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert model.discriminator(x).shape == (5,)
    images = model.generate(z)
    assert images.min() >= 0 and images.max() <= 1


def test_layer_stack_follows_the_paper() -> None:
    model = DCGAN(DCGANConfig(resolution=64, g_width=8, d_width=8))
    g_layers = list(model.generator.main)
    assert isinstance(g_layers[-1], nn.Tanh)
    convt = [m for m in g_layers if isinstance(m, nn.ConvTranspose2d)]
    assert len(convt) == 5  # 1 -> 4 -> 8 -> 16 -> 32 -> 64
    assert [m.out_channels for m in convt] == [64, 32, 16, 8, 3]
    d_layers = list(model.discriminator.main)
    assert isinstance(d_layers[0], nn.Conv2d) and isinstance(d_layers[1], nn.LeakyReLU)
    assert not any(isinstance(m, nn.MaxPool2d | nn.AvgPool2d) for m in model.modules())
    assert all(m.negative_slope == 0.2 for m in model.modules() if isinstance(m, nn.LeakyReLU))
    assert sum(isinstance(m, nn.Conv2d) for m in model.discriminator.modules()) == 5
    assert [m.stride for m in model.discriminator.main if isinstance(m, nn.Conv2d)] == [(2, 2)] * 4
    # 32 px drops one stage on each side.
    small = DCGAN(DCGANConfig(resolution=32, g_width=8, d_width=8))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in small.generator.modules()) == 4


def test_initialisation() -> None:
    torch.manual_seed(0)
    model = DCGAN(DCGANConfig(resolution=64))
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    weights = torch.cat([w.flatten() for w in convs])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn.std().item() == pytest.approx(0.02, rel=0.2)


def test_bad_config() -> None:
    with pytest.raises(UsageError, match="resolution 48"):
        DCGANConfig(resolution=48)
    with pytest.raises(UsageError, match="channels"):
        DCGANConfig(channels=2)


def test_loss_values_by_hand() -> None:
    # D(x) = sigmoid(logit). -log sigmoid(a) - log(1 - sigmoid(b)) for a = 2, b = -1.
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    expected = -math.log(1 / (1 + math.exp(-2))) - math.log(1 - 1 / (1 + math.exp(1)))
    assert discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    # Non-saturating G loss: -log D(G(z)).
    assert generator_loss(fake).item() == pytest.approx(-math.log(1 / (1 + math.exp(1))), rel=1e-6)
    # A perfect discriminator has ~0 loss; one fooled completely has a large loss.
    assert discriminator_loss(torch.tensor([20.0]), torch.tensor([-20.0])).item() < 1e-6
    assert discriminator_loss(torch.tensor([-20.0]), torch.tensor([20.0])).item() > 39


def test_training_step_moves_each_network_the_right_way() -> None:
    """D's step raises D(real) and lowers D(fake); G's step raises D(G(z))."""
    torch.manual_seed(0)
    model = DCGAN(DCGANConfig(resolution=32, channels=1, latent_dim=8, g_width=8, d_width=8))
    train = TrainConfig(lr=1e-3)
    opts = model.configure_optimizers(train)
    real = torch.rand(16, 1, 32, 32)
    z = torch.randn(16, 8)

    def scores() -> tuple[float, float]:  # mean logits, with batch statistics as in training
        with torch.no_grad():
            fake = model.generator(z)
            return model.discriminator(real * 2 - 1).mean().item(), model.discriminator(
                fake
            ).mean().item()

    real0, fake0 = scores()
    # D step only: freeze G's optimizer by zero lr.
    for g in opts["generator"].param_groups:
        g["lr"] = 0.0
    for _ in range(3):
        model.training_step(real, opts, torch.Generator().manual_seed(1))
    real1, fake1 = scores()
    assert real1 > real0 and fake1 < fake0

    # G step only: D frozen; D(G(z)) must rise.
    for g in opts["generator"].param_groups:
        g["lr"] = 1e-3
    for g in opts["discriminator"].param_groups:
        g["lr"] = 0.0
    before = scores()[1]
    for _ in range(3):
        model.training_step(real, opts, torch.Generator().manual_seed(1))
    assert scores()[1] > before


def test_losses_are_finite_and_detached() -> None:
    model = DCGAN(DCGANConfig(resolution=32, channels=3, latent_dim=8, g_width=4, d_width=4))
    opts = model.configure_optimizers(TrainConfig())
    losses = model.training_step(torch.rand(8, 3, 32, 32), opts, torch.Generator().manual_seed(0))
    assert set(losses) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in losses.values())
