"""DCGAN (Radford, Metz & Chintala 2015) with the non-saturating GAN loss.

Generator: ConvTranspose + BatchNorm + ReLU, tanh output. Discriminator: strided Conv +
BatchNorm + LeakyReLU(0.2), no pooling, no BatchNorm on its input layer. Weights N(0, 0.02),
BatchNorm scale N(1, 0.02). The layer stack follows from the resolution (32, 64 or 128).

The config's defaults are the paper's. Options replace parts of the recipe: spectral
normalisation in D instead of BatchNorm (Miyato et al. 2018), the hinge loss (Lim & Ye 2017;
Miyato et al. 2018), differentiable augmentation of D's inputs (Zhao et al. 2020) and the R1
gradient penalty on real images (Mescheder, Geiger & Nowozin 2018). With `num_classes` the
model is class-conditional as in Miyato & Koyama 2018: conditional BatchNorm in G (a scale and
shift per class) and a projection discriminator, optionally with transitional training
(Shahbazi et al. 2022): the conditioning ramped in over the first D steps.
"""

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

from imagegen.common.errors import UsageError
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
    ConditionalBatchNorm2d,
    Discriminator,
    adam_optimizers,
    add_cond_weight,
    check_d_batch,
    check_positive,
    check_shape,
    check_sync_bn,
    conditional_stack,
    init_weights,
    num_stages,
    reference_batch,
)
from imagegen.models.gan_losses import discriminator_loss, generator_loss


@dataclass(frozen=True)
class DCGANConfig:
    """Architecture of a DCGAN."""

    resolution: int = 64
    channels: int = 3
    latent_dim: int = 100
    g_width: int = 64  # generator channels at full resolution (pytorch/examples' ngf)
    d_width: int = 64  # discriminator channels at full resolution (ndf)
    d_norm: Literal["batch", "spectral", "none"] = "batch"  # normalisation in D
    d_arch: Literal["dcgan", "cnn"] = "dcgan"  # cnn: the deeper standard CNN (Miyato et al.)
    # how D's BatchNorm batches real and generated images. separate: each kind its own batch
    # (pytorch/examples), which normalises away a colour or contrast shift that a whole batch
    # shares; joint: one batch of both kinds, in D's step and G's; reference: one batch,
    # normalised with the real images' statistics alone
    d_batch: Literal["separate", "joint", "reference"] = "separate"
    loss: Literal["bce", "hinge"] = "bce"  # bce: the paper's loss, non-saturating for G
    augment: str = ""  # DiffAugment policy: color, translation, cutout (comma-separated)
    # > 0: augment each image with a probability adapted to keep E[sign(D(x))] at this (ADA
    # uses 0.6); 0: augment every image
    augment_target: float = 0.0
    # > 0: add (r1_gamma / 2) E||grad_x D(x)||^2 over the real images to D's loss (R1)
    r1_gamma: float = 0.0
    # > 1: lazy R1 (StyleGAN2, Karras et al. 2020): the penalty on every r1_every-th D step
    # only, weighted r1_gamma * r1_every, so its double backward is paid that much less often
    r1_every: int = 1
    # > 0: class-conditional on this many classes (set by `train --conditional` from the data)
    num_classes: int = 0
    # cond_end > 0 (conditional): transitional training (Shahbazi et al. 2022, "Collapse by
    # conditioning"): the conditioning's weight rises linearly from 0 at D step cond_start to
    # 1 at cond_end (G's per-class BatchNorm scale and shift drawn to their class mean, D's
    # projection scaled), so the model first learns the data as one, then its classes
    cond_start: int = 0
    cond_end: int = 0

    def __post_init__(self) -> None:
        check_shape("dcgan", self.resolution, self.channels)
        check_range(self, "num_classes", "[0, inf)")
        check_positive(self, "latent_dim", "g_width", "d_width")
        check_augment(self.augment, self.augment_target)
        check_d_batch(self.d_batch, self.d_norm)

    def check_training(self, train: TrainingSettings) -> None:
        """Training options this model cannot train with."""
        check_sync_bn(self.d_batch, train.sync_bn)
        check_range(self, "r1_gamma", "[0, inf)")
        check_positive(self, "r1_every")  # without r1_gamma there is no penalty to space out
        check_range(self, "cond_start", "[0, inf)")
        check_range(self, "cond_end", f"[{self.cond_start}, inf)")
        if self.cond_end and not self.num_classes:
            raise UsageError("cond_start and cond_end ramp in a conditioning: train --conditional")

    @property
    def ramped(self) -> bool:
        """Whether the conditioning ramps in (transitional training)."""
        return bool(self.num_classes and self.cond_end)

    def training_said(self) -> str:
        """What the run's first line says of this config beyond the data ("" for nothing)."""
        if not self.ramped:
            return ""
        return (
            f"the conditioning ramps in from D step {self.cond_start} to {self.cond_end} "
            "(transitional training)"
        )


class Generator(nn.Module):
    """z (B, latent_dim) [and classes (B,)] -> image (B, C, R, R) in [-1, 1]."""

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        n, w = num_stages(config.resolution), config.g_width
        widths = [w * 2 ** (n - 1 - i) for i in range(n)]  # 64px: 8w, 4w, 2w, w

        def norm(c: int) -> nn.Module:
            k = config.num_classes
            return ConditionalBatchNorm2d(c, k) if k else nn.BatchNorm2d(c)

        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.latent_dim, widths[0], 4, 1, 0, bias=False),  # (B, 8w, 4, 4)
            norm(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in itertools.pairwise(widths):  # each doubles H and W
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                norm(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [
            nn.ConvTranspose2d(widths[-1], config.channels, 4, 2, 1, bias=False),  # (B, C, R, R)
            nn.Tanh(),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)
        add_cond_weight(self, config.ramped)  # pulls each class's BatchNorm to the mean

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # (B, latent, 1, 1) -> (B, C, R, R)
        weight = cast(torch.Tensor | None, self.cond_weight)
        return conditional_stack(self.main, z[:, :, None, None], labels, weight)


def r1_penalty(logits_real: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E||grad_x D(x)||^2 over the batch: `logits_real` (B,) computed from `x` (B, C, R, R),
    which requires grad. Differentiable (create_graph), so D's step can descend on it."""
    (grad,) = torch.autograd.grad(logits_real.sum(), x, create_graph=True)  # (B, C, R, R)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


class DCGAN(GenerativeModel):
    """Generator and discriminator, trained by alternating D and G steps."""

    ema_module = "generator"  # the module whose moving average is used for sampling
    normalisation = "pixels in [0, 1] mapped to [-1, 1]; tanh output"
    standing_statistics = True  # the generator's BatchNorm, under averaged weights
    config: DCGANConfig
    d_steps: torch.Tensor  # buffers, where the config asks for them
    last_r1: torch.Tensor

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(
            config.channels,
            config.d_width,
            config.resolution,
            config.d_norm,
            config.d_arch,
            config.num_classes,
            ramped=config.ramped,
        )
        self.policy = parse_policy(config.augment)
        if config.augment_target:  # the adaptive probability: state, saved with the weights
            self.register_buffer("augment_p", torch.zeros(()))
        self.augment_p: torch.Tensor | None = getattr(self, "augment_p", None)
        if config.r1_every > 1 or config.ramped:  # D steps taken: state, so a resumed run
            # keeps its rhythm
            self.register_buffer("d_steps", torch.zeros((), dtype=torch.long))
        if config.r1_every > 1:
            # the last penalty computed, logged between penalties: state, so that a resumed
            # run logs what the uninterrupted one does
            self.register_buffer("last_r1", torch.zeros(()))
        self._d_steps: int | None = None  # its host copy, read from the buffer once

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def not_compiled(self) -> dict[str, str]:
        # torch.compile's autograd (aot_autograd) has no double backward, which R1 takes
        # through D; G is not in it and compiles.
        if self.config.r1_gamma:
            return {"discriminator": "R1 takes a double backward through it"}
        return {}

    def configure_optimizers(self, train: OptimizerSettings) -> dict[str, torch.optim.Optimizer]:
        """Adam for each network (the DCGAN paper: lr 2e-4, betas (0.5, 0.999)); D's lr is
        `lr_d` where given."""
        return adam_optimizers(self.networks(), train)

    def _d_logits(
        self,
        d: nn.Module,
        x: torch.Tensor,
        fake: torch.Tensor,
        noise: torch.Generator,
        y: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits on real and generated images, each (B,), through the augmentation.

        With BatchNorm in D and d_batch "separate" the two batches go through separately (its
        batch statistics stay those of one kind of image, as in pytorch/examples); otherwise
        in one call.
        """
        if self.policy:
            p = self.augment_p
            x, fake = (
                diff_augment(x, self.policy, noise, p),
                diff_augment(fake, self.policy, noise, p),
            )
        if self.config.d_norm == "batch" and self.config.d_batch == "separate":
            return d(x, y), d(fake, y)
        logits = self._together(d, x, fake, y)  # (2B,)
        return logits[: x.shape[0]], logits[x.shape[0] :]

    def _together(
        self, d: nn.Module, x: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """D's logits (2B,) on real and generated images in one batch (both of classes y,
        when conditional); with d_batch "reference" its BatchNorm takes its statistics from
        the real ones alone."""
        n = x.shape[0] if self.config.d_batch == "reference" else 0  # 0: the whole batch
        with reference_batch(d, n):
            return d(torch.cat([x, fake]), None if y is None else torch.cat([y, y]))

    def training_step(
        self,
        real: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        noise: torch.Generator,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One D step and one G step on a batch `real` (B, C, R, R) in [0, 1]; a conditional
        model takes the batch's classes `labels` (B,) and generates images of the same classes."""
        generator, discriminator = self.net("generator"), self.net("discriminator")
        y = self.check_labels(labels, real.shape[0])
        d_step = self._count_d_step()
        if self.config.ramped:
            self._set_cond_weight(d_step)
        x = real * 2 - 1  # (B, C, R, R) in [-1, 1]
        z = torch.randn(x.shape[0], self.latent_dim, generator=noise, device=x.device)
        fake = generator(z, y)  # (B, C, R, R)

        # Discriminator: maximise log D(x) + log(1 - D(G(z))) (or the hinge version).
        opt_d, opt_g = optimizers["discriminator"], optimizers["generator"]
        opt_d.zero_grad(set_to_none=True)
        gamma = self.config.r1_gamma * self.config.r1_every if self._r1_due(d_step) else 0.0
        x_d = x.detach().requires_grad_(True) if gamma else x  # R1: the gradient at x
        logits_real, logits_fake = self._d_logits(discriminator, x_d, fake.detach(), noise, y)
        d_loss = discriminator_loss(logits_real, logits_fake, self.config.loss)
        r1 = r1_penalty(logits_real, x_d) if gamma else None
        (d_loss if r1 is None else d_loss + gamma / 2 * r1).backward()
        if r1 is not None and self.config.r1_every > 1:
            self.last_r1.copy_(r1.detach())
        opt_d.step()
        if self.augment_p is not None:
            with torch.no_grad():
                self.augment_p.copy_(adapt(self.augment_p, logits_real, self.config.augment_target))

        # Generator: maximise log D(G(z)) through the updated discriminator. D is frozen and
        # called unwrapped: under DDP only G's gradients are averaged in this backward.
        opt_g.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        g_loss = generator_loss(self._g_logits(x, fake, noise, y), self.config.loss)
        g_loss.backward()
        self.discriminator.requires_grad_(True)
        opt_g.step()

        logs = {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": torch.sigmoid(logits_real).mean().detach(),
            "d_fake": torch.sigmoid(logits_fake).mean().detach(),
        }
        if self.augment_p is not None:
            logs |= self._adaptive_log(logits_real)
        # lazy R1: the last penalty computed, so that a log line's mean is not diluted
        if self.config.r1_gamma and self.config.r1_every > 1:
            return logs | {"r1": self.last_r1.clone()}
        return logs | ({"r1": r1.detach()} if r1 is not None else {})

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        self._d_steps = None  # lazy R1's step count: read again from the loaded buffer
        if hasattr(self, "last_r1") and "last_r1" not in state_dict:  # saved before it was kept
            state_dict = {**state_dict, "last_r1": self.last_r1.detach().clone()}
        return super().load_state_dict(state_dict, *args, **kwargs)

    def _count_d_step(self) -> int | None:
        """This D step's index (from 0), counted where a schedule needs it (lazy R1, the
        conditioning's ramp); None where nothing does."""
        if not hasattr(self, "d_steps"):
            return None
        if self._d_steps is None:  # the first step of this process: one host read
            self._d_steps = int(self.d_steps)
        step = self._d_steps
        self._d_steps += 1
        self.d_steps.add_(1)
        return step

    def _r1_due(self, d_step: int | None) -> bool:
        """Whether this D step takes the R1 penalty (every step, or every r1_every-th)."""
        if not self.config.r1_gamma or self.config.r1_every == 1:
            return bool(self.config.r1_gamma)
        assert d_step is not None
        return d_step % self.config.r1_every == 0

    def conditioning_weight(self, d_step: int) -> float:
        """The conditioning's weight at D step `d_step`: 0 before cond_start, 1 from cond_end,
        linear between (transitional training)."""
        start, end = self.config.cond_start, self.config.cond_end
        if d_step >= end:
            return 1.0
        return max(0.0, (d_step - start) / (end - start))

    def _set_cond_weight(self, d_step: int | None) -> None:
        assert d_step is not None
        weight = self.conditioning_weight(d_step)
        for net in (self.generator, self.discriminator):
            cast(torch.Tensor, net.cond_weight).fill_(weight)

    def _g_logits(
        self,
        x: torch.Tensor,
        fake: torch.Tensor,
        noise: torch.Generator,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """D's logits (B,) on the generated images in G's step, through the augmentation. With
        d_batch "joint" or "reference" the real images go through with them, as in D's step:
        they set the BatchNorm statistics the generated images are judged by."""
        d, augment = self.discriminator, self.policy
        seen = diff_augment(fake, augment, noise, self.augment_p) if augment else fake
        if self.config.d_batch == "separate":
            return d(seen, y)
        anchor = diff_augment(x, augment, noise, self.augment_p) if augment else x
        return self._together(d, anchor, seen, y)[x.shape[0] :]  # (B,)

    def _adaptive_log(self, logits_real: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.augment_p is not None
        return adaptive_log(self.augment_p, logits_real)

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, net: nn.Module | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents (B, latent_dim) [and classes (B,)] -> images (B, C, R, R) in [0, 1]."""
        net = net if net is not None else self.generator
        y = self.check_labels(labels, z.shape[0])
        return net(z, y).add(1).mul(0.5).clamp(0, 1)
