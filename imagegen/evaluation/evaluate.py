"""`imagegen eval`: metrics of a checkpoint, run or image folder against a reference.

Generated images are quantised to uint8 exactly as a saved PNG would be, and never written.
Reference features are computed once and cached, keyed by dataset, split, resolution, count,
protocol and the extractor's hash. Every result carries its protocol. Everything that can be
checked is checked before the slow work (generating, decoding, feature extraction) starts.
"""

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagegen import __version__
from imagegen.common import jsonl
from imagegen.common.devices import resolve_device
from imagegen.common.errors import UsageError
from imagegen.common.files import check_output_file, refuse_run_checkpoints
from imagegen.common.progress import Emit, Kind, ProgressEvent, ignore
from imagegen.data import datasets as data
from imagegen.data import labels as labelling
from imagegen.data.decode import composite, convert_channels
from imagegen.data.image_sizes import native_resolution
from imagegen.evaluation import fid_protocols, inception
from imagegen.evaluation import registry as eval_metrics
from imagegen.evaluation.reference import (
    load_npz_stats,
    reference_features,
    reference_images,
    save_npz_stats,
)
from imagegen.evaluation.request import EvalRequest
from imagegen.models.likelihood import mean_elbo_terms
from imagegen.models.registry import get_spec
from imagegen.sampling.generation import generate_uint8, latents, proportional_labels
from imagegen.sampling.images import make_grid, write_png
from imagegen.storage import checkpoint, runs


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


@dataclass
class _Plan:
    """What is compared with what, resolved before any slow work."""

    ckpt: checkpoint.Checkpoint | None  # None: a folder or zip of images
    source: Path
    reference: str | None
    root: str | None
    resolution: int
    resolution_how: str
    channels: int | None
    feature_metrics: list[str]
    npz: tuple[np.ndarray, np.ndarray, str | None] | None = None
    warnings: list[str] = field(default_factory=list)
    fitting: data.Fitting = field(default_factory=data.Fitting)  # a checkpoint: its run's
    wanted: tuple[str, ...] = ()  # the metrics computed: those asked, and what they imply
    fake_labels: torch.Tensor | None = None  # a conditional model's samples' classes

    @property
    def needs_features(self) -> bool:
        return bool(self.feature_metrics) or self.wants_features or self.save_stats

    wants_features: bool = False  # a metric of the evaluated images' features alone
    wants_logits: bool = False  # a metric of the classifier's logits (the Inception Score)
    save_stats: bool = False


def _check_options(request: EvalRequest) -> None:
    """Option values that are wrong whatever the input (each option's own range: EvalRequest's
    declarations)."""
    if request.precision not in ("fp32", "bf16"):
        raise UsageError(f"--precision must be fp32 or bf16, got {request.precision!r}")
    fid_protocols.check(request.protocol)
    if request.save_stats is not None:
        if Path(request.save_stats).suffix.lower() != ".npz":
            raise UsageError(f"--save-stats {request.save_stats}: the file name must end in .npz")
        refuse_run_checkpoints(request.save_stats, "--save-stats")
        check_output_file(request.save_stats, request.force)
    if request.save_pairs is not None:
        if "copy" not in request.metrics:
            raise UsageError(
                "--save-pairs shows the copy metric's closest pairs: add copy to --metrics"
            )
        if Path(request.save_pairs).suffix.lower() != ".png":
            raise UsageError(f"--save-pairs {request.save_pairs}: the file name must end in .png")
        refuse_run_checkpoints(request.save_pairs, "--save-pairs")
        check_output_file(request.save_pairs, request.force)


def _plan(request: EvalRequest) -> _Plan:
    """Resolve the input, the reference and the sizes; refuse bad combinations now."""
    _check_options(request)
    source = Path(request.source)
    is_images = (source.is_dir() and not runs.is_run(source)) or (
        source.is_file() and source.suffix.lower() == ".zip"
    )
    ckpt = None if is_images else checkpoint.read_checkpoint(runs.find_checkpoint(source))
    wanted = _implied(request.metrics, ckpt)
    feature_metrics = eval_metrics.needing(wanted, "reference")
    reference = request.reference
    if reference is None and ckpt is not None and ckpt.dataset not in ("", "imported"):
        reference = ckpt.dataset
    if feature_metrics and reference is None:
        what = "an image folder" if ckpt is None else f"{ckpt.path} (it names no dataset)"
        raise UsageError(f"--dataset is required to compare {what} with a reference")
    root = request.data_root or (runs.recorded_data_root(ckpt.path) if ckpt else None)
    if ckpt is not None:
        resolution, how = (
            ckpt.data_shape[1],
            f"the model's {ckpt.data_shape[1]}x{ckpt.data_shape[1]}",
        )
        if request.resolution not in (None, resolution):
            raise UsageError(
                f"--resolution {request.resolution} differs from the model's {resolution}"
            )
        channels: int | None = ckpt.data_shape[0]
    elif request.resolution is not None:
        resolution, how, channels = request.resolution, "--resolution", None
    else:
        resolution, how = native_resolution(str(source))
        channels = None
    plan = _Plan(ckpt, source, reference, root, resolution, how, channels, feature_metrics)
    plan.wanted = wanted
    if ckpt is not None:  # references as the run saw them; RGBA composited onto its background
        plan.fitting = replace(data.fitting_for(ckpt.train_config), keep_alpha=False)
        plan.channels = 3 if plan.channels == 4 else plan.channels
    plan.wants_logits = bool(eval_metrics.needing(wanted, "logits"))
    plan.wants_features = plan.wants_logits or bool(eval_metrics.needing(wanted, "features"))
    plan.save_stats = request.save_stats is not None
    if feature_metrics and reference is not None and str(reference).lower().endswith(".npz"):
        others = [m for m in feature_metrics if m != "fid"]
        if others:
            raise UsageError(
                f"{reference} holds only mu and sigma: it serves FID, not {', '.join(others)} "
                "(pass --metrics fid, or a dataset)"
            )
        plan.npz = load_npz_stats(Path(reference))
        made_with = plan.npz[2]
        if made_with is not None and made_with != request.protocol:
            raise UsageError(
                f"{reference} was made with the {made_with} protocol, this evaluation uses "
                f"{request.protocol}: their FID would compare different resize chains (pass "
                f"--protocol {made_with}, or make the statistics again)"
            )
        if made_with is None:
            plan.warnings.append(
                f"{reference} does not record its FID protocol: assumed to be {request.protocol}"
            )
    if eval_metrics.needing(wanted, "likelihood"):
        _check_bpd(plan, request)
    return plan


def _implied(asked: tuple[str, ...], ckpt: checkpoint.Checkpoint | None) -> tuple[str, ...]:
    """The metrics to compute: a conditional model's FID brings its intra-class FID."""
    conditional = ckpt is not None and bool(ckpt.class_names)
    if "intra_fid" in asked and not conditional:
        raise UsageError("intra_fid needs the checkpoint of a conditional model (--conditional)")
    if conditional and "fid" in asked and "intra_fid" not in asked:
        return (*asked, "intra_fid")
    return asked


def _check_bpd(plan: _Plan, request: EvalRequest) -> None:
    """bits/dim needs a likelihood model and held-out images; say which is missing."""
    if plan.ckpt is None or not get_spec(plan.ckpt.model_name).model_cls.has_likelihood:
        raise UsageError("bits/dim needs a checkpoint of a model with a likelihood (vae)")
    if request.test_data is None and data.native_channels(plan.ckpt.dataset) is None:
        raise UsageError(
            f"bits/dim needs held-out images, and {plan.ckpt.dataset or 'this checkpoint'} has "
            "no test split: give them with --test-data (a folder, a .zip, or a dataset name)"
        )


def evaluate(request: EvalRequest, on_event: Emit | None = None) -> EvalResult:
    """Compute the requested metrics; append them to the run's metrics.jsonl for runs."""
    emit = on_event or ignore
    started = time.perf_counter()
    plan = _plan(request)
    device = resolve_device(request.device)
    protocol: dict[str, Any] = {
        "imagegen_version": __version__,
        "seed": request.seed,
        "precision": request.precision,
    }
    extractor = None
    if plan.needs_features:  # before any slow work: bad weights are refused at once
        extractor = inception.load_extractor(request.inception_weights, device)
        protocol["extractor"] = extractor.describe(request.protocol)
        if plan.wants_logits and not extractor.has_logits:
            extractor.logits(torch.zeros(0, 2048))  # raises: why the score is unavailable
    if plan.ckpt is not None:  # a checkpoint gives exactly --n images: check before generating
        _check_sizes(plan, request, request.n, request.n_ref or request.n)
    images, model, protocol["input"] = _input_images(plan, request, device, emit)
    inputs = eval_metrics.Inputs(
        _settings(request), plan.wanted, protocol=protocol, warnings=list(plan.warnings)
    )
    if extractor is not None:
        assert images is not None  # a feature metric is wanted: the images are there
        n_ref = request.n_ref or int(images.shape[0])
        if plan.ckpt is None:  # a folder's count is known only now (checkpoints: above)
            _check_sizes(plan, request, int(images.shape[0]), n_ref)
        emit(ProgressEvent(Kind.STAGE, f"Inception features of the {len(images)} images evaluated"))
        inputs.fake = extractor.features(
            images,
            request.batch_size,
            request.precision,
            request.protocol,
            emit,
        )
        inputs.logits = extractor.logits
        if request.save_stats is not None:
            save_npz_stats(Path(request.save_stats), *inputs.fake_stats(), request.protocol)
        if plan.feature_metrics:
            _reference(plan, request, extractor, inputs, n_ref, emit)
            emit(ProgressEvent(Kind.STAGE, f"computing {', '.join(plan.feature_metrics)}"))
    if model is not None:
        inputs.elbo = lambda: _test_elbo(model, plan, request, device, emit)
    results = eval_metrics.compute(inputs)
    warnings = inputs.warnings
    protocol["seconds"] = round(time.perf_counter() - started, 2)
    files = [str(request.save_stats)] if request.save_stats else []
    if request.save_pairs is not None and plan.npz is None:
        assert images is not None
        _save_pairs(plan, request, images, inputs.cache["neighbours"])
        files.append(str(request.save_pairs))
    run = runs.run_of(plan.ckpt.path) if plan.ckpt is not None else None
    if run is not None and plan.ckpt is not None and request.log_to_run:
        record = {"time": time.time(), "step": plan.ckpt.step, **results, "protocol": protocol}
        jsonl.append(run / runs.METRICS, record)
        files.append(str(run / runs.METRICS))
    return EvalResult(results, protocol, warnings, files)


def _input_images(
    plan: _Plan, request: EvalRequest, device: torch.device, emit: Emit
) -> tuple[torch.Tensor | None, Any, dict[str, Any]]:
    """The images to evaluate (uint8, N x C x H x W): generated, or read from the folder;
    none when no metric needs them (bits/dim alone)."""
    if plan.ckpt is None:
        emit(ProgressEvent(Kind.STAGE, f"reading {plan.source} at {plan.resolution} px"))
        folder = data.load_images(
            str(plan.source),
            resolution=plan.resolution,
            emit=emit,
            fitting=plan.fitting,
        )
        if folder.skipped:
            plan.warnings.append(folder.skipped_text(str(plan.source)))
        g = torch.Generator().manual_seed(request.seed)
        pick = torch.randperm(folder.images.shape[0], generator=g)[: request.n]
        images = folder.images[pick]
        about = {
            "folder": str(plan.source),
            "images": int(images.shape[0]),
            "of": int(folder.images.shape[0]),
            "skipped_files": folder.skipped,
            "transparent_images": folder.transparent,
            "background": plan.fitting.colour,
            "resolution": plan.resolution,
            "resolution_chosen": plan.resolution_how,
        }
        return images, None, about
    ckpt = plan.ckpt
    use_ema = request.use_ema and ckpt.has_ema
    model = checkpoint.build_model(ckpt, use_ema=use_ema).to(device)
    about = {"checkpoint": str(ckpt.path), "model": ckpt.model_name, "step": ckpt.step}
    if not plan.needs_features:  # bits/dim alone: nothing to generate
        return None, model, about | {"ema": use_ema}
    emit(ProgressEvent(Kind.STAGE, f"generating {request.n} images from {ckpt.path}"))
    z = latents(request.n, model.latent_dim, request.seed, None)
    labels = None
    if model.num_classes:  # the classes in the training data's proportions
        counts = [ckpt.classes[c] for c in ckpt.class_names] if ckpt.classes else None
        labels = proportional_labels(request.n, counts or [1] * model.num_classes)
        about["classes"] = "in the training data's proportions" if counts else "uniform"
        plan.fake_labels = labels
    images = generate_uint8(model, z, device, emit=emit, labels=labels)
    if images.shape[1] == 4:  # Inception sees RGB: the samples over the run's background
        images = composite(images, plan.fitting.background)
        about["composited"] = f"RGBA onto {plan.fitting.colour}"
    about |= {
        "generated": int(images.shape[0]),
        "ema": use_ema,
        "quantised": "uint8, as a saved PNG",
        "resolution": plan.resolution,
    }
    return images, model, about


PAIRS = 8  # the closest sample/reference pairs --save-pairs shows


def _save_pairs(plan: _Plan, request: EvalRequest, images: torch.Tensor, near: Any) -> None:
    """A strip of the samples nearest to a reference image (top row) above those images."""
    ref_res, _ = _reference_resolution(plan, request)
    reference, _, _ = reference_images(
        str(plan.reference),
        split=request.split,
        resolution=ref_res,
        channels=plan.channels,
        n=request.n_ref or int(images.shape[0]),
        root=plan.root,
        fitting=plan.fitting,
    )
    order = near.distance.argsort()[:PAIRS]
    fakes = images[order]  # (k, C, H, W) uint8
    reals = convert_channels(reference[near.index[order]], fakes.shape[1])
    if reals.shape[-1] != fakes.shape[-1]:
        reals = (
            torch.nn.functional.interpolate(
                reals.float(), size=fakes.shape[-2:], mode="bilinear", antialias=True
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    assert request.save_pairs is not None
    write_png(request.save_pairs, make_grid(torch.cat([fakes, reals]), len(order)))


def _settings(request: EvalRequest) -> eval_metrics.Settings:
    return eval_metrics.Settings(
        request.kid_subsets, request.kid_subset_size, request.seed, request.fid_at
    )


def _check_sizes(plan: _Plan, request: EvalRequest, n: int, n_ref: int) -> None:
    """Refuse, before features are computed, metrics these counts cannot give."""
    n_ref_images = None if plan.npz is not None else n_ref
    eval_metrics.check_sizes(plan.wanted, n, n_ref_images, _settings(request))


def _reference_resolution(plan: _Plan, request: EvalRequest) -> tuple[int, str]:
    """The size reference images are brought to: a folder or zip reference of an image-folder
    input at its own size (unless --resolution); otherwise the input's size."""
    ref = str(plan.reference)
    if plan.ckpt is None and request.resolution is None and data.native_channels(ref) is None:
        return native_resolution(ref)
    return plan.resolution, f"as the input, {plan.resolution}x{plan.resolution}"


def _reference(
    plan: _Plan,
    request: EvalRequest,
    extractor: inception.Extractor,
    inputs: eval_metrics.Inputs,
    n_ref: int,
    emit: Emit,
) -> None:
    """The reference's features (or an .npz's statistics) into `inputs`; what it was, into
    the protocol."""
    if plan.npz is not None:
        inputs.real_stats = plan.npz[:2]
        inputs.protocol["reference"] = {"npz": str(plan.reference)}
        return
    ref_res, how = _reference_resolution(plan, request)
    inputs.real, available = reference_features(
        extractor,
        str(plan.reference),
        split=request.split,
        resolution=ref_res,
        channels=plan.channels,
        n=n_ref,
        root=plan.root,
        batch_size=request.batch_size,
        precision=request.precision,
        protocol=request.protocol,
        emit=emit,
        fitting=plan.fitting,
    )
    inputs.protocol["reference"] = {
        "dataset": plan.reference,
        "split": request.split,
        "images": int(inputs.real_features().shape[0]),
        "of": int(available),
        "resolution": ref_res,
        "resolution_chosen": how,
    }
    if "intra_fid" in plan.wanted:  # the reference images' classes, in the features' order
        _, labels, problem = reference_images(
            str(plan.reference),
            split=request.split,
            resolution=ref_res,
            channels=plan.channels,
            n=int(inputs.real_features().shape[0]),
            root=plan.root,
            fitting=plan.fitting,
        )
        where = f"the reference {plan.reference} ({request.split})"
        assert plan.ckpt is not None  # intra_fid: a conditional checkpoint's samples
        inputs.classes = plan.ckpt.class_names
        inputs.real_labels = labelling.of_images(inputs.classes, labels, where, problem)
        inputs.fake_labels = plan.fake_labels


def _test_elbo(
    model: Any, plan: _Plan, request: EvalRequest, device: torch.device, emit: Emit
) -> dict[str, float]:
    """The negative ELBO on held-out images, in nats per image and bits/dim."""
    emit(ProgressEvent(Kind.STAGE, "negative ELBO and bits/dim on held-out images"))
    ckpt = plan.ckpt
    assert ckpt is not None  # bits/dim: a likelihood model's checkpoint
    c, res, _ = ckpt.data_shape
    dataset = request.test_data or ckpt.dataset
    split = "test" if data.native_channels(dataset) is not None else "train"
    test = data.load_images(
        dataset,
        resolution=res,
        channels=c,
        split=split,
        root=plan.root,
        fitting=data.fitting_for(ckpt.train_config),  # as trained: RGBA where it was
    )
    labels = None
    if model.num_classes:  # a conditional VAE's bound on -log p(x|y): the images' own classes
        where = f"{dataset} ({split})"
        labels = labelling.of_images(ckpt.class_names, test.labels, where, test.label_problem)
    # bits/dim is affine in the ELBO: the batch means commute
    batch = request.batch_size * 4
    terms = mean_elbo_terms(model, test.images, device, request.seed, batch, labels)
    return {
        "test_neg_elbo": terms["neg_elbo"],
        "test_bpd": terms["bpd"],
        "test_images": float(test.images.shape[0]),
    }
