"""The metrics `imagegen eval` computes, registered once by name.

Each metric is one entry of `METRICS`: what it needs (reference features, the evaluated images'
features, or a likelihood model), its size check (run before any slow work) and the function
that computes it from `Inputs`. The eval command's help and docs/evaluation.md's table are made
from this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from imagegen.common.errors import UsageError

if TYPE_CHECKING:  # the registry is read by --help, which imports neither
    import numpy as np
    import torch


@dataclass(frozen=True)
class Settings:
    """The metric options of an evaluation."""

    kid_subsets: int = 100
    kid_subset_size: int | None = None  # default: min(1000, images // 2)
    seed: int = 0
    fid_at: tuple[int, ...] = ()  # also the FID of the first k images evaluated, for each k

    def kid_size(self, smallest: int) -> int:
        return self.kid_subset_size or min(1000, smallest // 2)


@dataclass
class Inputs:
    """What the metrics are computed from; what one computes for another is kept in `cache`."""

    settings: Settings
    wanted: tuple[str, ...]
    fake: torch.Tensor | None = None  # features of the evaluated images (N, 2048)
    real: torch.Tensor | None = None  # features of the reference images (M, 2048)
    real_stats: tuple[np.ndarray, np.ndarray] | None = None  # mu, sigma (an .npz reference)
    logits: Callable[[torch.Tensor], torch.Tensor] | None = None  # features -> class logits
    elbo: Callable[[], dict[str, float]] | None = None  # a likelihood model on held-out images
    classes: list[str] = field(default_factory=list)  # a conditional model's, by index
    fake_labels: torch.Tensor | None = None  # (N,) the evaluated images' classes
    real_labels: torch.Tensor | None = None  # (M,) the reference images' classes
    protocol: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

    def fake_features(self) -> torch.Tensor:
        """The evaluated images' features (computed before any metric is)."""
        assert self.fake is not None, "no features of the evaluated images"
        return self.fake

    def real_features(self) -> torch.Tensor:
        """The reference images' features (for the metrics that need images)."""
        assert self.real is not None, "no features of reference images"
        return self.real

    def fake_stats(self) -> tuple[np.ndarray, np.ndarray]:
        from imagegen.evaluation import metrics

        if "fake_stats" not in self.cache:
            self.cache["fake_stats"] = metrics.gaussian_stats(self.fake_features().numpy())
        return self.cache["fake_stats"]

    def manifold(self) -> dict[str, float]:
        """Precision/recall and density/coverage, whichever are wanted, in one pass."""
        from imagegen.evaluation import metrics

        if "manifold" not in self.cache:
            self.cache["manifold"] = metrics.manifold_metrics(
                self.real_features().numpy(),
                self.fake_features().numpy(),
                pr_k=NEIGHBOURS["pr"] if "pr" in self.wanted else None,
                dc_k=NEIGHBOURS["dc"] if "dc" in self.wanted else None,
            )
        return self.cache["manifold"]


@dataclass(frozen=True)
class Metric:
    """A metric: what it needs, its size check, its computation, and its docs."""

    summary: str  # what it is, for --help and the docs
    notes: str  # the docs' notes column
    needs: Literal["reference", "features", "logits", "likelihood"]
    compute: Callable[[Inputs], dict[str, float]]
    check: Callable[[int, Settings], None] = lambda smallest, settings: None
    default: bool = False  # computed when --metrics is not given


NEIGHBOURS = {"pr": 3, "dc": 5}  # k of the k-NN balls


def _fid(inputs: Inputs) -> dict[str, float]:
    from imagegen.evaluation import metrics

    mu_f, sigma_f = inputs.fake_stats()
    if inputs.real_stats is not None:
        mu_r, sigma_r = inputs.real_stats
    else:
        mu_r, sigma_r = metrics.gaussian_stats(inputs.real_features().numpy())
    n = inputs.fake_features().shape[0]
    if n < metrics.FID_FULL_RANK:
        inputs.warnings.append(
            f"FID from {n} images (< 2048): the covariance is rank-deficient "
            "and the value is biased upwards; compare only figures with the same n"
        )
    out = {"fid": metrics.frechet_distance(mu_f, sigma_f, mu_r, sigma_r)}
    for k in inputs.settings.fid_at:  # the same latents' first k images: the FID at a smaller n
        if 2 <= k < n:
            stats = metrics.gaussian_stats(inputs.fake_features()[:k].numpy())
            out[f"fid_at_{k}"] = metrics.frechet_distance(*stats, mu_r, sigma_r)
    return out


def _kid(inputs: Inputs) -> dict[str, float]:
    from imagegen.evaluation import metrics

    s = inputs.settings
    size = s.kid_size(min(inputs.fake_features().shape[0], inputs.real_features().shape[0]))
    mean, std = metrics.kernel_inception_distance(
        inputs.real_features().numpy(), inputs.fake_features().numpy(), s.kid_subsets, size, s.seed
    )
    inputs.protocol["kid"] = {"subsets": s.kid_subsets, "subset_size": size}
    return {"kid_mean": mean, "kid_std": std}


def _check_kid(smallest: int, settings: Settings) -> None:
    size = settings.kid_size(smallest)
    if size > smallest:
        raise UsageError(
            f"--kid-subset-size {size} is larger than the {smallest} images available; "
            "use a smaller --kid-subset-size or more images"
        )
    if size < 2:
        raise UsageError(f"KID needs subsets of at least 2 images; {smallest} images give {size}")


def _check_neighbours(metric: str) -> Callable[[int, Settings], None]:
    def check(smallest: int, settings: Settings) -> None:
        k = NEIGHBOURS[metric]
        if smallest <= k:
            raise UsageError(
                f"{metric} needs more than k={k} images for its nearest neighbours, got {smallest}"
            )

    return check


def _precision_recall(inputs: Inputs) -> dict[str, float]:
    m = inputs.manifold()
    return {"precision": m["precision"], "recall": m["recall"]}


def _density_coverage(inputs: Inputs) -> dict[str, float]:
    m = inputs.manifold()
    return {"density": m["density"], "coverage": m["coverage"]}


COPY_RATIO = 0.5  # a sample this much nearer to a training image than its own neighbour
COPY_ALARM = 0.05  # the share of such samples that raises the alarm


def _copying(inputs: Inputs) -> dict[str, float]:
    from imagegen.evaluation import metrics

    near = metrics.nearest_neighbours(
        inputs.real_features().numpy(), inputs.fake_features().numpy()
    )
    inputs.cache["neighbours"] = near
    ratio = near.ratio
    out = {
        "nn_ratio": float(ratio.median()),
        "nearer_than_nn": float((ratio < 1).double().mean()),
        "copies": float((ratio < COPY_RATIO).double().mean()),
    }
    if out["copies"] >= COPY_ALARM:
        inputs.warnings.append(
            f"alarm: {out['copies']:.0%} of the samples lie nearer to a reference image than "
            f"{COPY_RATIO:g}x that image's distance to its own nearest neighbour (held-out real "
            "images: none, on MNIST and Fashion-MNIST): the model copies its training images "
            "(--save-pairs shows the closest pairs); train on more images, or stop earlier"
        )
    return out


def _check_copying(smallest: int, settings: Settings) -> None:
    if smallest < 2:
        raise UsageError(f"copy needs at least 2 reference images, got {smallest}")


def _inception_score(inputs: Inputs) -> dict[str, float]:
    from imagegen.evaluation import metrics

    assert inputs.logits is not None, "inception_score needs the Inception logits"
    mean, std = metrics.inception_score(inputs.logits(inputs.fake_features()))
    return {"is_mean": mean, "is_std": std}


def _bits_per_dim(inputs: Inputs) -> dict[str, float]:
    assert inputs.elbo is not None, "bpd needs a likelihood model"
    return inputs.elbo()


def _intra_fid(inputs: Inputs) -> dict[str, float]:
    """FID of each class's samples against that class's reference images; their mean."""
    from imagegen.evaluation import metrics

    per_class, sizes = {}, []
    for k, name in enumerate(inputs.classes):
        fake = inputs.fake_features()[inputs.fake_labels == k].numpy()
        real = inputs.real_features()[inputs.real_labels == k].numpy()
        sizes.append((len(fake), len(real)))
        if min(len(fake), len(real)) < 2:
            inputs.warnings.append(
                f"intra_fid: class {name} has {len(fake)} samples and "
                f"{len(real)} reference images: left out of the mean"
            )
            continue
        stats = metrics.gaussian_stats(fake), metrics.gaussian_stats(real)
        per_class[f"intra_fid/{name}"] = metrics.frechet_distance(*stats[0], *stats[1])
    if not per_class:
        raise UsageError("intra_fid: no class has 2 samples and 2 reference images; use more")
    smallest = min(min(s) for s in sizes)
    if smallest < metrics.FID_FULL_RANK:
        inputs.warnings.append(
            f"intra_fid from as few as {smallest} images a class (< 2048): biased upwards; "
            "compare only figures with the same n"
        )
    inputs.protocol["intra_fid"] = {
        "classes": len(inputs.classes),
        "samples_per_class": [s[0] for s in sizes],
        "reference_per_class": [s[1] for s in sizes],
    }
    mean = sum(per_class.values()) / len(per_class)
    return {"intra_fid": mean} | per_class


METRICS: dict[str, Metric] = {
    "fid": Metric(
        summary="Fréchet distance of the pool3 features' Gaussians, in float64",
        notes="through the eigenvalues of the symmetrised S1^½ S2 S1^½, so near-singular "
        "covariances are stable; a warning below 2,048 images (biased upwards)",
        needs="reference",
        compute=_fid,
        default=True,
    ),
    "kid": Metric(
        summary="unbiased MMD² with the cubic polynomial kernel, mean ± std over --kid-subsets",
        notes="subsets of --kid-subset-size, default min(1000, images / 2), so the spread "
        "means something at small n",
        needs="reference",
        compute=_kid,
        check=_check_kid,
        default=True,
    ),
    "pr": Metric(
        summary=f"precision and recall (Kynkäänniemi et al. 2019), k = {NEIGHBOURS['pr']}",
        notes="",
        needs="reference",
        compute=_precision_recall,
        check=_check_neighbours("pr"),
        default=True,
    ),
    "dc": Metric(
        summary=f"density and coverage (Naeem et al. 2020), k = {NEIGHBOURS['dc']}",
        notes="",
        needs="reference",
        compute=_density_coverage,
        check=_check_neighbours("dc"),
    ),
    "copy": Metric(
        summary="memorisation: how near each sample lies to its nearest reference image, "
        "against that image's distance to its own nearest reference neighbour",
        notes="nn_ratio, the median of that ratio (held-out real images about 1.07 on MNIST "
        "and Fashion-MNIST, copies 0); nearer_than_nn, the share below 1 (held-out: about "
        "0.3); copies, the share below 0.5 (held-out: 0), an alarm from 5%; --save-pairs "
        "writes the 8 closest pairs",
        needs="reference",
        compute=_copying,
        check=_check_copying,
    ),
    "intra_fid": Metric(
        summary="a conditional model's intra-class FID: each class's samples against that "
        "class's reference images; the mean, and each class as intra_fid/NAME",
        notes="with fid whenever the checkpoint is conditional (samples drawn in the training "
        "data's class proportions); the reference must name the model's classes",
        needs="reference",
        compute=_intra_fid,
    ),
    "is": Metric(
        summary="Inception Score",
        notes="only with weights that keep the logits layer (pytorch-fid's .pth); the "
        "TorchScript pool3 file has none and says so",
        needs="logits",
        compute=_inception_score,
    ),
    "bpd": Metric(
        summary="a VAE's negative ELBO on held-out images, in nats and bits/dim",
        notes="only when asked; the run's test split, or --test-data (a folder, zip or "
        "dataset) for runs on folders and zips",
        needs="likelihood",
        compute=_bits_per_dim,
    ),
}

DEFAULT_METRICS = tuple(name for name, m in METRICS.items() if m.default)


def parse_metrics(text: str) -> tuple[str, ...]:
    """`fid,kid,pr` -> ("fid", "kid", "pr"); unknown names list the valid ones."""
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UsageError(
            f"unknown metric {', '.join(unknown) or '(none)'} (valid: {', '.join(METRICS)})"
        )
    return names


def needing(wanted: tuple[str, ...], need: str) -> list[str]:
    """The metrics of `wanted` that need `need`: "reference" features, the evaluated images'
    "features" alone, their "logits", or a "likelihood" model."""
    return [m for m in wanted if METRICS[m].needs == need]


def check_sizes(wanted: tuple[str, ...], n: int, n_ref: int | None, settings: Settings) -> None:
    """Refuse, before any slow work, the metrics that `n` evaluated images and `n_ref` reference
    images (None: statistics, not images) cannot give."""
    for name in wanted:
        metric = METRICS[name]
        reference = metric.needs == "reference" and n_ref is not None
        metric.check(min(n, n_ref) if reference and n_ref is not None else n, settings)


def compute(inputs: Inputs) -> dict[str, float]:
    """Every wanted metric, in the registry's order."""
    results: dict[str, float] = {}
    for name, metric in METRICS.items():
        if name in inputs.wanted:
            results |= metric.compute(inputs)
    return results


def metrics_help() -> str:
    """The eval command's --metrics help, from the registry."""
    return f"Comma-separated, of: {', '.join(METRICS)} (docs/evaluation.md)."
