"""Sampling a checkpoint to PNG: a grid, one file per image, or latent interpolations."""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imagegen.common.devices import resolve_device
from imagegen.common.errors import UsageError
from imagegen.common.files import (
    atomic_write_bytes,
    check_image_output,
    check_output_dir,
    refuse_checkpoint_target,
)
from imagegen.common.progress import Emit, Kind, ProgressEvent, ignore
from imagegen.data import datasets as data
from imagegen.data import labels as labelling
from imagegen.models.base import GenerativeModel
from imagegen.models.likelihood import mean_elbo_terms
from imagegen.models.registry import MODELS
from imagegen.sampling.generation import BATCH, class_grid, generate_uint8, latents, seed_latents
from imagegen.sampling.images import animation_bytes, make_grid, png_bytes, to_uint8, write_png
from imagegen.sampling.request import SampleRequest
from imagegen.storage import checkpoint, runs
from imagegen.storage.runs import find_checkpoint, newest_run, recorded_data_root

MAX_GRID = 4096


@dataclass(frozen=True)
class SampleResult:
    """What was written."""

    checkpoint: Path
    model: str
    step: int
    n: int
    seed: int
    ema: bool
    files: list[str]
    images_per_s: float
    newest_run: Path | None  # set when the run was chosen automatically
    metrics: dict[str, float] = field(default_factory=dict)  # --reconstruct: on these images
    class_: str | None = None  # the class asked for
    classes: list[str] = field(default_factory=list)  # a conditional model's, by index
    seeds: list[int] | None = None
    trunc: float | None = None
    prior: str = ""  # the fitted sampling prior the latents go through, in words ("": none)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "checkpoint": str(self.checkpoint),
            "model": self.model,
            "step": self.step,
            "n": self.n,
            "seed": self.seed,
            "ema": self.ema,
            "class": self.class_,
            "classes": self.classes,
            "seeds": self.seeds,
            "latents": _latents_said(self.trunc)
            + (f", through {self.prior}" if self.prior else ""),
            "files": self.files,
            "images_per_s": round(self.images_per_s, 2),
        }


def validate(request: SampleRequest) -> None:
    """Refuse combinations of options before anything is loaded or written (each option's own
    range: SampleRequest's declarations)."""
    if request.individual is None and request.n > MAX_GRID:
        raise UsageError(
            f"a grid of {request.n} images is too large (at most {MAX_GRID}); "
            "use --individual DIR to write one file per image"
        )
    if request.individual is not None and request.out is not None:
        raise UsageError("--out and --individual cannot be combined")
    if request.class_ is not None and request.reconstruct:
        raise UsageError("--reconstruct takes no --class: it reconstructs dataset images")
    if request.seeds is not None and (request.interpolate or request.reconstruct):
        raise UsageError(
            "--seeds gives one image per seed: not with --interpolate or --reconstruct"
        )
    if request.trunc is not None and request.reconstruct:
        raise UsageError("--reconstruct draws no latents: it takes no --trunc")
    animated = request.out is not None and Path(request.out).suffix.lower() == ".gif"
    if animated and not request.interpolate:
        raise UsageError("--out .gif writes an interpolation's animation: add --interpolate")
    if request.reconstruct and (request.interpolate or request.individual is not None):
        raise UsageError(
            "--reconstruct writes one grid; it takes neither --interpolate nor --individual"
        )


def default_output(ckpt_path: Path, request: SampleRequest) -> Path:
    """`samples/sample-seedS-nN[-interpK][-raw].png` in the run folder, else the current one."""
    run = runs.run_of(ckpt_path)
    folder = runs.samples_dir(run) if run is not None and runs.samples_dir(run).is_dir() else None
    folder = folder or Path(".")
    name = f"{'reconstruct' if request.reconstruct else 'sample'}-seed{request.seed}-n{request.n}"
    if request.seeds:
        name = f"sample-seeds{request.seeds[0]}-{request.seeds[-1]}-n{len(request.seeds)}"
    if request.trunc is not None:
        name += f"-trunc{request.trunc:g}"
    if request.class_ is not None:
        name += f"-class-{_safe(request.class_)}"
    if request.interpolate:
        name += f"-interp{request.interpolate}"
    if not request.use_ema:
        name += "-raw"
    return folder / f"{name}.png"


def sample(request: SampleRequest, on_event: Emit | None = None) -> SampleResult:
    """Generate images from a checkpoint and write them as PNG files.

    Progress is reported (to `on_event`) for long work only: many images, or one file each.
    """
    long_work = request.n >= 1024 or request.individual is not None
    emit = (on_event if long_work else None) or ignore
    validate(request)
    chosen = None
    if request.source is None:
        chosen = newest_run()
        path = find_checkpoint(chosen)
    else:
        path = find_checkpoint(request.source)
    ckpt = checkpoint.read_checkpoint(path)
    if request.individual is not None:
        refuse_checkpoint_target(Path(request.individual) / "000000.png", "--individual")
        out_dir = check_output_dir(request.individual, request.force)
        out_file, fmt = None, "PNG"
    else:
        target = request.out or default_output(path, request)
        out_file, fmt = check_image_output(target, request.force)
    use_ema = request.use_ema and ckpt.has_ema
    device = resolve_device(request.device)
    model = checkpoint.build_model(ckpt, use_ema=use_ema).to(device)
    if request.reconstruct and not model.can_reconstruct:
        raise UsageError(
            f"a {ckpt.model_name} model has no encoder; --reconstruct needs one of "
            + ", ".join(name for name, spec in MODELS.items() if spec.model_cls.can_reconstruct)
        )
    metrics: dict[str, float] = {}
    names = ckpt.class_names
    asked = resolve_class(request.class_, names) if request.class_ is not None else None
    if request.seeds and names and asked is None and out_file is not None:
        count = len(request.seeds) * len(names)  # each seed in every class
        if count > MAX_GRID:
            raise UsageError(
                f"--seeds gives {len(request.seeds)} images in each of {len(names)} classes: a "
                f"grid of {count} is too large (at most {MAX_GRID}); pick one with --class, or "
                "use --individual DIR"
            )

    start = time.perf_counter()
    if request.reconstruct:
        images, metrics = _reconstructions(request, ckpt, model, device)
        made = _Made(images, None, request.nrow or 8, [f"{i:06d}" for i in range(len(images))])
    else:
        made = _generated(request, model, len(names), asked, device, emit)
    elapsed = time.perf_counter() - start
    if out_file is not None:
        files = [str(_write_grid(out_file, fmt, made, request))]
    else:
        files = _write_each(out_dir, made, names, emit)
    images = made.images
    return SampleResult(
        checkpoint=path,
        model=ckpt.model_name,
        step=ckpt.step,
        n=request.n if request.reconstruct else len(images),  # a class grid: whole rows
        seed=request.seed,
        ema=use_ema,
        files=files,
        images_per_s=len(images) / max(elapsed, 1e-9),
        newest_run=chosen,
        metrics=metrics,
        class_=None if asked is None else names[asked],
        classes=names,
        seeds=None if request.seeds is None else list(request.seeds),
        trunc=request.trunc,
        prior=_prior_said(model) if not request.reconstruct else "",
    )


@dataclass
class _Made:
    """Images made for a request, their classes, the grid's row length and the file stems."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor | None
    nrow: int | None
    stems: list[str]


def _generated(
    request: SampleRequest,
    model: GenerativeModel,
    num_classes: int,
    asked: int | None,
    device: torch.device,
    emit: Emit,
) -> _Made:
    """The latents (from --seed, or one per --seeds seed; truncated at --trunc), their classes,
    and the images."""
    if request.seeds is not None:
        seeds = list(request.seeds)
        z = seed_latents(seeds, model.latent_dim, request.trunc)
        stems = [f"seed{s:04d}" for s in seeds]
        labels, per_row = _labels(len(z), num_classes, asked, None)
        if labels is not None and asked is None:  # each seed's latent in every class
            z, stems = z.repeat(num_classes, 1), stems * num_classes
            labels, per_row = torch.arange(num_classes).repeat_interleave(len(seeds)), len(seeds)
    else:
        z = latents(request.n, model.latent_dim, request.seed, request.interpolate, request.trunc)
        labels, per_row = _labels(len(z), num_classes, asked, request.interpolate)
        z = z[: len(labels)] if labels is not None else z  # whole rows, one per class
        stems = [f"{i:06d}" for i in range(len(z))]
    emit(ProgressEvent(Kind.STAGE, f"generating {len(z)} images"))
    images = generate_uint8(model, z, device, emit=emit, labels=labels)  # uint8 NCHW
    return _Made(images, labels, request.interpolate or request.nrow or per_row, stems)


def _write_grid(out_file: Path, fmt: str, made: _Made, request: SampleRequest) -> Path:
    """One grid; an interpolation as .gif (or .webp): an animation, a frame per step."""
    if request.interpolate and fmt in ("GIF", "WEBP"):
        steps = request.interpolate
        rows = made.images.view(-1, steps, *made.images.shape[1:])  # (R, steps, C, H, W)
        nrow = request.nrow or max(1, math.ceil(math.sqrt(rows.shape[0])))
        frames = [make_grid(rows[:, t], nrow) for t in range(steps)]
        atomic_write_bytes(out_file, animation_bytes(frames, fmt))
    else:
        write_png(out_file, make_grid(made.images, made.nrow), fmt)
    return out_file


def _write_each(out_dir: Path, made: _Made, names: list[str], emit: Emit) -> list[str]:
    """One PNG per image, named by its index or seed (and class)."""
    out_dir.mkdir(exist_ok=True)
    emit(ProgressEvent(Kind.STAGE, f"writing {len(made.images)} PNG files to {out_dir}"))
    files = []
    for i, image in enumerate(made.images):
        named = "" if made.labels is None else f"-{_safe(names[int(made.labels[i])])}"
        target = out_dir / f"{made.stems[i]}{named}.png"
        atomic_write_bytes(target, png_bytes(image))
        files.append(str(target))
        emit(ProgressEvent(Kind.PROGRESS, done=i + 1, total=len(made.images)))
    return files


def _latents_said(trunc: float | None) -> str:
    """The latents' distribution, in words, for the JSON."""
    if trunc is None:
        return "N(0, I)"
    return f"N(0, I) truncated to [-{trunc:g}, {trunc:g}] (entries beyond it drawn again)"


def _prior_said(model: GenerativeModel) -> str:
    """A fitted sampling prior, in words ("" where the latents are decoded as drawn)."""
    prior = getattr(model.sampling_network(), "prior", None)
    if prior is None or not int(prior.fitted):
        return ""
    return f"the fitted mixture prior ({prior.components} components)"


def resolve_class(asked: str, names: list[str]) -> int:
    """A class index from its name or its index; the valid names in the error."""
    if not names:
        raise UsageError("--class: this model is not conditional (it was trained without classes)")
    if asked in names:
        return names.index(asked)
    if asked.isdigit() and int(asked) < len(names):
        return int(asked)
    raise UsageError(
        f"--class {asked!r}: unknown class (valid: {', '.join(names)}, or 0-{len(names) - 1})"
    )


def _labels(
    n: int, num_classes: int, asked: int | None, interpolate: int | None
) -> tuple[torch.Tensor | None, int | None]:
    """A conditional model's classes for n images, and the images per row: all the asked
    class; else one row per class (an interpolation row each, taking the classes in turn)."""
    if not num_classes:
        return None, None
    if asked is not None:
        return torch.full((n,), asked, dtype=torch.long), None
    if interpolate:
        return torch.arange(n) // interpolate % num_classes, interpolate
    return class_grid(n, num_classes)


def _safe(name: str) -> str:
    """A class name as part of a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _reconstructions(
    request: SampleRequest,
    ckpt: checkpoint.Checkpoint,
    model: GenerativeModel,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """`n` dataset images (a seeded random choice) interleaved row by row with their
    reconstructions, as uint8 (2n, C, H, W); and metrics on those images."""
    c, h, _ = ckpt.data_shape
    source = data.load_images(
        request.dataset or ckpt.dataset,
        resolution=h,
        channels=c,
        split=request.split,
        root=request.data_root or recorded_data_root(ckpt.path),
        fitting=data.fitting_for(ckpt.train_config),
    )
    total = source.images.shape[0]
    if request.n > total:
        raise UsageError(f"--n {request.n} is more than the {total} images of that split")
    pick = torch.randperm(total, generator=torch.Generator().manual_seed(request.seed))[: request.n]
    x = source.images[pick].float().div_(255)  # (n, C, H, W) in [0, 1]
    y = None  # a conditional model encodes and decodes each image with its class
    if model.num_classes:
        where = f"{request.dataset or ckpt.dataset} ({request.split})"
        y = labelling.of_images(ckpt.class_names, source.labels, where, source.label_problem)
        y = y[pick]
    recon = torch.cat(
        [
            model.reconstruct(
                x[i : i + BATCH].to(device),
                labels=None if y is None else y[i : i + BATCH].to(device),
            ).cpu()
            for i in range(0, len(x), BATCH)
        ]
    )
    metrics = {"mse": float((recon - x).pow(2).mean())}
    metrics["psnr_db"] = float(10 * torch.log10(1.0 / torch.tensor(max(metrics["mse"], 1e-12))))
    if model.has_likelihood:  # the negative ELBO
        metrics |= mean_elbo_terms(model, source.images[pick], device, request.seed, BATCH, y)
    nrow = request.nrow or 8
    rows = []
    for i in range(0, len(x), nrow):
        rows += [to_uint8(x[i : i + nrow]), to_uint8(recon[i : i + nrow])]
    if len(x) % nrow:  # pad a short last pair of rows so the grid stays aligned
        pad = torch.zeros((nrow - len(x) % nrow, c, h, h), dtype=torch.uint8)
        rows[-2:] = [torch.cat([rows[-2], pad]), torch.cat([rows[-1], pad])]
    return torch.cat(rows), metrics
