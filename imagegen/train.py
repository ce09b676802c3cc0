"""The training loop, the same for every model: plan a run, then run it.

A run folder holds `config.json` (the resolved config), `log.jsonl` (losses, throughput),
`samples/step-NNNNNNN.png` (grids from a fixed noise batch) and
`checkpoints/step-NNNNNNN.safetensors` plus `checkpoints/latest.safetensors`.
"""

import contextlib
import json
import math
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imagegen import __version__, checkpoint, data, distributed, locations, metrics
from imagegen.config import (
    RESUMABLE_CHANGES,
    TrainConfig,
    build_dataclass,
    differences,
    to_dict,
)
from imagegen.ema import EMA
from imagegen.errors import UsageError, UserError
from imagegen.files import atomic_link_or_copy, atomic_write_bytes
from imagegen.images import write_grid
from imagegen.registry import get_spec

LATEST = "latest.safetensors"
BEST = "best.safetensors"  # the checkpoint with the lowest FID, with --fid-every


@dataclass(frozen=True)
class TrainRequest:
    """What the user asked for; options hold only what was given explicitly."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's config fields
    data_root: str | None = None
    device: str = "auto"
    run_dir: Path | None = None
    resume: Path | None = None
    force: bool = False


@dataclass(frozen=True)
class TrainPlan:
    """A fully resolved run, ready to start (or to print, for --dry-run)."""

    model: str
    model_config: dict[str, Any]  # `channels` is None when it comes from the dataset
    train: TrainConfig
    dataset: str  # description of the data source
    run_dir: Path
    device: str
    data_root: str | None
    resume_from: Path | None = None
    replace_run_dir: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_config": self.model_config,
            "train_config": to_dict(self.train),
            "dataset": self.dataset,
            "run_dir": str(self.run_dir),
            "device": self.device,
            "data_root": self.data_root,
            "resume_from": str(self.resume_from) if self.resume_from else None,
        }


@dataclass(frozen=True)
class TrainEvent:
    """Progress reported to the caller; the library itself never prints."""

    kind: str  # "start" | "step" | "log" | "sample" | "checkpoint"
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    images_per_s: float = 0.0
    eta_s: float = 0.0
    path: Path | None = None
    message: str = ""


@dataclass(frozen=True)
class TrainResult:
    """What a run did, for the CLI's summary and `--json`."""

    run_dir: Path
    checkpoint: Path | None
    step: int
    total_steps: int
    losses: dict[str, float]
    images_per_s: float
    data_wait: float  # share of step time spent producing batches
    elapsed_s: float
    files: list[str]
    interrupted: bool = False
    resumed_from: int | None = None
    world_size: int = 1  # processes of a torchrun job; images_per_s counts all of them

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "step": self.step,
            "total_steps": self.total_steps,
            "losses": self.losses,
            "images_per_s": round(self.images_per_s, 2),
            "data_wait": round(self.data_wait, 4),
            "elapsed_s": round(self.elapsed_s, 3),
            "files": self.files,
            "interrupted": self.interrupted,
            "resumed_from": self.resumed_from,
            "world_size": self.world_size,
        }


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; asking for a missing CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r} (valid: auto, cpu, cuda)")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on CUDA (no GradScaler needed) and fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file, or a run folder's latest checkpoint."""
    path = Path(path)
    if path.is_dir():
        latest = path / "checkpoints" / LATEST
        if latest.is_file():
            return latest
        raise UserError(f"{path} has no checkpoint ({Path('checkpoints') / LATEST} is missing)")
    if not path.exists():
        raise UserError(f"checkpoint or run not found: {path}")
    return path


def recorded_data_root(checkpoint_path: Path) -> str | None:
    """The data root a run was trained with, from its config.json (None if unknown)."""
    config = Path(checkpoint_path).parent.parent / "config.json"
    if Path(checkpoint_path).parent.name != "checkpoints" or not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("data_root")
    except (OSError, json.JSONDecodeError):
        return None


def newest_run() -> Path:
    """The run under the runs folder whose latest checkpoint is newest."""
    root = locations.runs_dir()
    candidates = [p for p in root.glob(f"*/checkpoints/{LATEST}") if p.is_file()]
    if not candidates:
        raise UserError(f"no run with a checkpoint under {root}/; train one or name a checkpoint")
    return max(candidates, key=lambda p: p.stat().st_mtime).parent.parent


def _next_run_dir(model: str, dataset: str) -> Path:
    root = locations.runs_dir()
    numbers = [
        int(m.group(1))
        for p in (root.iterdir() if root.is_dir() else [])
        if (m := re.match(r"(\d{5})-", p.name))
    ]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(dataset).stem if "/" in dataset else dataset)
    return root / f"{max(numbers, default=-1) + 1:05d}-{model}-{slug.strip('-').lower()}"


def plan_training(request: TrainRequest, download: bool = True) -> TrainPlan:
    """Resolve options, the run folder and resume state; check (or fetch) the data."""
    spec = get_spec(request.model)
    resolve_device(request.device)
    if request.resume is not None:
        return _plan_resume(request, download)
    preset_name, preset = spec.preset(request.options.get("preset"))
    options = spec.train_defaults | preset.train | request.options | {"preset": preset_name}
    if "dataset" in options and data.native_channels(str(options["dataset"])) is None:
        # A folder or zip: store its absolute path so the run can be resumed from anywhere.
        options["dataset"] = str(Path(options["dataset"]).expanduser().resolve())
    train = build_dataclass(TrainConfig, options, "training")
    options = preset.model | request.model_options
    channels = options.pop("channels", None) or data.native_channels(train.dataset)
    # Validate and resolve the model options now; a folder's channels are known once decoded.
    model_config = to_dict(
        build_dataclass(spec.config_cls, options | {"channels": channels or 3}, request.model)
    ) | {"channels": channels}
    described = data.check_dataset(train.dataset, root=request.data_root, download=download)
    run_dir = Path(request.run_dir) if request.run_dir else _next_run_dir(spec.name, train.dataset)
    data_root = str(locations.data_root(request.data_root).resolve())
    replace_run = False
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not request.force:
            raise UserError(
                f"run folder exists: {run_dir} (use --resume {run_dir} to continue it, "
                "or --force to replace it)"
            )
        if not (run_dir / "config.json").is_file():
            raise UserError(f"refusing to replace {run_dir}: it is not an imagegen run folder")
        replace_run = True
    return TrainPlan(
        model=spec.name,
        model_config=model_config,
        train=train,
        dataset=described,
        run_dir=run_dir,
        device=request.device,
        data_root=data_root,
        replace_run_dir=replace_run,
    )


def _plan_resume(request: TrainRequest, download: bool) -> TrainPlan:
    path = find_checkpoint(request.resume)
    ckpt = checkpoint.read_checkpoint(path, expect_model=request.model, load_tensors=False)
    stored_model = to_dict(ckpt.config)
    asked_model = to_dict(
        build_dataclass(
            type(ckpt.config), {**stored_model, **request.model_options}, ckpt.model_name
        )
    )
    diff = differences(stored_model, asked_model)
    if diff:
        raise UserError(f"cannot resume {path} with a different model config: {'; '.join(diff)}")
    stored_train = to_dict(build_dataclass(TrainConfig, ckpt.train_config, "training"))
    train = build_dataclass(TrainConfig, {**stored_train, **request.options}, "training")
    diff = [
        d
        for d in differences(stored_train, to_dict(train))
        if d.split(":")[0] not in RESUMABLE_CHANGES
    ]
    if diff:
        raise UserError(f"cannot resume {path} with different training options: {'; '.join(diff)}")
    if request.run_dir:
        run_dir = Path(request.run_dir)
        if run_dir.exists() and any(run_dir.iterdir()) and run_dir != path.parent.parent:
            raise UserError(f"run folder exists: {run_dir}")
    elif path.parent.name == "checkpoints":
        run_dir = path.parent.parent
    else:
        run_dir = _next_run_dir(ckpt.model_name, train.dataset)
    data_root = request.data_root or recorded_data_root(path)
    return TrainPlan(
        model=ckpt.model_name,
        model_config=stored_model,
        train=train,
        dataset=data.check_dataset(train.dataset, root=data_root, download=download),
        run_dir=run_dir,
        device=request.device,
        data_root=data_root,
        resume_from=path,
    )


class _StopFlag:
    """Ctrl-C or SIGTERM asks the loop to checkpoint and stop; a second one interrupts at once.

    torchrun passes the signal it receives on to its workers once; schedulers send SIGTERM
    before they kill a job.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def _step_file(step: int) -> str:
    return f"step-{step:07d}"


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a resume starts from)."""
    if not log_path.is_file():
        return
    kept = [
        line
        for line in log_path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    atomic_write_bytes(log_path, ("\n".join(kept) + "\n" if kept else "").encode())


class _FIDTracker:
    """FID of the EMA model against the training data, with fixed latents and reference."""

    def __init__(
        self,
        plan: TrainPlan,
        train: TrainConfig,
        config: Any,
        images: data.ImageData,
        device: torch.device,
    ) -> None:
        from imagegen import inception
        from imagegen.evaluate import reference_features  # evaluate imports this module

        self.extractor = inception.load_extractor(None, device)
        self.device = device
        c, res, _ = images.shape
        real, _ = reference_features(
            self.extractor,
            train.dataset,
            split="train",
            resolution=res,
            channels=c,
            n=train.fid_n,
            root=plan.data_root,
            batch_size=64,
        )
        self.reference = metrics.gaussian_stats(real.numpy())
        self.z = torch.randn(
            train.fid_n, config.latent_dim, generator=torch.Generator().manual_seed(train.seed + 3)
        )
        self.protocol = self.extractor.protocol | {"reference_images": int(real.shape[0])}

    def fid(self, model: torch.nn.Module, net: torch.nn.Module) -> float:
        from imagegen.sample import generate_uint8  # sample imports this module

        fake = self.extractor.features(generate_uint8(model, self.z, self.device, net))
        return metrics.frechet_distance(*metrics.gaussian_stats(fake.numpy()), *self.reference)


def _describe_start(
    plan: TrainPlan,
    images: data.ImageData,
    batches: data.EpochBatches,
    device: torch.device,
    ckpt: checkpoint.Checkpoint | None,
    context: distributed.Context,
) -> str:
    parts = [
        f"{plan.model} on {plan.dataset}: {images.images.shape[0]} images "
        f"{tuple(images.shape)}, {batches.batches_per_epoch} batches/epoch, device {device}"
    ]
    if context.enabled:
        backend = "nccl" if device.type == "cuda" else "gloo"
        bn = "synchronised (SyncBatchNorm)" if plan.train.sync_bn else "per rank"
        parts.append(
            f"{context.world_size} processes ({backend}) x batch {plan.train.batch_size} = "
            f"global batch {context.world_size * plan.train.batch_size}, "
            f"BatchNorm statistics {bn}"
        )
    elif plan.train.sync_bn:
        parts.append("--sync-bn has no effect in a single process")
    if ckpt is not None:
        parts.append(f"resumed from step {ckpt.step}")
        trained_with = int(ckpt.counters.get("world_size", 1))
        if trained_with != context.world_size:
            parts.append(
                f"it was trained by {trained_with} process(es), now {context.world_size}: it "
                "continues with the new global batch, not bit-exactly"
            )
    if images.skipped:
        more = ", ..." if images.skipped > len(images.skipped_examples) else ""
        parts.append(
            f"skipped {images.skipped} unreadable file(s): "
            + ", ".join(images.skipped_examples)
            + more
        )
    return "; ".join(parts)


def set_lr_scale(optimizers: dict[str, torch.optim.Optimizer], scale: float) -> None:
    """Set every parameter group's lr to `scale` times its initial lr."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * scale


@dataclass
class _Position:
    step: int = 0


def run_training(
    plan: TrainPlan,
    on_event: Callable[[TrainEvent], None] | None = None,
    context: distributed.Context = distributed.SINGLE,
) -> TrainResult:
    """Train as planned; on Ctrl-C or SIGTERM write a checkpoint and return `interrupted`.

    In a torchrun job every rank calls this inside `distributed.process_group`, with the same
    plan; rank 0 alone writes the run folder and reports events.
    """
    position = _Position()
    try:
        return _train(plan, on_event if context.is_main else None, context, position)
    except Exception as e:
        if context.enabled and distributed.is_communication_error(e):
            raise distributed.lost_contact(e, context, position.step) from None
        raise


def _train(
    plan: TrainPlan,
    on_event: Callable[[TrainEvent], None] | None,
    context: distributed.Context,
    position: _Position,
) -> TrainResult:
    emit = on_event or (lambda event: None)
    main = context.is_main
    spec = get_spec(plan.model)
    train = plan.train
    device = distributed.local_device(resolve_device(plan.device), context)
    if train.sync_bn and context.enabled:
        distributed.check_sync_batchnorm(device)  # before the data is loaded
    started = time.perf_counter()

    ckpt = checkpoint.read_checkpoint(plan.resume_from) if plan.resume_from else None
    channels = plan.model_config.get("channels")
    resolution = plan.model_config["resolution"]
    with distributed.local_main_first(context):  # one decode per machine fills the cache
        images = data.load_images(
            train.dataset, resolution=resolution, channels=channels, root=plan.data_root
        )
    if channels is None:
        channels = images.shape[0]
    config = build_dataclass(
        spec.config_cls, {**plan.model_config, "channels": channels}, plan.model
    )
    batches = data.EpochBatches(
        images.images.to(device), train.batch_size, train.seed, context.rank, context.world_size
    )
    global_batch = train.batch_size * context.world_size
    total = train.steps or math.ceil(train.epochs * batches.batches_per_epoch)

    torch.manual_seed(train.seed)  # the same initial weights on every rank
    # channels_last: oneDNN (CPU) and cuDNN (GPU) convolutions are faster in NHWC.
    model = spec.model_cls(config).to(device, memory_format=torch.channels_last).train()
    if train.sync_bn and context.enabled:
        distributed.convert_sync_batchnorm(model.networks(), device)
    ema = EMA(getattr(model, model.ema_module), train.ema_decay)
    optimizers = model.configure_optimizers(train)
    precision = resolve_precision(train.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    # Each rank draws its own latents, posterior noise and flips; rank 0's stream is the
    # single-process one.
    noise_seed = distributed.noise_seed(train.seed, context.rank)
    noise = torch.Generator(device).manual_seed(noise_seed)
    start_step, elapsed_before, images_seen = 0, 0.0, 0
    if ckpt is not None:
        rng = checkpoint.restore_training_state(ckpt, model, ema.module, optimizers)
        saved = rng.get("noise" if context.rank == 0 else f"noise.{context.rank}")
        if saved is not None and saved.numel() == noise.get_state().numel():
            noise.set_state(saved)
        else:  # moved between devices, or a rank the run did not have: not exact
            noise.manual_seed(noise_seed + ckpt.step)
        start_step = ckpt.step
        ema.updates = int(ckpt.counters.get("ema_updates", ckpt.step))
        elapsed_before = float(ckpt.counters.get("elapsed_s", 0.0))
        images_seen = int(ckpt.counters.get("images_seen", start_step * train.batch_size))
    for opt in optimizers.values():  # the lr schedule scales each group's initial lr
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
    if train.compile:
        for network in model.networks().values():  # in place: state_dict keys stay unprefixed
            network.compile()
    if context.enabled:  # after loading: DDP starts from rank 0's weights, which all ranks have
        model.set_wrappers(distributed.wrap(model.networks(), device))

    run_dir = plan.run_dir
    files: list[str] = []
    log_path = run_dir / "log.jsonl"
    if main:
        if plan.replace_run_dir:
            shutil.rmtree(run_dir)
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        resolved = plan.as_dict() | {
            "model_config": to_dict(config),
            "data_shape": list(images.shape),
            "images": int(images.images.shape[0]),
            "skipped_images": images.skipped,
            "batches_per_epoch": batches.batches_per_epoch,
            "total_steps": total,
            "device": str(device),
            "precision": precision,
            "world_size": context.world_size,
            "global_batch_size": global_batch,
            "imagegen_version": __version__,
        }
        atomic_write_bytes(
            run_dir / "config.json", (json.dumps(resolved, indent=2) + "\n").encode()
        )
        files.append(str(run_dir / "config.json"))
        if ckpt is not None:
            _truncate_log(log_path, start_step)
        else:
            log_path.unlink(missing_ok=True)
        files.append(str(log_path))

    fixed_z = torch.randn(
        train.num_samples,
        config.latent_dim,
        generator=torch.Generator().manual_seed(train.seed + 2),
    ).to(device)
    emit(
        TrainEvent(
            "start",
            start_step,
            total,
            path=run_dir,
            message=_describe_start(plan, images, batches, device, ckpt, context),
        )
    )

    saved_at = -1

    def save(step: int) -> Path:
        """Every rank calls this at the same steps; rank 0 writes the file."""
        nonlocal saved_at
        path = run_dir / "checkpoints" / f"{_step_file(step)}.safetensors"
        if saved_at == step:
            return path
        saved_at = step
        states = distributed.gather(noise.get_state().numpy().tobytes(), context)
        counters: dict[str, Any] = {"world_size": context.world_size}
        if context.enabled:
            digests = distributed.gather(distributed.weights_digest(model), context)
            if len(set(digests)) > 1:
                raise UserError(
                    f"rank {context.rank}: the ranks' weights differ at step {step} "
                    f"(SHA-256 {', '.join(d[:12] for d in digests)}); the job is out of sync"
                )
            counters["rank_weights_sha256"] = digests
        if not main:
            return path
        rng = {
            "noise" if r == 0 else f"noise.{r}": torch.frombuffer(bytearray(b), dtype=torch.uint8)
            for r, b in enumerate(states)
        }
        checkpoint.save_checkpoint(
            path,
            model=model,
            model_name=plan.model,
            train_config=train,
            step=step,
            data_shape=images.shape,
            dataset=train.dataset,
            ema=ema.module,
            optimizers=optimizers,
            rng=rng,
            counters=counters
            | {
                "ema_updates": ema.updates,
                "images_seen": images_seen,
                "elapsed_s": elapsed_before + time.perf_counter() - started,
                "best_fid": best_fid if math.isfinite(best_fid) else None,
            },
        )
        atomic_link_or_copy(path, run_dir / "checkpoints" / LATEST)
        olds = sorted((run_dir / "checkpoints").glob("step-*.safetensors"))
        for old in olds[: -train.keep_checkpoints]:
            old.unlink(missing_ok=True)
        files.append(str(path))
        emit(TrainEvent("checkpoint", step, total, path=path))
        return path

    fid_tracker = (
        _FIDTracker(plan, train, config, images, device) if train.fid_every and main else None
    )
    best_fid = float(ckpt.counters.get("best_fid") or math.inf) if ckpt is not None else math.inf

    def measure_fid(step: int) -> None:
        """Rank 0 measures; every rank learns whether to save a new best checkpoint."""
        nonlocal best_fid
        fid = fid_tracker.fid(model, ema.module) if fid_tracker is not None else math.inf
        improved = distributed.broadcast(fid < best_fid, context)
        if fid_tracker is not None:
            record = {"step": step, "fid": round(fid, 4), "fid_n": train.fid_n, "best": improved}
            with (run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record | {"protocol": fid_tracker.protocol}) + "\n")
            files.append(str(run_dir / "metrics.jsonl"))
        if improved:
            best_fid = fid
            path = save(step)
            if main:
                atomic_link_or_copy(path, run_dir / "checkpoints" / BEST)
                files.append(str(run_dir / "checkpoints" / BEST))
        emit(TrainEvent("fid", step, total, {"fid": fid}, message="best" if improved else ""))

    def sample(step: int) -> None:
        path = run_dir / "samples" / f"{_step_file(step)}.png"
        write_grid(path, model.generate(fixed_z, ema.module))
        files.append(str(path))
        emit(TrainEvent("sample", step, total, path=path))

    sums: dict[str, torch.Tensor] = {}
    count, window_images, window_start = 0, 0, time.perf_counter()
    data_time = step_time = 0.0
    last_losses: dict[str, float] = {}
    last_ips = 0.0
    step = position.step = start_step
    interrupted = False
    with _StopFlag() as stop, contextlib.ExitStack() as stack:
        log = stack.enter_context(log_path.open("a")) if main else None
        while step < total:
            t0 = time.perf_counter()
            real = batches.batch(step).float().div_(255)  # (B, C, R, R) in [0, 1]
            if train.flip:  # drawn from the saved noise stream: resume stays exact
                flip = torch.rand(real.shape[0], generator=noise, device=device) < 0.5
                real = torch.where(flip[:, None, None, None], real.flip(3), real)
            real = real.contiguous(memory_format=torch.channels_last)
            if train.lr_decay == "linear":
                set_lr_scale(optimizers, 1.0 - step / total)
            t1 = time.perf_counter()
            with autocast:
                losses = model.training_step(real, optimizers, noise)
            if main:  # only rank 0's moving average is ever saved or sampled
                ema.update(getattr(model, model.ema_module))
            t2 = time.perf_counter()
            data_time += t1 - t0
            step_time += t2 - t0
            step = position.step = step + 1
            images_seen += global_batch
            window_images += global_batch
            for k, v in losses.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            count += 1
            # One process stops at the next step; a job at the next log line, where the ranks
            # agree on it (a rank that stopped alone would leave the others waiting).
            stop_now = stop.requested and not context.enabled
            if step % train.log_every == 0 or step == total or stop_now:
                flag = torch.tensor([float(stop.requested)], device=device)
                totals = torch.cat([torch.stack(list(sums.values())).float(), flag])
                values = distributed.sum_across(totals, context).cpu().tolist()  # one host sync
                stop_now = values.pop() > 0
                last_losses = {
                    k: v / (count * context.world_size) for k, v in zip(sums, values, strict=True)
                }
                now = time.perf_counter()
                last_ips = window_images / max(now - window_start, 1e-9)
                record = {
                    "step": step,
                    "epoch": round(step / batches.batches_per_epoch, 4),
                    **{k: round(v, 6) for k, v in last_losses.items()},
                    "images_per_s": round(last_ips, 2),
                    "data_wait": round(data_time / max(step_time, 1e-9), 4),
                    "elapsed_s": round(elapsed_before + now - started, 3),
                }
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                sums, count, window_images, window_start = {}, 0, 0, now
                eta = (total - step) / max(last_ips / global_batch, 1e-9)
                emit(TrainEvent("log", step, total, last_losses, last_ips, eta))
            else:
                emit(TrainEvent("step", step, total, last_losses, last_ips))
            if main and (step % train.sample_every == 0 or step == total):
                sample(step)
            if train.fid_every and (step % train.fid_every == 0 or step == total):
                measure_fid(step)
            if step % train.checkpoint_every == 0 or step == total or stop_now:
                save(step)
            if stop_now:
                interrupted = True
                break
    latest = run_dir / "checkpoints" / LATEST
    return TrainResult(
        run_dir=run_dir,
        checkpoint=latest if latest.is_file() else None,
        step=step,
        total_steps=total,
        losses=last_losses,
        images_per_s=(step - start_step) * global_batch / max(step_time, 1e-9),
        data_wait=data_time / max(step_time, 1e-9),
        elapsed_s=time.perf_counter() - started,
        files=sorted(f for f in set(files) if Path(f).exists()),  # rotated ones are gone
        interrupted=interrupted,
        resumed_from=ckpt.step if ckpt is not None else None,
        world_size=context.world_size,
    )
