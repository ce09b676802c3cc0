"""Building blocks shared by several models.

The DCGAN discriminator (DCGAN, VAE-GAN), and the Gaussian-posterior encoder and the decoder
(VAE, VAE-GAN): stacks of stride-2 4x4 convolutions between 4x4 and the image resolution.
"""

import contextlib
import itertools
import math
from collections.abc import Iterator

import torch
from torch import nn

from imagegen.common.errors import UsageError
from imagegen.common.options import check_range
from imagegen.models.base import OptimizerSettings

RESOLUTIONS = (32, 64, 128)


def adam_optimizers(
    networks: dict[str, nn.Module], train: OptimizerSettings
) -> dict[str, torch.optim.Optimizer]:
    """One Adam per network at the training options' lr and betas; a network named
    "discriminator" at `lr_d` where given. Fused on the CPU and CUDA (one kernel for all of a
    network's parameters: the per-parameter loop was a tenth of a batch-16 step on a CPU)."""
    lr_d = train.lr_d if train.lr_d is not None else train.lr
    return {
        name: torch.optim.Adam(
            net.parameters(),
            lr_d if name == "discriminator" else train.lr,
            (train.beta1, train.beta2),
            fused=next(net.parameters()).device.type in ("cpu", "cuda") or None,
        )
        for name, net in networks.items()
    }


def check_shape(model: str, resolution: int, channels: int) -> None:
    """Refuse resolutions and channel counts the layer stacks are not built for."""
    if resolution not in RESOLUTIONS:
        raise UsageError(
            f"unsupported resolution {resolution} for {model} "
            f"(valid: {', '.join(map(str, RESOLUTIONS))})"
        )
    if channels not in (1, 3, 4):
        raise UsageError(f"channels must be 1, 3 or 4 (RGBA: --transparent), got {channels}")


def check_positive(config: object, *names: str) -> None:
    """Refuse config fields below 1."""
    for name in names:
        check_range(config, name, "[1, inf)")


def num_stages(resolution: int) -> int:
    """Stride-2 stages between 4x4 and `resolution` (3 at 32 px, 4 at 64 px, 5 at 128 px)."""
    return int(math.log2(resolution)) - 2


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), conv biases 0; BatchNorm scale
    N(1, 0.02), shift 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ReferenceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, inside `reference_batch(net, n)`, normalises the whole batch with the
    statistics of its first n images (a reference batch, Salimans et al. 2016: here the real
    images of the step), so that the others are judged by the real images' statistics and
    cannot move them. Elsewhere, and in its parameters and buffers, it is a BatchNorm2d."""

    reference = 0  # images at the start of the batch whose statistics are used; 0: all

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.reference
        if not (self.training and n):
            return super().forward(x)
        ref = x[:n].float()  # (n, C, H, W)
        mean, var = ref.mean((0, 2, 3)), ref.var((0, 2, 3), unbiased=False)  # (C,) each
        if self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None and self.momentum is not None
            with torch.no_grad():
                count = ref.numel() / ref.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * count / max(count - 1, 1), self.momentum)
                self.num_batches_tracked.add_(1)
        scale = self.weight * torch.rsqrt(var + self.eps)  # (C,)
        shift = self.bias - mean * scale
        return (x.float() * scale[:, None, None] + shift[:, None, None]).to(x.dtype)


@contextlib.contextmanager
def reference_batch(net: nn.Module, n: int) -> Iterator[None]:
    """Within the block, `net`'s ReferenceBatchNorm2d layers take their statistics from the
    first n images of each batch."""
    layers = [m for m in net.modules() if isinstance(m, ReferenceBatchNorm2d)]
    for m in layers:
        m.reference = n
    try:
        yield
    finally:
        for m in layers:
            m.reference = 0


def check_d_batch(d_batch: str, d_norm: str) -> None:
    """Refuse a d_batch other than "separate" without BatchNorm in D, which it is about."""
    if d_batch != "separate" and d_norm != "batch":
        raise UsageError(f"d_batch={d_batch} is about BatchNorm in D: it needs d_norm=batch")


def check_sync_bn(d_batch: str, sync_bn: bool) -> None:
    """Refuse SyncBatchNorm with a reference batch: SyncBatchNorm has no reference."""
    if sync_bn and d_batch == "reference":
        raise UsageError("--sync-bn cannot keep d_batch=reference: use joint or separate")


D_NORMS = ("batch", "spectral", "none")
D_ARCHS = ("dcgan", "cnn")


def _cnn_stack(channels: int, width: int, resolution: int, norm: str) -> tuple[nn.Sequential, int]:
    """The "standard CNN" discriminator of the spectral normalisation paper (Miyato et al.
    2018): at each resolution a 3x3 conv then a strided 4x4 conv, LeakyReLU(0.1), and a last
    3x3 conv to 8w channels at 4x4. Deeper than the DCGAN's stack: under spectral
    normalisation, where each layer is 1-Lipschitz, depth is what gives it capacity.
    """
    widths = [width * 2**i for i in range(num_stages(resolution))]  # 32px: w, 2w, 4w
    bias = norm != "batch"
    layers: list[nn.Module] = []
    c_in = channels
    for i, w in enumerate(widths):  # each halves H and W
        layers.append(nn.Conv2d(c_in, w, 3, 1, 1, bias=bias))  # (B, w_i, R_i, R_i)
        if norm == "batch" and i > 0:
            layers.append(ReferenceBatchNorm2d(w))
        layers += [nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(w, w, 4, 2, 1, bias=bias)]
        if norm == "batch":
            layers.append(ReferenceBatchNorm2d(w))
        layers.append(nn.LeakyReLU(0.1, inplace=True))  # (B, w_i, R_i / 2, R_i / 2)
        c_in = w
    top = widths[-1] * 2
    layers.append(nn.Conv2d(c_in, top, 3, 1, 1, bias=bias))  # (B, 8w, 4, 4) at 32 px
    if norm == "batch":
        layers.append(ReferenceBatchNorm2d(top))
    layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers), top


def _down_stack(
    channels: int, width: int, resolution: int, norm: str = "batch"
) -> tuple[nn.Sequential, int]:
    """Strided convs from (C, R, R) to (width * 2^(n-1), 4, 4); no normalisation on the input.

    `norm`: BatchNorm after each later conv (DCGAN), none, or "spectral", which leaves
    BatchNorm out and gives the convs a bias (spectral normalisation is applied by the caller).
    """
    widths = [width * 2**i for i in range(num_stages(resolution))]  # 64px: w, 2w, 4w, 8w
    bias = norm != "batch"
    layers: list[nn.Module] = [
        nn.Conv2d(channels, widths[0], 4, 2, 1, bias=bias),  # (B, w, R/2, R/2)
        nn.LeakyReLU(0.2, inplace=True),
    ]
    for c_in, c_out in itertools.pairwise(widths):  # each halves H and W
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias))
        if norm == "batch":
            layers.append(ReferenceBatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers), widths[-1]


def spectral_normalise(module: nn.Module) -> None:
    """Spectral normalisation (Miyato et al. 2018) of every conv and linear weight, in place.

    One power iteration per forward in training mode; u and v are buffers, so checkpoints and
    exact resume keep them.
    """
    from torch.nn.utils.parametrizations import spectral_norm

    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d | nn.Linear):
            setattr(module, name, spectral_norm(child))
        else:
            spectral_normalise(child)


class Discriminator(nn.Module):
    """DCGAN discriminator: image (B, C, R, R) in [-1, 1] -> real/fake logit (B,).

    Strided convs + BatchNorm + LeakyReLU(0.2), no pooling; `features` is the last hidden
    layer (B, 8w, 4, 4) at 64 px, which the VAE-GAN uses as its similarity metric. With
    `norm="spectral"` every conv is spectrally normalised instead of followed by BatchNorm;
    `arch="cnn"` is the deeper standard CNN of the spectral normalisation paper. With
    `num_classes` it is a projection discriminator (Miyato & Koyama 2018): the logit gains
    <embed(y), sum of the features over positions>.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        resolution: int,
        norm: str = "batch",
        arch: str = "dcgan",
        num_classes: int = 0,
        ramped: bool = False,
    ) -> None:
        super().__init__()
        if norm not in D_NORMS:
            raise UsageError(f"unknown d_norm {norm!r} (valid: {', '.join(D_NORMS)})")
        if arch not in D_ARCHS:
            raise UsageError(f"unknown d_arch {arch!r} (valid: {', '.join(D_ARCHS)})")
        self.norm = norm
        stack = _cnn_stack if arch == "cnn" else _down_stack
        self.main, top = stack(channels, width, resolution, norm)  # (B, top, 4, 4)
        self.head = nn.Conv2d(top, 1, 4, 1, 0, bias=norm != "batch")  # (B, 1, 1, 1)
        self.apply(init_weights)
        if num_classes:  # the class embedding projected onto the features
            self.embed = nn.Embedding(num_classes, top)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        add_cond_weight(self, ramped)  # scales the projection
        if norm == "spectral":
            spectral_normalise(self)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) of images x and, when conditional, their classes `labels` (B,); with
        `with_features`, also the hidden features (B, top, 4, 4)."""
        features = self.main(x)  # (B, top, 4, 4)
        logits = self.head(features).flatten()  # (B,)
        if labels is not None:  # projection: (B, top) . (B, top)
            pooled = features.sum(dim=(2, 3))  # (B, top)
            projection = (self.embed(labels).to(pooled.dtype) * pooled).sum(dim=1)
            if self.cond_weight is not None:
                projection = projection * self.cond_weight.to(projection.dtype)
            logits = logits + projection
        return (logits, features) if with_features else logits


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are chosen by the class (de Vries et al. 2017; the
    generator of Miyato & Koyama 2018): statistics shared, affine parameters per class."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.normal_(self.scale.weight, 1.0, 0.02)  # as init_weights sets BatchNorm's
        nn.init.zeros_(self.shift.weight)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """With `weight` (transitional training), each class's scale and shift are drawn to
        the classes' mean: mean + weight * (its own - mean); 0 is unconditional."""
        h = self.norm(x)  # (B, C, H, W)
        scale, shift = self.scale(labels), self.shift(labels)  # (B, C) each
        if weight is not None:
            mean_scale, mean_shift = self.scale.weight.mean(0), self.shift.weight.mean(0)  # (C,)
            scale = mean_scale + weight * (scale - mean_scale)
            shift = mean_shift + weight * (shift - mean_shift)
        return h * scale[:, :, None, None].to(h.dtype) + shift[:, :, None, None].to(h.dtype)


def add_cond_weight(module: nn.Module, ramped: bool) -> None:
    """Give `module` its conditioning's weight `cond_weight` (transitional training): a buffer
    (state, set by the model at each training step) where the conditioning ramps in, else None."""
    if ramped:
        module.register_buffer("cond_weight", torch.zeros(()))
    else:
        setattr(module, "cond_weight", None)  # noqa: B010 (a plain attribute, not a buffer)


def conditional_stack(
    layers: nn.Sequential,
    h: torch.Tensor,
    labels: torch.Tensor | None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run `layers` on h, giving `labels` (and the conditioning's `weight`, where it ramps in)
    to the ConditionalBatchNorm2d among them."""
    if labels is None:
        return layers(h)
    for layer in layers:
        h = layer(h, labels, weight) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
    return h


def with_class(h: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """h (B, F) with the one-hot class appended (B, F + K): a conditional VAE's conditioning
    by concatenation (Sohn, Lee & Yan 2015); h itself when unconditional."""
    if labels is None:
        return h
    return torch.cat([h, nn.functional.one_hot(labels, num_classes).to(h.dtype)], dim=1)


class ResidualBlock(nn.Module):
    """x + conv3x3(ReLU(BN(conv3x3(ReLU(BN(x)))))), at the same shape (pre-activation, He et al.
    2016): depth for the encoder and decoder at little cost in memory."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _with_blocks(stack: nn.Sequential, blocks: int) -> nn.Sequential:
    """`stack` with `blocks` residual blocks after each of its activations (0: as it is)."""
    if not blocks:
        return stack
    layers: list[nn.Module] = []
    width = 0
    for layer in stack:
        layers.append(layer)
        if isinstance(layer, nn.Conv2d):
            width = layer.out_channels
        if isinstance(layer, nn.LeakyReLU):  # (B, width, R_i, R_i)
            layers += [ResidualBlock(width) for _ in range(blocks)]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """image (B, C, R, R) [and class (B,)] -> diagonal Gaussian posterior: mean, log-variance
    (B, latent). `blocks` residual blocks follow each strided conv."""

    def __init__(
        self,
        channels: int,
        width: int,
        resolution: int,
        latent_dim: int,
        num_classes: int = 0,
        blocks: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        stack, top = _down_stack(channels, width, resolution)  # (B, top, 4, 4)
        self.main = _with_blocks(stack, blocks)
        self.head = nn.Linear(top * 16 + num_classes, 2 * latent_dim)
        self.apply(init_weights)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = with_class(self.main(x).flatten(1), labels, self.num_classes)  # (B, top * 16 [+ K])
        mean, logvar = self.head(h).chunk(2, dim=1)  # (B, latent) each
        return mean, logvar


class Decoder(nn.Module):
    """z (B, latent) [and class (B,)] -> pre-activation image (B, C, R, R): logits or
    pre-sigmoid means. `blocks` residual blocks follow each upsampling conv."""

    def __init__(
        self,
        channels: int,
        width: int,
        resolution: int,
        latent_dim: int,
        num_classes: int = 0,
        blocks: int = 0,
    ) -> None:
        super().__init__()
        n = num_stages(resolution)
        widths = [width * 2 ** (n - 1 - i) for i in range(n)]  # 64px: 8w, 4w, 2w, w
        self.top, self.num_classes = widths[0], num_classes
        self.project = nn.Linear(latent_dim + num_classes, widths[0] * 16)  # -> (B, 8w, 4, 4)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        layers += [ResidualBlock(widths[0]) for _ in range(blocks)]  # (B, 8w, 4, 4)
        for c_in, c_out in itertools.pairwise(widths):  # each doubles H and W
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            layers += [ResidualBlock(c_out) for _ in range(blocks)]
        layers.append(nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1))  # (B, C, R, R)
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        zy = with_class(z, labels, self.num_classes)  # (B, latent [+ K])
        h = self.project(zy).view(z.shape[0], self.top, 4, 4)  # (B, 8w, 4, 4)
        return self.main(h)


class AutoEncoder(nn.Module):
    """Encoder and decoder kept together, so one moving average covers both (and, where the
    model fits one, its sampling prior)."""

    sigma: torch.Tensor  # the optimal-sigma VAE's running sigma (a buffer, where it has one)
    prior: nn.Module  # the mixture prior, where the model fits one

    def __init__(
        self,
        channels: int,
        width: int,
        resolution: int,
        latent_dim: int,
        num_classes: int = 0,
        blocks: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(channels, width, resolution, latent_dim, num_classes, blocks)
        self.decoder = Decoder(channels, width, resolution, latent_dim, num_classes, blocks)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over latent dims: (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reparameterize(
    mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Generator
) -> torch.Tensor:
    """z = mean + sigma * eps with eps ~ N(0, I) from `noise` (so resume stays exact)."""
    eps = torch.randn(mean.shape, generator=noise, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps
