"""Variational autoencoder (Kingma & Welling 2014) with a convolutional encoder and decoder.

Loss per image = reconstruction NLL + beta * KL(q(z|x) || N(0, I)); beta may warm up linearly.
The reconstruction likelihood is Bernoulli (BCE with logits; pixels in [0, 1] as targets),
Gaussian with a fixed standard deviation (MSE up to constants) on a sigmoid mean, or Gaussian
with the optimal shared standard deviation (the sigma-VAE, Rybkin et al. 2021): each batch's
sigma is sqrt(MSE), at which the likelihood is highest, so a fixed sigma's blur (too large) or
noise (too small) is not chosen by hand. A running average of it is kept for evaluation.

With `prior="mixture"` it samples from a Gaussian mixture fitted to the encoded training images
after the encoder is trained (models/prior.py; Ghosh et al. 2020): where a sharp likelihood
leaves the posterior far from N(0, I), decoding N(0, I) draws gives images of nowhere. The ELBO
(loss and bits/dim) stays that of N(0, I), the prior it is trained with; the mixture is how it
samples. `blocks` adds residual blocks to each stage of the encoder and decoder.

With `num_classes` it is a conditional VAE (Sohn, Lee & Yan 2015): the class, one-hot, is
appended to the encoder's features and to the decoder's latent, so q(z|x,y) and p(x|z,y); the
prior stays N(0, I) and the ELBO bounds log p(x|y).
"""

import math
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from imagegen.common.options import check_range
from imagegen.models.base import GenerativeModel, OptimizerSettings
from imagegen.models.blocks import (
    AutoEncoder,
    adam_optimizers,
    check_positive,
    check_shape,
    gaussian_kl,
    reparameterize,
)
from imagegen.models.prior import MixturePrior


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and loss of a VAE."""

    resolution: int = 32
    channels: int = 3
    latent_dim: int = 32
    width: int = 32  # channels at the first encoder / last decoder stage
    # auto: bernoulli for one channel (grey levels), gaussian-optimal for colour
    likelihood: Literal["auto", "bernoulli", "gaussian", "gaussian-optimal"] = "bernoulli"
    gaussian_std: float = 0.1  # fixed sigma of the Gaussian likelihood, in [0, 1] pixel units
    beta: float = 1.0
    beta_warmup_steps: int = 0  # beta rises linearly from 0 over this many steps
    # > 0: a conditional VAE of this many classes (set by `train --conditional` from the data)
    num_classes: int = 0
    blocks: int = 0  # residual blocks after each encoder and decoder stage
    # the sampling prior: N(0, I), or a mixture fitted to the encoded training images
    prior: Literal["normal", "mixture"] = "normal"
    prior_components: int = 10
    prior_fit_images: int = 10000  # training images encoded for each fit (a fixed subset)

    def __post_init__(self) -> None:
        check_shape("vae", self.resolution, self.channels)
        check_range(self, "num_classes", "[0, inf)")
        check_range(self, "blocks", "[0, inf)")
        check_positive(self, "latent_dim", "width", "prior_components")
        check_range(self, "prior_fit_images", f"[{2 * self.prior_components}, inf)")
        check_range(self, "beta", "[0, inf)")
        check_range(self, "gaussian_std", "(0, inf)")
        check_range(self, "beta_warmup_steps", "[0, inf)")


def resolved_likelihood(config: VAEConfig) -> str:
    """The likelihood a config trains with: `auto` is Bernoulli on one channel (grey levels,
    as VAE papers model MNIST) and the optimal-sigma Gaussian on colour (docs/models.md: each
    measured better on its kind of data)."""
    if config.likelihood != "auto":
        return config.likelihood
    return "bernoulli" if config.channels == 1 else "gaussian-optimal"


def reconstruction_nll(
    output: torch.Tensor, x: torch.Tensor, likelihood: str, std: float | torch.Tensor
) -> torch.Tensor:
    """-log p(x|z) per image in nats, summed over pixels: (B,). `output` is pre-activation;
    `std` is the Gaussian's standard deviation (a float, or a scalar tensor)."""
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(output, x, reduction="none")
    else:
        mean = torch.sigmoid(output)
        log_std = torch.log(torch.as_tensor(std, dtype=mean.dtype, device=mean.device))
        nll = 0.5 * ((x - mean) / std) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
    return nll.flatten(1).sum(1)


def bits_per_dim(neg_elbo: torch.Tensor, dims: int, likelihood: str) -> torch.Tensor:
    """Negative ELBO (nats per image) in bits per dimension.

    Bernoulli: nats / (D ln 2), as VAE papers report for MNIST. Gaussian: a density on
    pixels scaled to [0, 1] is turned into a probability of 8-bit values by adding
    D ln 255 (bin width 1/255) first.
    """
    if likelihood.startswith("gaussian"):
        neg_elbo = neg_elbo + dims * math.log(255.0)
    return neg_elbo / (dims * math.log(2.0))


class VAE(GenerativeModel):
    """A VAE: encoder to (mean, log-variance), reparameterisation, decoder."""

    ema_module = "autoencoder"
    normalisation = "pixels in [0, 1]; decoder output through a sigmoid"
    can_reconstruct = True
    has_likelihood = True
    config: VAEConfig
    steps_done: torch.Tensor

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.autoencoder = AutoEncoder(
            c.channels, c.width, c.resolution, c.latent_dim, c.num_classes, c.blocks
        )
        if c.prior == "mixture":  # with the autoencoder: its EMA and weights-only files carry it
            self.autoencoder.prior = MixturePrior(c.latent_dim, c.prior_components)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # for warm-up
        self.likelihood = resolved_likelihood(config)
        if self.likelihood == "gaussian-optimal":  # kept with the autoencoder: its EMA and
            # a weights-only export carry it
            self.autoencoder.register_buffer("sigma", torch.tensor(1.0))

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.autoencoder.encoder, "decoder": self.autoencoder.decoder}

    @property
    def dims(self) -> int:
        return self.config.channels * self.config.resolution**2

    def beta_now(self) -> torch.Tensor:
        """beta at this step, computed on the device (no host synchronisation)."""
        c = self.config
        if c.beta_warmup_steps == 0:
            return torch.tensor(c.beta, device=self.steps_done.device)
        return c.beta * (self.steps_done / c.beta_warmup_steps).clamp(max=1.0)

    def configure_optimizers(self, train: OptimizerSettings) -> dict[str, torch.optim.Optimizer]:
        return adam_optimizers({"autoencoder": self.autoencoder}, train)

    def terms(
        self,
        x: torch.Tensor,
        noise: torch.Generator,
        net: nn.Module | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction NLL and KL per image (B,) each, for images x in [0, 1] (of classes
        `labels` (B,), when conditional)."""
        if net is None:  # training: through the data-parallel wrappers, if any
            encoder, decoder = self.net("encoder"), self.net("decoder")
        else:
            encoder, decoder = _parts(net)
        y = self.check_labels(labels, x.shape[0])
        mean, logvar = encoder(x, y)  # (B, latent) each
        z = reparameterize(mean, logvar, noise)
        output = decoder(z, y)  # (B, C, R, R)
        c = self.config
        std: float | torch.Tensor = c.gaussian_std
        if self.likelihood == "gaussian-optimal":
            holder = self.autoencoder if net is None else cast(AutoEncoder, net)
            std = holder.sigma
            if net is None:  # training: this batch's optimal sigma, and its running average
                mse = (x - torch.sigmoid(output)).pow(2).mean().detach()
                std = mse.sqrt().clamp(min=1e-3)
                with torch.no_grad():
                    holder.sigma.lerp_(std, 0.01)
        return reconstruction_nll(output, x, self.likelihood, std), gaussian_kl(mean, logvar)

    def training_step(
        self,
        real: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        noise: torch.Generator,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One Adam step on the batch's mean of NLL + beta * KL (a conditional VAE's: of the
        batch's classes `labels`)."""
        opt = optimizers["autoencoder"]
        opt.zero_grad(set_to_none=True)
        nll, kl = self.terms(real, noise, labels=labels)
        beta = self.beta_now()
        loss = (nll + beta * kl).mean()
        loss.backward()
        opt.step()
        self.steps_done += 1
        neg_elbo = (nll + kl).detach().mean()
        return {
            "loss": loss.detach(),
            "recon": nll.detach().mean(),
            "kl": kl.detach().mean(),
            "bpd": bits_per_dim(neg_elbo, self.dims, self.likelihood),
        }

    @torch.no_grad()
    def evaluate(
        self,
        x: torch.Tensor,
        noise: torch.Generator,
        net: nn.Module | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Negative ELBO (beta = 1) per image in nats and in bits/dim, one posterior sample
        (a conditional VAE's: a bound on -log p(x|y), given the classes `labels`)."""
        nll, kl = self.terms(x, noise, net, labels)
        neg_elbo = (nll + kl).mean()
        return {
            "neg_elbo": float(neg_elbo),
            "bpd": float(bits_per_dim(neg_elbo, self.dims, self.likelihood)),
            "recon": float(nll.mean()),
            "kl": float(kl.mean()),
        }

    @property
    def fits_prior(self) -> bool:
        return self.config.prior == "mixture"

    def describe(self) -> str:
        c = self.config
        if not self.fits_prior:
            return ""
        return (
            f"samples from a {c.prior_components}-component Gaussian mixture fitted to the "
            f"latents of {c.prior_fit_images:,} training images (at most) at each checkpoint "
            "and FID"
        )

    @torch.no_grad()
    def fit_prior(
        self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, seed: int
    ) -> float:
        """Fit the mixture prior of `net` (the sampling network) to the posterior means of
        uint8 `images` (N, C, R, R) [of classes `labels`], a fixed subset of at most
        prior_fit_images, and copy it into this model's own (the EMA copies buffers from it);
        returns the mixture's mean log-likelihood per latent."""
        n = min(self.config.prior_fit_images, len(images))
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        codes = torch.cat(
            [
                self.encode(
                    images[i].float().div(255),
                    net,
                    None if labels is None else labels[i],
                )
                for i in pick.split(256)
            ]
        )  # (n, latent)
        ll = cast(MixturePrior, cast(AutoEncoder, net).prior).fit(codes, seed)
        self.autoencoder.prior.load_state_dict(cast(AutoEncoder, net).prior.state_dict())
        return ll

    @torch.no_grad()
    def encode(
        self, x: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images in [0, 1] (B, C, R, R) [and classes (B,)] -> posterior means (B, latent)."""
        y = self.check_labels(labels, x.shape[0])
        net = net if net is not None else self.autoencoder
        param = next(net.parameters())
        mean, _ = _parts(net)[0](x.to(param.device, param.dtype), y)
        return mean

    @torch.no_grad()
    def decode(
        self, codes: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Posterior-space latents (B, latent) [and classes (B,)] -> mean images in [0, 1]."""
        y = self.check_labels(labels, codes.shape[0])
        net = net if net is not None else self.autoencoder
        return torch.sigmoid(_parts(net)[1](codes, y))

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Standard normal latents (B, latent_dim) [and classes (B,)] -> mean images
        (B, C, R, R) in [0, 1]: through the fitted mixture where there is one."""
        net = net if net is not None else self.autoencoder
        prior = getattr(net, "prior", None)
        return self.decode(z if prior is None else prior.transform(z), net, labels)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images in [0, 1] [and their classes (B,)] -> decoded posterior means (B, C, R, R)
        in [0, 1]."""
        return self.decode(self.encode(x, net, labels), net, labels)


def _parts(net: nn.Module) -> tuple[nn.Module, nn.Module]:
    """An autoencoder's (or its EMA copy's) encoder and decoder."""
    ae = cast(AutoEncoder, net)
    return ae.encoder, ae.decoder
