"""The k-NN metrics' neighbours: float32 matrix products, the float64 computation's decisions."""

import numpy as np
import pytest
import torch

from imagegen.evaluation import metrics, neighbours


def _brute_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


def _crowded(n: int, seed: int) -> torch.Tensor:
    """Two tight clusters far apart (no common centre brings them near the origin): float32's
    ||a||² + ||b||² - 2ab cannot tell the distances within a cluster apart (its error is
    larger than the gaps), float64 can."""
    g = torch.Generator().manual_seed(seed)
    sides = torch.where(torch.arange(n) % 2 == 0, 100.0, -100.0).double()[:, None]
    return sides + torch.randn(n, 64, generator=g, dtype=torch.float64) * 1e-2


@pytest.mark.parametrize("tile", [16, 4096])  # many tiles (symmetry, merging) ... one
def test_kth_nearest_is_exact_where_float32_alone_is_wrong(tile: int) -> None:
    x = _crowded(300, 0)
    points = neighbours.Points.of(x)
    _, fast_index = neighbours._candidates(points, None, 1, tile)
    d = _brute_sq(x, x).fill_diagonal_(float("inf"))
    want = d.sort(dim=1, stable=True)
    assert (fast_index[:, 0] != want.indices[:, 0]).float().mean() > 0.5  # the trap is real
    got = neighbours.kth_nearest(points, None, (1, 3, 5), tile)
    for k in (1, 3, 5):
        assert torch.equal(got[k][1], want.indices[:, k - 1])
        assert torch.equal(got[k][0], want.values[:, k - 1])


def test_kth_nearest_between_two_sets_and_with_few_points() -> None:
    a, b = _crowded(40, 1), _crowded(9, 2)
    pa = neighbours.Points.of(a)
    with pytest.raises(ValueError, match="share one centre"):
        neighbours.kth_nearest(pa, neighbours.Points.of(b), (1,), 8)
    got = neighbours.kth_nearest(pa, neighbours.Points.of(b, pa.centre), (1, 9), 8)
    want = _brute_sq(a, b).sort(dim=1, stable=True)
    assert torch.equal(got[1][1], want.indices[:, 0])
    assert torch.equal(got[9][0], want.values[:, 8])  # every point a candidate


def _manifold_float64(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Precision/recall (k 3) and density/coverage (k 5) from whole float64 matrices."""
    d = _brute_sq(real, fake)

    def radii(x: torch.Tensor, k: int) -> torch.Tensor:
        return _brute_sq(x, x).kthvalue(k + 1, dim=1).values

    inside = d <= radii(real, 5)[:, None]
    return {
        "precision": float((d <= radii(real, 3)[:, None]).any(0).double().mean()),
        "recall": float((d <= radii(fake, 3)[None, :]).any(1).double().mean()),
        "density": float(inside.sum()) / (5 * fake.shape[0]),
        "coverage": float(inside.any(1).double().mean()),
    }


@pytest.mark.parametrize("tile", [7, 64, 4096])
def test_manifold_metrics_decide_as_float64_does(tile: int) -> None:
    real, fake = _crowded(150, 3), _crowded(120, 4) + 2e-3
    want = _manifold_float64(real, fake)
    assert 0 < want["precision"] < 1 and 0 < want["recall"] < 1  # decisions to get wrong
    assert metrics.manifold_metrics(real.numpy(), fake.numpy(), 3, 5, tile=tile) == want


def test_manifold_metrics_on_float32_features_like_pool3() -> None:
    rng = np.random.default_rng(0)
    real = rng.gamma(2.0, 0.2, size=(400, 2048)).astype(np.float32)
    fake = (rng.gamma(2.0, 0.2, size=(300, 2048)) * 1.05).astype(np.float32)
    want = _manifold_float64(torch.as_tensor(real).double(), torch.as_tensor(fake).double())
    assert metrics.manifold_metrics(real, fake, 3, 5, tile=128) == want


def test_manifold_metrics_on_clustered_features_near_the_balls() -> None:
    """Features with structure (clusters of different spreads; fakes near the reals of 8 of
    the 12, shrunk and blurred): many pairs lie near a ball's edge, where float32 must hand
    over to float64."""
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(12, 256, generator=g, dtype=torch.float64) * 3
    spread = torch.rand(12, 1, generator=g, dtype=torch.float64) + 0.2
    pick = torch.randint(0, 12, (500,), generator=g)
    real = centres[pick] + torch.randn(500, 256, generator=g, dtype=torch.float64) * spread[pick]
    kept = real[pick < 8]
    fake = kept * 0.9 + torch.randn(len(kept), 256, generator=g, dtype=torch.float64) * 0.6
    real, fake = real.float().double(), fake.float().double()  # float32 features, as pool3's
    want = _manifold_float64(real, fake)
    assert 0.5 < want["precision"] < 0.8 and 0.5 < want["recall"] < 0.8
    assert metrics.manifold_metrics(real.float().numpy(), fake.float().numpy(), 3, 5, 64) == want
