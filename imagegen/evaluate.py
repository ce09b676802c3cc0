"""`imagegen eval`: metrics of a checkpoint, run or image folder against a reference.

Generated images are quantised to uint8 exactly as a saved PNG would be, and never written.
Reference features are computed once and cached, keyed by dataset, split, resolution, count and
the extractor's hash. Every result carries its protocol.
"""

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagegen import __version__, checkpoint, data, inception, locations, metrics
from imagegen.errors import UsageError, UserError
from imagegen.files import atomic_write_bytes, check_output_file
from imagegen.sample import generate_uint8, latents
from imagegen.train import find_checkpoint, recorded_data_root, resolve_device

METRICS = ("fid", "kid", "pr", "dc", "is", "bpd")
DEFAULT_METRICS = ("fid", "kid", "pr")


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate against what."""

    source: Path  # checkpoint, run folder or image folder
    reference: str | None = None  # dataset name, folder, or .npz with mu and sigma
    split: str = "train"
    n: int = 10_000
    n_ref: int | None = None  # reference images; default: as many as --n
    metrics: tuple[str, ...] = DEFAULT_METRICS
    batch_size: int = 64
    device: str = "auto"
    seed: int = 0
    resolution: int | None = None  # for folders: the size images are brought to first
    kid_subsets: int = 100
    kid_subset_size: int | None = None  # default: min(1000, images); a larger one is refused
    inception_weights: str | None = None
    data_root: str | None = None
    save_stats: Path | None = None
    force: bool = False
    log_to_run: bool = True
    precision: str = "fp32"  # of the feature extractor: fp32 (the reference protocol) or bf16
    use_ema: bool = True  # checkpoints: sample the moving average (False: the raw weights)


@dataclass(frozen=True)
class EvalResult:
    """Metric values, the protocol that produced them, and warnings."""

    metrics: dict[str, float]
    protocol: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "protocol": self.protocol,
            "warnings": self.warnings,
            "files": self.files,
        }


def parse_metrics(text: str) -> tuple[str, ...]:
    """`fid,kid,pr` -> ("fid", "kid", "pr"); unknown names list the valid ones."""
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UsageError(
            f"unknown metric {', '.join(unknown) or '(none)'} (valid: {', '.join(METRICS)})"
        )
    return names


def reference_features(
    extractor: inception.Extractor,
    dataset: str,
    *,
    split: str,
    resolution: int,
    channels: int | None,
    n: int,
    root: str | None,
    batch_size: int,
    precision: str = "fp32",
) -> tuple[torch.Tensor, int]:
    """Features of up to `n` reference images (a fixed random subset), cached on disk."""
    images = data.load_images(
        dataset, resolution=resolution, channels=channels, split=split, root=root
    )
    count = min(n, images.images.shape[0])
    ident = images.cache_file or dataset
    key = json.dumps(
        [ident, dataset, split, resolution, channels, count, extractor.sha256, precision, "v1"],
        sort_keys=True,
    )
    path = (
        locations.decoded_cache_dir().parent
        / "features"
        / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".safetensors")
    )
    if path.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["features"], images.images.shape[0]
        except Exception:  # a damaged cache entry is recomputed
            pass
    pick = torch.randperm(images.images.shape[0], generator=torch.Generator().manual_seed(0))[
        :count
    ]
    feats = extractor.features(images.images[pick], batch_size, precision)
    try:
        from safetensors.torch import save

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"features": feats.contiguous()}))
    except OSError:
        pass
    return feats, images.images.shape[0]


def evaluate(request: EvalRequest) -> EvalResult:
    """Compute the requested metrics; append them to the run's metrics.jsonl for runs."""
    if request.n < 2:
        raise UsageError(f"--n must be at least 2, got {request.n}")
    if request.precision not in ("fp32", "bf16"):
        raise UsageError(f"--precision must be fp32 or bf16, got {request.precision!r}")
    if request.save_stats is not None:
        check_output_file(request.save_stats, request.force)
    wanted = request.metrics
    device = resolve_device(request.device)
    warnings: list[str] = []
    results: dict[str, float] = {}
    protocol: dict[str, Any] = {
        "imagegen_version": __version__,
        "seed": request.seed,
        "precision": request.precision,
    }
    started = time.perf_counter()

    # What is compared with what, checked before any slow work.
    source = Path(request.source)
    is_folder = source.is_dir() and not (source / "checkpoints").is_dir()
    ckpt = None if is_folder else checkpoint.read_checkpoint(find_checkpoint(source))
    if ckpt is not None and request.resolution not in (None, ckpt.data_shape[1]):
        raise UsageError(
            f"--resolution {request.resolution} differs from the model's {ckpt.data_shape[1]}"
        )
    reference = request.reference or (ckpt.dataset if ckpt is not None else None)
    root = request.data_root or (recorded_data_root(ckpt.path) if ckpt is not None else None)
    feature_metrics = [m for m in wanted if m in ("fid", "kid", "pr", "dc")]
    if feature_metrics and reference is None:
        raise UsageError("--dataset is required to compare an image folder with a reference")
    if feature_metrics and str(reference).lower().endswith(".npz"):
        if any(m != "fid" for m in feature_metrics):
            raise UsageError(
                f"{reference} holds only mu and sigma: it serves FID, not "
                + ", ".join(m for m in feature_metrics if m != "fid")
                + " (pass --metrics fid, or a dataset)"
            )
        mu_npz, sigma_npz = load_npz_stats(Path(reference))

    # The images to evaluate: generated on the fly, or read from a folder.
    if ckpt is None:
        res = request.resolution or 64
        folder = data.load_images(str(source), resolution=res)
        pick = torch.randperm(
            folder.images.shape[0], generator=torch.Generator().manual_seed(request.seed)
        )
        images = folder.images[pick[: request.n]]
        protocol["input"] = {
            "folder": str(source),
            "images": int(images.shape[0]),
            "resolution": res,
        }
        channels = None
    else:
        use_ema = request.use_ema and ckpt.has_ema
        model = checkpoint.build_model(ckpt, use_ema=use_ema).to(device)
        c, res, _ = ckpt.data_shape
        z = latents(request.n, model.latent_dim, request.seed, None)
        images = generate_uint8(model, z, device)
        protocol["input"] = {
            "checkpoint": str(ckpt.path),
            "model": ckpt.model_name,
            "step": ckpt.step,
            "generated": int(images.shape[0]),
            "ema": use_ema,
            "quantised": "uint8, as a saved PNG",
        }
        channels = c

    needs_features = any(m in wanted for m in ("fid", "kid", "pr", "dc", "is"))
    needs_features = needs_features or request.save_stats is not None

    extractor = None
    fake = None
    if needs_features:
        extractor = inception.load_extractor(request.inception_weights, device)
        protocol["extractor"] = extractor.protocol
        if "is" in wanted and not extractor.has_logits:
            extractor.logits(torch.zeros(0, 2048))  # raises: why the score is unavailable
        fake = extractor.features(images, request.batch_size, request.precision)
        if "is" in wanted:
            results["is_mean"], results["is_std"] = metrics.inception_score(extractor.logits(fake))

    # The generated images' mean and covariance, computed once for --save-stats and FID.
    needs_stats = request.save_stats is not None or "fid" in feature_metrics
    mu_f, sigma_f = (
        metrics.gaussian_stats(fake.numpy()) if needs_stats and fake is not None else (None, None)
    )
    if request.save_stats is not None and fake is not None:
        buf = io.BytesIO()
        np.savez(buf, mu=mu_f, sigma=sigma_f)
        atomic_write_bytes(Path(request.save_stats), buf.getvalue())

    if feature_metrics:
        assert extractor is not None and fake is not None and reference is not None
        n_ref = request.n_ref or request.n
        if str(reference).lower().endswith(".npz"):
            mu_r, sigma_r = mu_npz, sigma_npz
            real = None
            protocol["reference"] = {"npz": str(reference)}
        else:
            real, available = reference_features(
                extractor,
                reference,
                split=request.split,
                resolution=res,
                channels=channels,
                n=n_ref,
                root=root,
                batch_size=request.batch_size,
                precision=request.precision,
            )
            mu_r, sigma_r = metrics.gaussian_stats(real.numpy())
            protocol["reference"] = {
                "dataset": reference,
                "split": request.split,
                "images": int(real.shape[0]),
                "of": int(available),
                "resolution": res,
            }
        if "fid" in feature_metrics:
            if fake.shape[0] < metrics.FID_FULL_RANK:
                warnings.append(
                    f"FID from {fake.shape[0]} images (< 2048): the covariance is rank-deficient "
                    "and the value is biased upwards; compare only figures with the same n"
                )
            results["fid"] = metrics.frechet_distance(mu_f, sigma_f, mu_r, sigma_r)
        if "kid" in feature_metrics:
            size = request.kid_subset_size or min(1000, fake.shape[0], real.shape[0])
            mean, std = metrics.kernel_inception_distance(
                real.numpy(), fake.numpy(), request.kid_subsets, size, request.seed
            )
            results["kid_mean"], results["kid_std"] = mean, std
            protocol["kid"] = {"subsets": request.kid_subsets, "subset_size": size}
        if "pr" in feature_metrics:
            results["precision"], results["recall"] = metrics.precision_recall(
                real.numpy(), fake.numpy(), k=3
            )
        if "dc" in feature_metrics:
            results["density"], results["coverage"] = metrics.density_coverage(
                real.numpy(), fake.numpy(), k=5
            )
    if ckpt is not None and hasattr(model, "evaluate") and ("bpd" in wanted or feature_metrics):
        results |= _test_elbo(model, ckpt, root, device, request.batch_size, request.seed)
    elif "bpd" in wanted:
        raise UsageError("bits/dim needs a checkpoint of a model with a likelihood (vae)")

    protocol["seconds"] = round(time.perf_counter() - started, 2)
    files = [str(request.save_stats)] if request.save_stats else []
    if ckpt is not None and request.log_to_run and ckpt.path.parent.name == "checkpoints":
        log = ckpt.path.parent.parent / "metrics.jsonl"
        record = {"time": time.time(), "step": ckpt.step, **results, "protocol": protocol}
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        files.append(str(log))
    return EvalResult(results, protocol, warnings, files)


def _test_elbo(
    model: torch.nn.Module,
    ckpt: checkpoint.Checkpoint,
    root: str | None,
    device: torch.device,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """The negative ELBO on the whole test split of the model's dataset, in nats and bits/dim."""
    c, res, _ = ckpt.data_shape
    test = data.load_images(ckpt.dataset, resolution=res, channels=c, split="test", root=root)
    noise = torch.Generator(device).manual_seed(seed)
    sums = {"neg_elbo": 0.0, "bpd": 0.0}  # bits/dim is affine in the ELBO: means commute
    count = 0
    for i in range(0, test.images.shape[0], batch_size * 4):
        x = test.images[i : i + batch_size * 4].to(device).float().div_(255)
        part = model.evaluate(x, noise)
        for k in sums:
            sums[k] += part[k] * x.shape[0]
        count += x.shape[0]
    return {
        "test_neg_elbo": sums["neg_elbo"] / count,
        "test_bpd": sums["bpd"] / count,
        "test_images": float(count),
    }


def load_npz_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mu (2048,) and sigma (2048, 2048) from a pytorch-fid / TTUR .npz, without pickle."""
    if not path.is_file():
        raise UserError(f"statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{path} is not an .npz with mu and sigma ({e})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    return mu, sigma
