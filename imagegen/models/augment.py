"""Differentiable augmentation of a discriminator's inputs (DiffAugment, Zhao et al. 2020).

The same random transformations are applied to real and generated images whenever the
discriminator sees them, in its step and in the generator's; gradients flow through them to
the generator. Every random number comes from the training noise generator, so a resumed run
draws the same ones. Images are in [-1, 1], shape (B, C, H, W).

    color        brightness + U(-0.5, 0.5); saturation x U(0, 2); contrast x U(0.5, 1.5)
    translation  shift by up to 1/8 of the size in each direction, zeros brought in
    cutout       one square of half the size, at a random place, set to 0

Adaptive strength (Karras et al. 2020, ADA): each image is augmented with probability p, which
rises while the discriminator tells real images apart too surely (the mean sign of its logits
on real images above a target) and falls below it. p starts at 0, so a discriminator that does
not overfit sees few augmented images.
"""

import torch
import torch.distributed as dist

from imagegen.common.errors import UsageError

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str) -> tuple[str, ...]:
    """`"color,translation"` -> ("color", "translation"); unknown names list the valid ones."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise UsageError(
            f"unknown augmentation {', '.join(unknown)} (valid: {', '.join(POLICIES)}, "
            "comma-separated, or empty for none)"
        )
    return names


def check_augment(policy: str, target: float) -> None:
    """A model config's augmentation options: a known policy, a target in [0, 1) that has a
    policy to adapt."""
    parse_policy(policy)
    if not 0.0 <= target < 1.0:
        raise UsageError(f"augment_target must be in [0, 1), got {target}")
    if target and not policy:
        raise UsageError("augment_target needs an augmentation: set augment too")


def _uniform(x: torch.Tensor, noise: torch.Generator, low: float, high: float) -> torch.Tensor:
    """One U(low, high) per image, shaped (B, 1, 1, 1) to broadcast."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=noise, device=x.device, dtype=torch.float32)
    return (u * (high - low) + low).to(x.dtype)


def color(x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
    """Random brightness, saturation (colour images only) and contrast."""
    x = x + _uniform(x, noise, -0.5, 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        x = (x - mean) * _uniform(x, noise, 0.0, 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * _uniform(x, noise, 0.5, 1.5) + mean


def _offsets(x: torch.Tensor, noise: torch.Generator, high: int) -> torch.Tensor:
    """Integer offsets in [0, high] per image and axis: (B, 2) on x's device."""
    return torch.randint(0, high + 1, (x.shape[0], 2), generator=noise, device=x.device)


def translation(x: torch.Tensor, noise: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio x its size along each axis; zeros fill the gap."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift = _offsets(x, noise, 2 * sh) - torch.tensor([sh, sw], device=x.device)  # (B, 2)
    padded = torch.nn.functional.pad(x, (sw, sw, sh, sh))  # (B, C, H + 2sh, W + 2sw)
    rows = torch.arange(h, device=x.device)[None, :] + sh - shift[:, :1]  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] + sw - shift[:, 1:]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, noise: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio x the size per image, centred anywhere in the image."""
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    centre = _offsets(x, noise, max(h, w) - 1) % torch.tensor([h, w], device=x.device)
    top, left = centre[:, :1] - ch // 2, centre[:, 1:] - cw // 2  # (B, 1) each
    rows = torch.arange(h, device=x.device)[None, :]  # (1, H)
    cols = torch.arange(w, device=x.device)[None, :]  # (1, W)
    inside_r = (rows >= top) & (rows < top + ch)  # (B, H)
    inside_c = (cols >= left) & (cols < left + cw)  # (B, W)
    keep = ~(inside_r[:, :, None] & inside_c[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


# p moves by one batch's share of this many images per step: from 0 to 1 over 100,000 images
# at the fastest (Karras et al. take 500,000 for runs of millions of images).
ADAPT_IMAGES = 100_000


def diff_augment(
    x: torch.Tensor,
    policy: tuple[str, ...],
    noise: torch.Generator,
    p: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the policy's transformations in order; the identity for an empty policy. With a
    probability `p` (a 0-d tensor), each image is transformed with that probability and left
    as it is otherwise (the same random numbers are drawn either way)."""
    out = x
    for name in policy:
        out = _OPS[name](out, noise)
    if p is None:
        return out
    keep = torch.rand(x.shape[0], 1, 1, 1, generator=noise, device=x.device) >= p  # (B,1,1,1)
    return torch.where(keep, x, out)


def adaptive_log(p: torch.Tensor, logits_real: torch.Tensor) -> dict[str, torch.Tensor]:
    """ADA's state for the log: p for the next step and r_t = E[sign D(x)] over this step's
    real images (this process's), the quantity p is steered by."""
    rate = torch.sign(logits_real.detach().float()).mean()
    return {"augment_p": p.clone(), "augment_rt": rate}


def adapt(p: torch.Tensor, logits_real: torch.Tensor, target: float) -> torch.Tensor:
    """The next step's probability: up while E[sign(D(x))] over real images is above `target`,
    down while below, by one batch's share of ADAPT_IMAGES, within [0, 1]. Under torchrun the
    sign is averaged over every process's batch, so that all keep the same p."""
    signs = torch.sign(logits_real.detach().float()).sum().reshape(1)  # (1,)
    count = torch.tensor([float(logits_real.numel())], device=signs.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(signs)
        count = count * dist.get_world_size()
    rate = (signs / count).squeeze(0)
    return (p + torch.sign(rate - target) * count.squeeze(0) / ADAPT_IMAGES).clamp(0.0, 1.0)
