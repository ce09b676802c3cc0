"""Sample-quality metrics on feature vectors: FID, KID, precision/recall, density/coverage.

Each function takes features of real (reference) and generated images as (N, D) arrays. FID's
statistics and the Fréchet distance are computed in float64; the k-NN metrics' decisions are
those of float64 distances (neighbours.py: float32 matrix products, doubtful pairs again).
"""

from dataclasses import dataclass

import numpy as np
import torch

from imagegen.common.errors import UsageError
from imagegen.evaluation import neighbours

FID_FULL_RANK = 2048  # fewer samples than features: the covariance is rank-deficient


def gaussian_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.shape[0] < 2:
        raise UsageError(f"need at least 2 images for FID statistics, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), stably, in float64.

    tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2): a symmetric PSD matrix, so its square root
    comes from eigvalsh with negative round-off clipped. No complex parts, no sqrtm
    iterations that fail on near-singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise UsageError(f"statistics of different sizes: {mu1.shape} and {mu2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^1/2
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3: mean and std over subsets."""
    n = min(real.shape[0], fake.shape[0])
    if subset_size > n:
        raise UsageError(
            f"KID subset size {subset_size} is larger than the {n} images available; "
            "use a smaller --kid-subset-size or more images"
        )
    if subset_size < 2:
        raise UsageError("KID needs subsets of at least 2 images")
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    values = []
    for _ in range(subsets):
        x = np.asarray(real[rng.choice(real.shape[0], subset_size, replace=False)], np.float64)
        y = np.asarray(fake[rng.choice(fake.shape[0], subset_size, replace=False)], np.float64)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        m = subset_size
        mmd = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` disjoint parts."""
    p = torch.softmax(torch.as_tensor(np.asarray(logits), dtype=torch.float64), dim=1)
    if p.shape[0] < splits:
        raise UsageError(f"Inception Score needs at least {splits} images, got {p.shape[0]}")
    scores = []
    for part in torch.chunk(p, splits):
        marginal = part.mean(dim=0, keepdim=True)
        kl = (part * (torch.log(part + 1e-12) - torch.log(marginal + 1e-12))).sum(dim=1)
        scores.append(float(torch.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def manifold_metrics(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    pr_k: int | None = 3,
    dc_k: int | None = 5,
    tile: int = neighbours.TILE,
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, k-NN balls with `pr_k`) and
    density and coverage (Naeem et al. 2020, the real samples' `dc_k`-NN balls).

    Distances from float32 matrix products, every decision they leave in doubt taken again
    in float64 (neighbours.py): the float64 computation's results, a tile at a time (never an
    N x N matrix). One pass over real x real, one over fake x fake (for recall) and one over
    real x fake serve all four metrics.
    """
    r = neighbours.Points.of(np.asarray(real))
    f = neighbours.Points.of(np.asarray(fake), r.centre)
    ks = tuple(k for k in (pr_k, dc_k) if k is not None)
    if len(r) <= max(ks) or (pr_k is not None and len(f) <= pr_k):
        smallest = min(len(r), len(f)) if pr_k is not None else len(r)
        raise UsageError(
            f"need more than k={max(ks)} images for nearest neighbours, got {smallest}"
        )
    r_radii = neighbours.radii_sq(r, ks, tile)
    balls = {}
    if pr_k is not None:
        balls["precision"] = neighbours.Ball(r_radii[pr_k], of_rows=True)
        balls["recall"] = neighbours.Ball(neighbours.radii_sq(f, (pr_k,), tile)[pr_k], False)
    if dc_k is not None:
        balls["density"] = neighbours.Ball(r_radii[dc_k], of_rows=True)
    precise = torch.zeros(len(f), dtype=torch.bool)  # fake inside some real ball
    recalled = torch.zeros(len(r), dtype=torch.bool)  # real inside some fake ball
    covered = torch.zeros(len(r), dtype=torch.bool)  # real ball holding some fake
    inside_count = 0
    for inside in neighbours.ball_pairs(r, f, balls, tile):  # pairs (real i, fake j)
        if pr_k is not None:
            precise[inside["precision"][1]] = True
            recalled[inside["recall"][0]] = True
        if dc_k is not None:
            inside_count += len(inside["density"][0])
            covered[inside["density"][0]] = True
    out: dict[str, float] = {}
    if pr_k is not None:
        out["precision"] = float(precise.double().mean())
        out["recall"] = float(recalled.double().mean())
    if dc_k is not None:
        out["density"] = inside_count / (dc_k * len(f))
        out["coverage"] = float(covered.double().mean())
    return out


@dataclass(frozen=True)
class Neighbours:
    """Each generated image's nearest reference image, against that image's own nearest."""

    distance: torch.Tensor  # (N_fake,) to the nearest reference image
    index: torch.Tensor  # (N_fake,) which reference image that is
    own: torch.Tensor  # (N_fake,) that reference image's distance to its nearest other one

    @property
    def ratio(self) -> torch.Tensor:
        """distance / own (N_fake,): about 1 or more for a new image, 0 for a copy."""
        return self.distance / self.own.clamp_min(1e-12)


def nearest_neighbours(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    tile: int = neighbours.TILE,
) -> Neighbours:
    """For each generated image, the nearest reference image and the distances above, exact
    as in float64 (neighbours.py), a tile at a time (never an N x N matrix)."""
    r = neighbours.Points.of(np.asarray(real))
    f = neighbours.Points.of(np.asarray(fake), r.centre)
    if len(r) < 2:
        raise UsageError(f"need at least 2 reference images for nearest neighbours, got {len(r)}")
    own = neighbours.radii_sq(r, (1,), tile)[1].sqrt()  # (N_real,)
    d, index = neighbours.kth_nearest(f, r, (1,), tile)[1]
    return Neighbours(d.sqrt(), index, own[index])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls."""
    m = manifold_metrics(real, fake, pr_k=k, dc_k=None)
    return m["precision"], m["recall"]


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) with the real samples' k-NN balls."""
    m = manifold_metrics(real, fake, pr_k=None, dc_k=k)
    return m["density"], m["coverage"]
