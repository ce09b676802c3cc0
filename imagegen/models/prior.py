"""A sampling prior fitted after the encoder: a Gaussian mixture on the training latents.

An autoencoder's posterior means do not fill N(0, I): where the KL term is weak (a sharp
likelihood) they sit in a smaller, lumpier region, and decoding N(0, I) draws gives images of
nowhere. An ex-post density on the encoded training images (Ghosh et al. 2020: a full-covariance
Gaussian mixture; Dai & Wipf 2019 use a second VAE) samples where the data is. Shared by the
VAE and the VAE-GAN; its buffers live in the sampling network, so the EMA copy, checkpoints and
weights-only files carry it.

Sampling keeps the model contract (`generate(z)` with z ~ N(0, I)): `transform` maps a standard
normal z to a mixture sample exactly. u = Phi(z_1) picks component k from the cumulative weights,
and its position inside k's interval, rescaled to (0, 1), gives z_1 back as a fresh standard
normal independent of k; then x = mean_k + L_k z. The same z gives the same sample on reload.
"""

import math

import torch
from torch import nn

FIT_ITERATIONS = 100  # EM iterations (the log-likelihood has settled long before, in tests)
RIDGE = 1e-4  # added to each covariance's diagonal, relative to the data's mean variance


class MixturePrior(nn.Module):
    """A full-covariance Gaussian mixture of `components` in `dim` dimensions: buffers
    `weights` (K,), `means` (K, d), `chol` (K, d, d) lower-triangular, `fitted` (0 or 1).
    Unfitted, it is N(0, I) (one component at 0, identity)."""

    def __init__(self, dim: int, components: int) -> None:
        super().__init__()
        self.dim, self.components = dim, components
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("chol", torch.eye(dim).repeat(components, 1, 1))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.long))

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        """Standard normal z (B, d) -> mixture samples (B, d); z itself while unfitted."""
        if not int(self.fitted):
            return z
        z64 = z.double()
        u = 0.5 * (1.0 + torch.erf(z64[:, 0] / math.sqrt(2.0)))  # (B,) uniform
        edges = torch.cumsum(self.weights.double(), 0)  # (K,)
        k = torch.searchsorted(edges, u.contiguous()).clamp(max=self.components - 1)  # (B,)
        low = torch.cat([edges.new_zeros(1), edges[:-1]])[k]
        inner = ((u - low) / self.weights.double()[k]).clamp(1e-12, 1.0 - 1e-12)
        fresh = z64.clone()
        fresh[:, 0] = math.sqrt(2.0) * torch.erfinv(2.0 * inner - 1.0)  # (B,) N(0, 1) again
        x = self.means.double()[k] + (self.chol.double()[k] @ fresh[:, :, None])[:, :, 0]
        return x.to(z.dtype)

    @torch.no_grad()
    def fit(self, codes: torch.Tensor, seed: int) -> float:
        """Fit the mixture to latents `codes` (N, d) by EM from a k-means++ start (seeded);
        returns the mean log-likelihood per latent (nats). Float64 throughout."""
        weights, means, chol, ll = fit_mixture(codes.double().cpu(), self.components, seed)
        self.weights.copy_(weights)
        self.means.copy_(means)
        self.chol.copy_(chol)
        self.fitted.fill_(1)
        return ll

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density of x (N, d) under the mixture: (N,), float64."""
        return torch.logsumexp(_component_log_probs(x.double(), *self._params()), dim=1)

    def _params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.weights.double(), self.means.double(), self.chol.double()


def _component_log_probs(
    x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
) -> torch.Tensor:
    """log w_k + log N(x | mean_k, L_k L_k^T) for every point and component: (N, K)."""
    d = x.shape[1]
    diff = x[None, :, :] - means[:, None, :]  # (K, N, d)
    solved = torch.linalg.solve_triangular(chol, diff.transpose(1, 2), upper=False)  # (K, d, N)
    maha = solved.pow(2).sum(1)  # (K, N)
    log_det = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)  # (K,)
    logp = -0.5 * maha - log_det[:, None] - 0.5 * d * math.log(2 * math.pi)
    return (logp + torch.log(weights)[:, None]).T  # (N, K)


def _kmeans_pp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: k rows of x, each drawn with probability ~ squared distance."""
    first = int(torch.randint(len(x), (1,), generator=g))
    centres = [x[first]]
    dist = (x - centres[0]).pow(2).sum(1)
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:  # fewer distinct points than components
            pick = int(torch.randint(len(x), (1,), generator=g))
        else:
            pick = int(torch.multinomial(dist / total, 1, generator=g))
        centres.append(x[pick])
        dist = torch.minimum(dist, (x - x[pick]).pow(2).sum(1))
    return torch.stack(centres)


def fit_mixture(
    x: torch.Tensor, k: int, seed: int, iterations: int = FIT_ITERATIONS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """EM for a full-covariance mixture of k Gaussians on x (N, d) float64: weights (K,),
    means (K, d), Cholesky factors (K, d, d) and the final mean log-likelihood."""
    n = len(x)
    if n < 2 * k:
        raise ValueError(f"a mixture of {k} components needs at least {2 * k} latents, got {n}")
    g = torch.Generator().manual_seed(seed)
    ridge = RIDGE * float(x.var(0).mean()) + 1e-12
    means = _kmeans_pp(x, k, g)
    resp = torch.nn.functional.one_hot(torch.cdist(x, means).argmin(1), k).double()  # (N, K)
    ll = -math.inf
    for _ in range(iterations):
        weights, means, chol = _m_step(x, resp, ridge)
        logp = _component_log_probs(x, weights, means, chol)  # (N, K)
        norm = torch.logsumexp(logp, dim=1, keepdim=True)
        resp = torch.exp(logp - norm)
        new_ll = float(norm.mean())
        if abs(new_ll - ll) < 1e-7 * max(1.0, abs(new_ll)):
            ll = new_ll
            break
        ll = new_ll
    weights, means, chol = _m_step(x, resp, ridge)
    return weights, means, chol, ll


def _m_step(
    x: torch.Tensor, resp: torch.Tensor, ridge: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights, means and Cholesky factors from responsibilities (N, K); an emptied component
    keeps a tiny weight at the data's mean and covariance."""
    d = x.shape[1]
    counts = resp.sum(0) + 1e-10  # (K,)
    weights = counts / counts.sum()
    means = (resp.T @ x) / counts[:, None]  # (K, d)
    diff = x[None, :, :] - means[:, None, :]  # (K, N, d)
    cov = torch.einsum("kn,kni,knj->kij", resp.T, diff, diff) / counts[:, None, None]
    cov = cov + ridge * torch.eye(d, dtype=x.dtype)
    return weights, means, torch.linalg.cholesky(cov)
