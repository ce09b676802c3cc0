"""Generating images from a model: latents, interpolations, and uint8 images as a PNG holds."""

import torch

from imagegen.images import to_uint8
from imagegen.progress import Counter, Emit

BATCH = 256


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a, b (D,) at fractions t (K,) -> (K, D)."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1.0, 1.0))
    t = t[:, None]
    if omega.abs() < 1e-6:  # (nearly) parallel: plain linear interpolation
        return (1 - t) * a + t * b
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def latents(n: int, dim: int, seed: int, interpolate: int | None = None) -> torch.Tensor:
    """The latents for a request: n i.i.d. normals, or rows of slerps between random pairs."""
    g = torch.Generator().manual_seed(seed)
    if not interpolate:
        return torch.randn(n, dim, generator=g)
    rows = max(1, n // interpolate)
    ends = torch.randn(rows, 2, dim, generator=g)
    t = torch.linspace(0, 1, interpolate)
    return torch.cat([slerp(ends[r, 0], ends[r, 1], t) for r in range(rows)])


def class_grid(n: int, num_classes: int) -> tuple[torch.Tensor, int]:
    """A conditional model's grid of at most n images, one row per class (the first n classes
    where n is fewer): its labels (M,) and the images per row."""
    per = max(1, n // num_classes)
    return torch.arange(min(n, num_classes)).repeat_interleave(per), per


def proportional_labels(n: int, counts: list[int]) -> torch.Tensor:
    """n labels (n,) in the classes' proportions `counts` (largest remainders), class by class."""
    total = sum(counts)
    exact = [n * c / total for c in counts]
    share = [int(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda k: share[k] - exact[k])
    for k in by_remainder[: n - sum(share)]:
        share[k] += 1
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(share))


def generate_uint8(
    model: torch.nn.Module,
    z: torch.Tensor,
    device: torch.device,
    net: torch.nn.Module | None = None,
    emit: Emit | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Images for latents z, quantised exactly as a saved PNG: uint8 (N, C, H, W) on the CPU.

    `net` is the sampling network to use (an EMA copy); the model's own by default. A
    conditional model takes the images' classes `labels` (N,). `emit` hears a "progress"
    event after each batch.
    """
    out, made = [], Counter(emit, len(z))
    for i in range(0, len(z), BATCH):
        y = None if labels is None else labels[i : i + BATCH].to(device)
        out.append(to_uint8(model.generate(z[i : i + BATCH].to(device), net, labels=y).cpu()))
        made.add(out[-1].shape[0])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.uint8)
