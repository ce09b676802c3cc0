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

# EM iterations at most: on the CIFAR-10-JPEG VAE's 10,000 latents the log-likelihood per latent
# rose 1.2 nats from 5 to 20 iterations and 0.14 from 20 to 50, at 0.3-0.6 s an iteration
FIT_ITERATIONS = 30
RIDGE = 1e-4  # added to each covariance's diagonal, relative to the data's mean variance


class MixturePrior(nn.Module):
    """A full-covariance Gaussian mixture of `components` in `dim` dimensions: buffers
    `weights` (K,), `means` (K, d), `chol` (K, d, d) lower-triangular, `fitted` (0 or 1).
    Unfitted, it is N(0, I) (one component at 0, identity)."""

    weights: torch.Tensor
    means: torch.Tensor
    chol: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, dim: int, components: int) -> None:
        super().__init__()
        self.dim, self.components = dim, components
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("chol", torch.eye(dim).repeat(components, 1, 1))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.long))

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        """Standard normal z (B, d) -> mixture samples (B, d); z itself while unfitted. Ops
        that ONNX has (comparisons for the component, no searchsorted or erfinv), in float64
        except in an ONNX export (float32 there)."""
        if not torch.onnx.is_in_onnx_export() and not int(self.fitted):
            return z
        dtype = torch.float32 if torch.onnx.is_in_onnx_export() else torch.float64
        zz = z.to(dtype)
        weights, means, chol = (b.to(dtype) for b in (self.weights, self.means, self.chol))
        u = normal_cdf(zz[:, 0])  # (B,) uniform
        edges = torch.cumsum(weights, 0)  # (K,)
        k = (u[:, None] > edges[None, :-1]).sum(1)  # (B,) the component whose share holds u
        low = torch.cat([edges.new_zeros(1), edges[:-1]])[k]
        inner = ((u - low) / weights[k]).clamp(1e-7, 1.0 - 1e-7)
        fresh = torch.cat([normal_icdf(inner)[:, None], zz[:, 1:]], dim=1)  # (B, d) N(0, I)
        x = means[k] + (chol[k] @ fresh[:, :, None])[:, :, 0]
        fitted = self.fitted.to(torch.bool)  # an exported graph keeps N(0, I) while unfitted
        return torch.where(fitted, x.to(z.dtype), z)

    @torch.no_grad()
    def fit(self, codes: torch.Tensor, seed: int) -> float:
        """Fit the mixture to latents `codes` (N, d) by EM from a k-means++ start (seeded);
        returns the mean log-likelihood per latent (nats). Float64 throughout. Fewer than two
        latents per component: as many components as there are pairs, repeated to fill the
        buffers (one latent: none fitted)."""
        x = codes.double().cpu()
        if len(x) < 2:  # nothing to fit a density to: N(0, I) stays
            return math.nan
        k = min(self.components, len(x) // 2)  # few latents: fewer components, each repeated
        weights, means, chol, ll = fit_mixture(x, k, seed)
        repeat = -(-self.components // k)
        self.weights.copy_((weights / repeat).repeat(repeat)[: self.components])
        self.weights.div_(self.weights.sum())
        self.means.copy_(means.repeat(repeat, 1)[: self.components])
        self.chol.copy_(chol.repeat(repeat, 1, 1)[: self.components])
        self.fitted.fill_(1)
        return ll

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density of x (N, d) under the mixture: (N,), float64."""
        return torch.logsumexp(_component_log_probs(x.double(), *self._params()), dim=1)

    def _params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.weights.double(), self.means.double(), self.chol.double()


# Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9),
# refined below by one Newton step on erf.
_A = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690,
      -30.66479806614716, 2.506628277459239)  # fmt: skip
_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
      -13.28068155288572)  # fmt: skip
_C = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
      4.374664141464968, 2.938163982698783)  # fmt: skip
_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
_LOW = 0.02425


def _poly(coefficients: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        out = out * x + c
    return out


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x), the standard normal distribution function."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def normal_icdf(p: torch.Tensor) -> torch.Tensor:
    """Phi^-1(p) for p in (0, 1): Acklam's approximation and one Newton step."""
    q = p - 0.5
    r = q * q
    central = q * _poly(_A, r) / (_poly(_B, r) * r + 1.0)
    tail_p = torch.minimum(p, 1.0 - p)
    s = torch.sqrt(-2.0 * torch.log(tail_p))
    tail = _poly(_C, s) / (_poly(_D, s) * s + 1.0)  # the lower tail's quantile
    tail = torch.where(p > 0.5, -tail, tail)
    x = torch.where(tail_p < _LOW, tail, central)
    density = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x - (normal_cdf(x) - p) / density


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
        if abs(new_ll - ll) < 1e-6 * max(1.0, abs(new_ll)):
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
