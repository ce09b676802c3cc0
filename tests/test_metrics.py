"""Metrics against direct computations and constructed cases with known answers."""

import numpy as np
import pytest
import scipy.linalg

from imagegen.common.errors import UsageError
from imagegen.evaluation import metrics


def direct_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


@pytest.mark.parametrize("d", [2, 16, 64])
def test_frechet_against_scipy(d: int) -> None:
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    ours = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(direct_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_closed_form_1d() -> None:
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s.
    value = metrics.frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])
    )
    assert value == pytest.approx(4 + 1, rel=1e-12)


def test_fid_of_a_set_with_itself_is_zero_even_when_singular() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(100, 256))  # n < d: a rank-deficient covariance
    mu, sigma = metrics.gaussian_stats(features)
    # ~0 relative to the scale tr(S1) + tr(S2); round-off eigenvalues of the singular
    # covariance contribute about 1e-8 of it.
    scale = 2 * np.trace(sigma)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-7 * scale
    shifted = metrics.frechet_distance(mu, sigma, mu + 1.0, sigma)
    assert shifted == pytest.approx(256.0, rel=1e-6)


def test_kid_known_cases() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 32))
    b = rng.normal(size=(400, 32))
    same, std = metrics.kernel_inception_distance(a, b, subsets=20, subset_size=200)
    assert abs(same) < 0.01 and std >= 0  # unbiased: ~0 for one distribution
    far, _ = metrics.kernel_inception_distance(a, b + 3.0, subsets=20, subset_size=200)
    assert far > 1.0
    # By hand for one subset of 2: k(x, y) = (x.y / d + 1)^3.
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 1.0], [-1.0, 0.0]])
    k = lambda u, v: (u @ v / 2 + 1) ** 3  # noqa: E731
    expected = (
        2 * k(x[0], x[1]) / 2 + 2 * k(y[0], y[1]) / 2 - 2 * np.mean([k(p, q) for p in x for q in y])
    )
    value, _ = metrics.kernel_inception_distance(x, y, subsets=1, subset_size=2)
    assert value == pytest.approx(expected)
    with pytest.raises(UsageError, match="larger than the 400 images"):
        metrics.kernel_inception_distance(a, b, subset_size=401)


def test_precision_recall_constructed() -> None:
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 8))
    assert metrics.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    # Fakes far away: no precision; and no real point lies in their balls either.
    precision, recall = metrics.precision_recall(real, real + 100.0, k=3)
    assert precision == 0.0 and recall == 0.0
    # Mode collapse: fakes all near one real point -> high precision, low recall.
    collapsed = real[:1] + rng.normal(scale=1e-3, size=(300, 8))
    precision, recall = metrics.precision_recall(real, collapsed, k=3)
    assert precision == 1.0 and recall < 0.05


def test_density_coverage_constructed() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 8))
    density, coverage = metrics.density_coverage(real, real.copy(), k=5)
    assert coverage == 1.0 and density == pytest.approx(1.0, abs=0.2)
    density, coverage = metrics.density_coverage(real, real + 100.0, k=5)
    assert density == 0.0 and coverage == 0.0
    collapsed = real[:1] + rng.normal(scale=1e-3, size=(300, 8))
    density, coverage = metrics.density_coverage(real, collapsed, k=5)
    assert coverage < 0.05 and density > 0.1


def test_density_coverage_exact_on_a_line() -> None:
    """Real points 0..9 on a line; k = 2 radii: 2 at both ends, 1 inside. A fake point at 0.5
    lies in the balls of 0 and 1, one at 9.5 in the ball of 9 alone, one at 50 in none:
    density = (2 + 1 + 0) / (k * 3) = 0.5, coverage = |{0, 1, 9}| / 10 = 0.3."""
    real = np.stack([np.arange(10.0), np.zeros(10)], axis=1)
    fake = np.array([[0.5, 0.0], [9.5, 0.0], [50.0, 0.0]])
    density, coverage = metrics.density_coverage(real, fake, k=2)
    assert density == pytest.approx(0.5) and coverage == pytest.approx(0.3)


def test_inception_score_known_cases() -> None:
    uniform = np.zeros((100, 10))
    assert metrics.inception_score(uniform, splits=10)[0] == pytest.approx(1.0)
    confident = np.full((100, 10), -50.0)
    confident[np.arange(100), np.arange(100) % 10] = 50.0  # each split holds all 10 classes
    mean, std = metrics.inception_score(confident, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_known_values() -> None:
    """Sure and evenly spread over k classes in each split: IS = k; one class for all: 1."""
    sure = np.full((100, 12), -50.0)
    sure[np.arange(100), np.arange(100) % 10] = 50.0  # each split of 10: 10 classes, once each
    mean, std = metrics.inception_score(sure, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    same = np.tile(np.random.default_rng(0).normal(size=(1, 12)), (100, 1))
    assert metrics.inception_score(same, splits=10)[0] == pytest.approx(1.0, rel=1e-9)
    # per split, not over all images: split s holds classes 2s and 2s+1 only, so IS = 2 (the
    # marginal of all 100 images would give 20)
    two = np.full((100, 20), -50.0)
    two[np.arange(100), (np.arange(100) // 10) * 2 + np.arange(100) % 2] = 50.0
    assert metrics.inception_score(two, splits=10)[0] == pytest.approx(2.0, rel=1e-6)
