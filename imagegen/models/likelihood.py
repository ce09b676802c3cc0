"""A likelihood model's negative ELBO over many images, batch by batch (eval's bits/dim on
held-out images, and sample's on the images it reconstructs)."""

import torch

from imagegen.models.base import GenerativeModel


def mean_elbo_terms(
    model: GenerativeModel,
    images: torch.Tensor,
    device: torch.device,
    seed: int,
    batch: int,
    labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """The mean over uint8 `images` (N, C, H, W) of each term `model.evaluate` gives (negative
    ELBO in nats, bits/dim, ...): batch means weighted by their sizes, one posterior sample
    each from a generator seeded with `seed` on `device`. A conditional model's images come
    with their classes `labels` (N,)."""
    noise = torch.Generator(device).manual_seed(seed)
    sums: dict[str, float] = {}
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(device).float().div_(255)  # (b, C, H, W) in [0, 1]
        y = None if labels is None else labels[i : i + batch].to(device)
        for k, v in model.evaluate(x, noise, labels=y).items():
            sums[k] = sums.get(k, 0.0) + v * x.shape[0]
    return {k: v / images.shape[0] for k, v in sums.items()}
