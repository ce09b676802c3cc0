"""VAE-GAN (Larsen, Sønderby, Larochelle & Winther 2016, "Autoencoding beyond pixels").

A VAE whose reconstruction error is measured in a hidden layer of a GAN discriminator,
Dis_l, under a Gaussian likelihood, and whose decoder doubles as the GAN's generator.

    L_prior   = KL(q(z|x) || N(0, I))
    L_llike   = -E_q[log N(Dis_l(x) | Dis_l(Dec(z)), I)] = 1/2 ||Dis_l(x~) - Dis_l(x)||^2 + const
    L_GAN     = log Dis(x) + log(1 - Dis(Dec(z))) + log(1 - Dis(Dec(z_p))),  z_p ~ N(0, I)

    encoder       <- grad(L_prior + L_llike)
    decoder       <- grad(gamma * L_llike - L_GAN)   (non-saturating: x~, x_p labelled real)
    discriminator <- grad(-L_GAN)                    (x real; x~ and x_p fake; not L_llike)

All three gradients are taken at the same parameters (the paper's Algorithm 1), each network
with its own optimizer. Images are in [-1, 1] inside the model; the decoder ends in tanh.

Options beyond Algorithm 1 (its defaults keep it): the authors' balancing rule (`balance`:
with equilibrium e and margin m, D's step is skipped when its loss on real or on prior
samples is below e - m, the decoder's when above e + m, both taken if both would be skipped),
a KL weight `beta` in the encoder's loss, D without reconstructions among its fakes (the
authors' CelebA code), and the DCGAN's spectral normalisation, hinge loss and differentiable
augmentation of D's inputs (DiffAugment, with ADA's adaptive probability). Augmented, a real
image and its reconstruction go through the same transformation, so that Dis_l compares like
with like; prior samples through their own.

With `num_classes` it is conditional in both halves: a conditional VAE (the one-hot class
appended to the encoder's features and to the decoder's latent, Sohn et al. 2015) whose
decoder is the generator, and a projection discriminator (Miyato & Koyama 2018). Prior
samples are drawn for the batch's own classes.
"""

from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from imagegen.common.options import check_range
from imagegen.models.augment import (
    adapt,
    adaptive_log,
    check_augment,
    diff_augment,
    parse_policy,
)
from imagegen.models.base import GenerativeModel, OptimizerSettings, TrainingSettings
from imagegen.models.blocks import (
    AutoEncoder,
    Discriminator,
    adam_optimizers,
    check_d_batch,
    check_positive,
    check_shape,
    check_sync_bn,
    gaussian_kl,
    reference_batch,
    reparameterize,
)
from imagegen.models.gan_losses import discriminator_loss, generator_loss


@dataclass(frozen=True)
class VAEGANConfig:
    """Architecture and loss weights of a VAE-GAN."""

    resolution: int = 32
    channels: int = 3
    latent_dim: int = 64
    width: int = 32  # encoder / decoder channels at full resolution
    d_width: int = 32  # discriminator channels at full resolution
    gamma: float = 0.01  # weight of the feature reconstruction in the decoder's loss
    beta: float = 1.0  # weight of the KL term in the encoder's loss
    d_norm: Literal["batch", "spectral", "none"] = "batch"  # normalisation in D
    # how D's BatchNorm batches real images, reconstructions and prior samples: separate (each
    # kind its own batch), joint (one batch) or reference (one batch, normalised with the real
    # images' statistics); see the DCGAN's d_batch
    d_batch: Literal["separate", "joint", "reference"] = "separate"
    loss: Literal["bce", "hinge"] = "bce"  # the GAN loss
    d_on_reconstructions: bool = True  # D sees Dec(Enc(x)) as fake, besides prior samples
    balance: bool = False  # the authors' rule: skip D's or the decoder's step (see above)
    equilibrium: float = 0.68  # the rule's target for D's BCE on real and on prior samples
    margin: float = 0.35
    augment: str = ""  # DiffAugment policy of D's inputs: color, translation, cutout
    # > 0: augment each image with a probability adapted to keep E[sign(D(x))] at this
    augment_target: float = 0.0
    # > 0: conditional on this many classes (set by `train --conditional` from the data)
    num_classes: int = 0

    def __post_init__(self) -> None:
        check_shape("vaegan", self.resolution, self.channels)
        check_range(self, "num_classes", "[0, inf)")
        check_positive(self, "latent_dim", "width", "d_width")
        check_range(self, "gamma", "[0, inf)")
        check_range(self, "beta", "[0, inf)")
        check_range(self, "equilibrium", "(0, inf)")
        check_range(self, "margin", "[0, inf)")
        check_d_batch(self.d_batch, self.d_norm)
        check_augment(self.augment, self.augment_target)

    def check_training(self, train: TrainingSettings) -> None:
        """Training options this model cannot train with."""
        check_sync_bn(self.d_batch, train.sync_bn)


def feature_nll(f_fake: torch.Tensor, f_real: torch.Tensor) -> torch.Tensor:
    """-log N(f_real | f_fake, I) per image, without the constant: (B,)."""
    return 0.5 * (f_fake - f_real).pow(2).flatten(1).sum(1)


def _mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean over a torchrun job's ranks (so every rank takes the same decisions)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


class VAEGAN(GenerativeModel):
    """Encoder, decoder (= generator) and discriminator."""

    ema_module = "autoencoder"
    normalisation = "pixels in [0, 1] mapped to [-1, 1]; tanh output"
    can_reconstruct = True
    config: VAEGANConfig

    def __init__(self, config: VAEGANConfig) -> None:
        super().__init__()
        self.config = config
        k = config.num_classes
        self.autoencoder = AutoEncoder(
            config.channels, config.width, config.resolution, config.latent_dim, k
        )
        self.discriminator = Discriminator(
            config.channels, config.d_width, config.resolution, config.d_norm, num_classes=k
        )
        self.policy = parse_policy(config.augment)
        if config.augment_target:  # the adaptive probability: state, saved with the weights
            self.register_buffer("augment_p", torch.zeros(()))
        self.augment_p: torch.Tensor | None = getattr(self, "augment_p", None)

    def networks(self) -> dict[str, nn.Module]:
        return {
            "encoder": self.autoencoder.encoder,
            "decoder": self.autoencoder.decoder,
            "discriminator": self.discriminator,
        }

    def configure_optimizers(self, train: OptimizerSettings) -> dict[str, torch.optim.Optimizer]:
        """One Adam per network; the discriminator's lr is `lr_d` where given."""
        return adam_optimizers(self.networks(), train)

    def losses(
        self, real: torch.Tensor, noise: torch.Generator, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The three networks' losses on a batch `real` (B, C, R, R) in [0, 1] (of classes
        `labels` (B,), when conditional)."""
        encoder, decoder = self.net("encoder"), self.net("decoder")
        dis = self.net("discriminator")
        y = self.check_labels(labels, real.shape[0])  # the class, for every network
        x = real * 2 - 1  # (B, C, R, R) in [-1, 1]
        mean, logvar = encoder(x, y)  # (B, latent) each
        x_rec = torch.tanh(decoder(reparameterize(mean, logvar, noise), y))  # x~
        z_p = torch.randn(mean.shape, generator=noise, device=x.device, dtype=mean.dtype)
        x_prior = torch.tanh(decoder(z_p, y))  # x_p
        c = self.config
        (logit_real, f_real), (logit_rec, f_rec), (logit_prior, _) = self._dis(
            dis, self._augmented(x, x_rec, x_prior, noise), y
        )  # Dis(x), Dis_l(x); Dis(x~), Dis_l(x~); Dis(x_p)
        prior = gaussian_kl(mean, logvar).mean()
        llike = feature_nll(f_rec, f_real.detach()).mean()
        fakes = [logit_rec, logit_prior] if c.d_on_reconstructions else [logit_prior]
        return {
            "encoder": c.beta * prior + llike,
            "decoder": c.gamma * llike + generator_loss([logit_rec, logit_prior], c.loss),
            "discriminator": discriminator_loss(logit_real, fakes, c.loss),
            "kl": prior,
            "llike": llike,
            "d_real": torch.sigmoid(logit_real).mean(),
            "d_fake": torch.sigmoid(logit_prior).mean(),
            # D's BCE on real and on prior samples: what the balancing rule watches
            "bce_real": F.softplus(-logit_real).mean(),
            "bce_prior": F.softplus(logit_prior).mean(),
            "logits_real": logit_real.detach(),  # what ADA steers by
        }

    def _augmented(
        self, x: torch.Tensor, x_rec: torch.Tensor, x_prior: torch.Tensor, noise: torch.Generator
    ) -> list[torch.Tensor]:
        """D's three inputs through the augmentation: a real image and its reconstruction
        through the same random transformation (the same draws), prior samples their own."""
        if not self.policy:
            return [x, x_rec, x_prior]
        state = noise.get_state()
        x = diff_augment(x, self.policy, noise, self.augment_p)
        noise.set_state(state)  # x~ replays x's draws, and leaves the stream where x did
        x_rec = diff_augment(x_rec, self.policy, noise, self.augment_p)
        return [x, x_rec, diff_augment(x_prior, self.policy, noise, self.augment_p)]

    def _dis(
        self, dis: nn.Module, batches: list[torch.Tensor], y: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """D's logits (B,) and Dis_l features (B, top, 4, 4) of each batch (all of classes y,
        when conditional): in one call with d_batch "joint" (BatchNorm statistics over all of
        them) or "reference" (over the first, the real images), else one call each."""
        if self.config.d_batch == "separate":
            return [dis(b, y, with_features=True) for b in batches]
        n = batches[0].shape[0] if self.config.d_batch == "reference" else 0
        ys = None if y is None else y.repeat(len(batches))
        with reference_batch(dis, n):
            logits, features = dis(torch.cat(batches), ys, with_features=True)
        return list(zip(logits.chunk(len(batches)), features.chunk(len(batches)), strict=True))

    def training_step(
        self,
        real: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        noise: torch.Generator,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Gradients of each network's own loss at the same parameters, then three steps.

        Each backward pass accumulates into one network's parameters only (`inputs=`), so
        under DDP each network's gradients are averaged once, in its own backward.
        """
        losses = self.losses(real, noise, labels)
        nets = self.networks()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        for i, (name, net) in enumerate(nets.items()):
            losses[name].backward(inputs=list(net.parameters()), retain_graph=i < len(nets) - 1)
        train_d, train_dec = self._balance(losses["bce_real"], losses["bce_prior"])
        for name in nets:
            if (name == "discriminator" and not train_d) or (name == "decoder" and not train_dec):
                continue
            optimizers[name].step()
        logs = self._adapt(losses["logits_real"]) if self.augment_p is not None else {}
        return logs | {
            "d_skipped": torch.tensor(float(not train_d), device=real.device),
            "dec_skipped": torch.tensor(float(not train_dec), device=real.device),
            "enc_loss": losses["encoder"].detach(),
            "dec_loss": losses["decoder"].detach(),
            "d_loss": losses["discriminator"].detach(),
            "kl": losses["kl"].detach(),
            "llike": losses["llike"].detach(),
            "d_real": losses["d_real"].detach(),
            "d_fake": losses["d_fake"].detach(),
        }

    @torch.no_grad()
    def _adapt(self, logits_real: torch.Tensor) -> dict[str, torch.Tensor]:
        """ADA: the next step's probability, logged with r_t = E[sign D(x)] of this step."""
        assert self.augment_p is not None
        self.augment_p.copy_(adapt(self.augment_p, logits_real, self.config.augment_target))
        return adaptive_log(self.augment_p, logits_real)

    def _balance(self, bce_real: torch.Tensor, bce_prior: torch.Tensor) -> tuple[bool, bool]:
        """Whether to step D and the decoder (always both without `balance`)."""
        c = self.config
        if not c.balance:
            return True, True
        real, prior = _mean_over_ranks(torch.stack([bce_real, bce_prior]).detach()).tolist()
        train_d = not (real < c.equilibrium - c.margin or prior < c.equilibrium - c.margin)
        train_dec = not (real > c.equilibrium + c.margin or prior > c.equilibrium + c.margin)
        if not (train_d or train_dec):
            return True, True
        return train_d, train_dec

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents (B, latent_dim) [and classes (B,)] -> images (B, C, R, R) in [0, 1]."""
        return self.decode(z, net, labels)

    @torch.no_grad()
    def encode(
        self, x: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images in [0, 1] (B, C, R, R) [and classes (B,)] -> posterior means (B, latent)."""
        y = self.check_labels(labels, x.shape[0])
        net = net if net is not None else self.autoencoder
        param = next(net.parameters())
        mean, _ = cast(AutoEncoder, net).encoder(x.to(param.device, param.dtype) * 2 - 1, y)
        return mean

    @torch.no_grad()
    def decode(
        self, codes: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents (B, latent) [and classes (B,)] -> images (B, C, R, R) in [0, 1]."""
        y = self.check_labels(labels, codes.shape[0])
        net = net if net is not None else self.autoencoder
        return torch.tanh(cast(AutoEncoder, net).decoder(codes, y)).add(1).mul(0.5)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images in [0, 1] [and their classes (B,)] -> decoded posterior means in [0, 1]."""
        return self.decode(self.encode(x, net, labels), net, labels)
