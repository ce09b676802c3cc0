"""The mixture prior fitted to an autoencoder's latents (models/prior.py)."""

import math

import pytest
import torch

from imagegen.models.prior import MixturePrior, fit_mixture


def _clusters(n_per: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three well-separated 4-d Gaussian clusters of different sizes and covariances."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[6.0, 0, 0, 0], [-6.0, 0, 0, 0], [0, 8.0, 0, 0]], dtype=torch.float64)
    scales = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    sizes = [n_per, 2 * n_per, 3 * n_per]
    x = torch.cat(
        [
            centres[i] + scales[i] * torch.randn(s, 4, generator=g, dtype=torch.float64)
            for i, s in enumerate(sizes)
        ]
    )
    weights = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
    return x, centres, weights


def test_a_mixture_fitted_to_known_clusters_recovers_them() -> None:
    x, centres, weights = _clusters()
    w, means, chol, ll = fit_mixture(x, 3, seed=0)
    order = [int(torch.cdist(c[None], means).argmin()) for c in centres]
    assert sorted(order) == [0, 1, 2]  # one component per cluster
    assert torch.allclose(means[order], centres, atol=0.15)
    assert torch.allclose(w[order], weights, atol=0.01)
    variances = torch.diagonal(chol @ chol.transpose(1, 2), dim1=1, dim2=2)[order]  # (3, 4)
    assert torch.allclose(variances.mean(1), torch.tensor([0.25, 1.0, 2.25]).double(), rtol=0.15)
    assert math.isfinite(ll)


def test_transform_draws_from_the_fitted_mixture() -> None:
    """N(0, I) through `transform` lands in each cluster in proportion to its weight, and the
    same z gives the same sample."""
    x, centres, weights = _clusters()
    prior = MixturePrior(4, 3)
    z = torch.randn(30000, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(prior.transform(z), z)  # unfitted: N(0, I) as it is
    prior.fit(x.float(), seed=0)
    samples = prior.transform(z).double()
    nearest = torch.cdist(samples, centres).argmin(1)
    shares = torch.bincount(nearest, minlength=3).double() / len(z)
    assert torch.allclose(shares, weights, atol=0.01)
    for i in range(3):  # each cluster where it was (within the fit's error)
        inside = samples[nearest == i]
        assert torch.allclose(inside.mean(0), centres[i], atol=0.2)
    assert torch.equal(prior.transform(z), prior.transform(z))


def test_transform_is_finite_at_extreme_latents() -> None:
    x, _, _ = _clusters()
    prior = MixturePrior(4, 3)
    prior.fit(x.float(), seed=0)
    z = torch.tensor([[40.0, 0, 0, 0], [-40.0, 0, 0, 0], [0.0, 0, 0, 0]])
    assert torch.isfinite(prior.transform(z)).all()


def test_the_fit_is_seeded_and_refuses_too_few_latents() -> None:
    x, _, _ = _clusters()
    a, b = MixturePrior(4, 3), MixturePrior(4, 3)
    a.fit(x.float(), seed=5)
    b.fit(x.float(), seed=5)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="at least 6 latents"):
        fit_mixture(x[:5], 3, seed=0)


def test_few_latents_fit_fewer_components() -> None:
    """A user's folder of a handful of images still trains and samples: fewer components."""
    x, _, _ = _clusters(n_per=1)  # 6 latents for 10 components
    prior = MixturePrior(4, 10)
    prior.fit(x.float(), seed=0)
    assert int(prior.fitted) == 1 and torch.isclose(prior.weights.sum(), torch.tensor(1.0))
    assert torch.isfinite(prior.transform(torch.randn(50, 4))).all()
    alone = MixturePrior(4, 10)
    assert math.isnan(alone.fit(x[:1].float(), seed=0)) and int(alone.fitted) == 0
