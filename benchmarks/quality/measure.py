"""Measurements of a run: FID and the other metrics through `imagegen eval`, the grid,
the reconstructions and bits/dim of a model with an encoder, the floor."""

import time
from pathlib import Path
from typing import Any

import torch

from imagegen.data import datasets as data
from imagegen.evaluation.evaluate import EvalRequest, evaluate
from imagegen.sampling.generation import class_grid, generate_uint8, latents
from imagegen.sampling.images import make_grid, write_png
from imagegen.storage import checkpoint
from quality.datasets import Dataset, subset_folder, test_folder
from quality.record import Results
from quality.settings import Settings, log


def measure(
    source: Path,
    ds: Dataset,
    n: int,
    settings: Settings,
    metrics: tuple[str, ...],
    precision: str = "",
    fid_at: tuple[int, ...] = (),
    reference: str = "",
) -> dict[str, Any]:
    """FID and KID of a checkpoint (or, with `test`, of the test images) against the
    reference: `settings.ref_n` training images (of `reference`, else of the dataset's own)."""
    request = EvalRequest(
        source=source,
        reference=reference or ds.train,
        split="train",
        n=n,
        n_ref=settings.ref_n,
        metrics=metrics,
        precision=precision or settings.precision,
        data_root=str(settings.data_root),
        log_to_run=False,
        kid_subset_size=min(1000, n // 2),
        resolution=32,
        fid_at=fid_at,
    )
    started = time.perf_counter()
    result = evaluate(request)
    alarms = [w for w in result.warnings if w.startswith("alarm")]
    return {
        **result.metrics,
        "eval_s": round(time.perf_counter() - started, 1),
        **({"alarms": alarms} if alarms else {}),
    }


def grid(ckpt_path: Path, out: Path) -> None:
    """64 samples (seed 0, EMA weights where kept) as the report's grid; a conditional model's:
    a row of 8 per class."""
    ckpt = checkpoint.read_checkpoint(ckpt_path)
    model = checkpoint.build_model(ckpt)
    k = model.num_classes
    labels = class_grid(8 * k, k)[0] if k else None
    z = latents(64 if labels is None else len(labels), model.latent_dim, 0)
    images = generate_uint8(model, z, torch.device("cpu"), labels=labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, make_grid(images, 8))


def reconstructions(ckpt_path: Path, ds: Dataset, settings: Settings) -> dict[str, Any]:
    """A VAE's or VAE-GAN's reconstructions of `recon_n` test images: pixel MSE, and the FID
    of the reconstructions against the same reference as the samples (sharpness shows there)."""
    from imagegen.evaluation import inception, metrics
    from imagegen.evaluation.reference import reference_features
    from imagegen.sampling.images import to_uint8

    started = time.perf_counter()
    ckpt = checkpoint.read_checkpoint(ckpt_path)
    model = checkpoint.build_model(ckpt)
    c, res, _ = ckpt.data_shape
    test = data.load_images(ds.test, resolution=res, channels=c, split=ds.test_split,
                            root=settings.data_root)  # fmt: skip
    pick = torch.randperm(test.images.shape[0], generator=torch.Generator().manual_seed(0))
    x = test.images[pick[: settings.recon_n]].float().div(255)
    with torch.no_grad():
        recon = torch.cat([model.reconstruct(x[i : i + 256]) for i in range(0, len(x), 256)])
    extractor = inception.load_extractor(None)
    fake = extractor.features(to_uint8(recon), precision=settings.precision).numpy()
    real, _ = reference_features(
        extractor, ds.train, split="train", resolution=res, channels=c, n=settings.ref_n,
        root=str(settings.data_root), batch_size=64, precision=settings.precision,
    )  # fmt: skip
    fid = metrics.frechet_distance(*metrics.gaussian_stats(fake), *metrics.gaussian_stats(real))
    return {
        "recon_fid": fid,
        "recon_mse": float((recon - x).pow(2).mean()),
        "eval_s": round(time.perf_counter() - started, 1),
    }


def bits_per_dim(ckpt_path: Path, ds: Dataset, settings: Settings) -> dict[str, Any]:
    """A VAE's negative ELBO on the held-out images, as `imagegen eval --metrics bpd`."""
    request = EvalRequest(
        source=ckpt_path,
        metrics=("bpd",),
        test_data=None if ds.test == ds.train else ds.test,
        data_root=str(settings.data_root),
        log_to_run=False,
    )
    return evaluate(request).metrics


def floor(ds: Dataset, results: Results, settings: Settings) -> None:
    """The dataset's test images against the same reference: the best a model can hope for."""
    if ds.subset:
        subset_folder(ds, results)
    if ds.minutes:  # the same data as its base: the floor is the base's
        return
    if results.get(f"{ds.key}/floor") is None:
        log(f"{ds.key}: floor (test images vs training images)")
        wanted = ("fid", "kid", "pr", "copy") if ds.whole else ("fid", "kid", "pr")
        row = measure(test_folder(ds, settings), ds, settings.final_n, settings, wanted)
        results.put(f"{ds.key}/floor", row)
    if ds.whole and results.get(f"{ds.key}/floor-whole") is None:
        row = measure(
            test_folder(ds, settings),
            ds,
            settings.final_n,
            settings,
            ("fid", "kid"),
            reference=ds.whole,
        )
        results.put(f"{ds.key}/floor-whole", row)
