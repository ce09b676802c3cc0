"""Generating images from a model: latents, interpolations, and uint8 images as a PNG holds."""

import re

import torch

from imagegen.common.errors import UsageError
from imagegen.common.progress import Counter, Emit
from imagegen.models.base import GenerativeModel
from imagegen.sampling.images import to_uint8

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


def truncated(z: torch.Tensor, threshold: float | None, g: torch.Generator) -> torch.Tensor:
    """The truncation trick (Brock et al. 2019): every entry of z beyond +-threshold drawn
    again from `g` until none is, so z follows N(0, 1) truncated to [-t, t]. None: z as is."""
    if threshold is None:
        return z
    z = z.clone()
    while (beyond := z.abs() > threshold).any():
        z[beyond] = torch.randn(int(beyond.sum()), generator=g)
    return z


def latents(
    n: int, dim: int, seed: int, interpolate: int | None = None, trunc: float | None = None
) -> torch.Tensor:
    """The latents for a request: n i.i.d. normals, or rows of slerps between random pairs
    (the pairs' ends truncated at `trunc` where given)."""
    g = torch.Generator().manual_seed(seed)
    if not interpolate:
        return truncated(torch.randn(n, dim, generator=g), trunc, g)
    rows = max(1, n // interpolate)
    ends = truncated(torch.randn(rows, 2, dim, generator=g), trunc, g)
    t = torch.linspace(0, 1, interpolate)
    return torch.cat([slerp(ends[r, 0], ends[r, 1], t) for r in range(rows)])


def seed_latents(seeds: list[int], dim: int, trunc: float | None = None) -> torch.Tensor:
    """One latent per seed, each from its own generator (seed s gives the same image in any
    list): (len(seeds), dim)."""
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        out.append(truncated(torch.randn(1, dim, generator=g), trunc, g))
    return torch.cat(out) if out else torch.zeros(0, dim)


MAX_SEEDS = 100_000


def parse_seeds(text: str) -> list[int]:
    """Seeds as `0-63`, `1,5,9-12` or `7`: a list in the order given (repeats refused)."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise UsageError(f"--seeds {text!r}: give seeds as 0-63 or 1,5,9-12")
        first, last = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if last < first:
            raise UsageError(f"--seeds {text!r}: the range {first}-{last} runs backwards")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise UsageError(f"--seeds {text!r}: more than {MAX_SEEDS:,} seeds")
        seeds += range(first, last + 1)
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r} names a seed twice")
    return seeds


def class_grid(n: int, num_classes: int) -> tuple[torch.Tensor, int]:
    """A conditional model's grid of at most n images, one row per class (the first n classes
    where n is fewer): its labels (M,) and the images per row."""
    per = max(1, n // num_classes)
    return torch.arange(min(n, num_classes)).repeat_interleave(per), per


def proportional_labels(n: int, counts: list[int]) -> torch.Tensor:
    """n labels (n,) in the classes' proportions `counts` (largest remainders), interleaved so
    that every prefix keeps the proportions too: the first k of n images evaluated (`fid_at`)
    are a fair sample of the classes, not the first few classes."""
    total = sum(counts)
    exact = [n * c / total for c in counts]
    share = [int(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda k: share[k] - exact[k])
    for k in by_remainder[: n - sum(share)]:
        share[k] += 1
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(share))  # (n,)
    # The j-th label of a class with s of them goes at (j + 1/2) / s of the way (stable: ties
    # in class order), as a largest-remainder apportionment of each prefix would place it.
    if not len(labels):
        return labels
    where = torch.cat([(torch.arange(s, dtype=torch.float64) + 0.5) / s for s in share if s])
    return labels[torch.sort(where, stable=True).indices]


def generate_uint8(
    model: GenerativeModel,
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
