"""The `imagegen` command: parse, call a library function, show the result with Rich.

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
"""

import dataclasses
import gc
import inspect
import json
import math
import os
import sys
import typing
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from imagegen import __version__
from imagegen.common import jsonl
from imagegen.common.errors import PeerError, UsageError, UserError
from imagegen.common.options import flag_of
from imagegen.common.progress import Kind
from imagegen.evaluation.request import EvalRequest
from imagegen.models.registry import MODELS
from imagegen.sampling.autoencode_request import (
    DecodeRequest,
    EncodeRequest,
    InterpolateRequest,
    ReconstructRequest,
)
from imagegen.sampling.request import SampleRequest
from imagegen.storage.convert_request import ConvertRequest
from imagegen.training.config import TrainConfig


class _RegistryCommand(TyperCommand):
    """A command whose help reads the model registry when it is shown, not when imagegen is
    imported: a model registered later (a plugin, a test) is listed with its presets and
    defaults. Each parameter's help comes from `_registry_help`, by name."""

    def format_help(self, ctx: Any, formatter: Any) -> None:  # typer's own click types
        self.refresh_help()
        super().format_help(ctx, formatter)

    def refresh_help(self) -> None:
        """Each parameter's help as the registry reads now (docs/render_tables.py too)."""
        for param in self.params:
            text = _registry_help(self.name or "", param.name or "")
            if text is not None:
                param.help = text  # type: ignore[attr-defined]


def _registry_help(command: str, param: str) -> str | None:
    """The help of a parameter that names the registry's models, presets or their defaults."""
    if param == "source" and command in AUTOENCODERS:
        return f"Checkpoint file or run folder of a model with an encoder: {_encoders()}."
    if param == "model" and command == "train":  # the positional argument
        return f"Model to train: {', '.join(MODELS)}."
    cls = {"train": TrainConfig, "convert": ConvertRequest}.get(command)
    declared = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
    if cls is None or param not in declared or "help" not in declared[param].metadata:
        return None
    return _option_help(declared[param], cls)


AUTOENCODERS = ("encode", "decode", "interpolate", "reconstruct")  # commands of encoder models


def _encoders() -> str:
    """The registry's models with an encoder (their classes are imported: help time only)."""
    return ", ".join(n for n, spec in MODELS.items() if spec.model_cls.can_reconstruct) or "none"


app = typer.Typer(
    name="imagegen",
    help="Train, sample, evaluate and convert image generative models (DCGAN, VAE, VAE-GAN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"imagegen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train, sample, evaluate and convert image generative models (DCGAN, VAE, VAE-GAN)."""
    world = os.environ.get("WORLD_SIZE", "1").strip()
    if ctx.invoked_subcommand != "train" and world.isdigit() and int(world) > 1:
        # K processes would each write the same files.
        raise UsageError(f"only `imagegen train` runs under torchrun, not {ctx.invoked_subcommand}")


def _consoles(quiet: bool) -> tuple[Any, Any]:
    from rich.console import Console

    return Console(soft_wrap=True), Console(stderr=True, quiet=quiet, soft_wrap=True)


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _fmt_losses(losses: dict[str, float], width: float = math.inf) -> str:
    """The losses as "name value" pairs two spaces apart, in lines of at most `width`
    characters broken between two losses, never between a name and its value (where one pair
    alone is wider, it has a line of its own)."""
    lines: list[str] = []
    for pair in (f"{k} {v:.4f}" for k, v in losses.items()):
        if lines and len(lines[-1]) + 2 + len(pair) <= width:
            lines[-1] += f"  {pair}"
        else:
            lines.append(pair)
    return "\n".join(lines)


class _TrainView:
    """Renders training events: a Rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, err: Any) -> None:
        self.err = err
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> "_TrainView":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        if self.err.quiet:
            return
        if event.kind == Kind.DECODE:  # the first use of a large dataset: once, then cached
            if event.first:
                self.err.print(_decoding(event), highlight=False)
            return
        if event.kind == Kind.START:
            self.err.print(f"Run folder: {event.path}\n{event.message}", highlight=False)
            if self.err.is_terminal:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )

                self.progress = Progress(
                    TextColumn("[bold]train"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[ips]} img/s"),
                    TextColumn("{task.fields[losses]}"),
                    TimeRemainingColumn(),
                    console=self.err,
                )
                self.progress.start()
                self.task = self.progress.add_task(
                    "train", total=event.total, completed=event.done, ips="-", losses=""
                )
            return
        if self.progress is not None:
            if event.kind in (Kind.STEP, Kind.LOG):
                self.progress.update(
                    self.task,
                    completed=event.done,
                    ips=f"{event.rate:,.0f}",
                    losses=_fmt_losses(event.values),
                )
            elif event.kind in (Kind.CHECKPOINT, Kind.FID, Kind.WARNING):
                self.progress.console.print(self._line(event), highlight=False)
            return
        if event.kind == Kind.LOG:
            eta = int(event.eta_s)
            self.err.print(
                f"step {event.done}/{event.total}  {_fmt_losses(event.values)}  "
                f"{event.rate:,.0f} img/s  "
                f"eta {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}",
                highlight=False,
            )
        elif event.kind in (Kind.CHECKPOINT, Kind.FID, Kind.WARNING):
            self.err.print(self._line(event), highlight=False)

    @staticmethod
    def _line(event: Any) -> str:
        if event.kind == Kind.WARNING:
            return f"warning: step {event.done}: {event.message}"
        if event.kind == Kind.FID:
            best = " (best so far: checkpoints/best.safetensors)" if event.best else ""
            return f"fid {event.values['fid']:.3f} at step {event.done}{best}"
        return f"checkpoint {event.path}"


def _decoding(event: Any) -> str:
    """The line of a dataset's first decode."""
    return (
        f"decoding {event.total:,} images of {event.message} (the first time only; "
        "cached afterwards) ..."
    )


def _preset_help() -> str:
    from imagegen.models.registry import MODELS

    parts = []
    for spec in MODELS.values():
        if spec.presets:
            names = ", ".join(
                f"{name} (default)" if name == spec.default_preset else name
                for name in spec.presets
            )
            parts.append(f"{spec.name}: {names}")
    return "; ".join(parts) + "."


class _StageView:
    """Renders stage and progress events of eval and sample: a Rich progress bar per stage on a
    terminal, one line per stage otherwise, nothing when quiet (or with --json)."""

    def __init__(self, err: Any, quiet: bool) -> None:
        self.err, self.quiet = err, quiet
        self.progress: Any = None
        self.task: Any = None
        self.stage = ""

    def __enter__(self) -> "_StageView":
        if not self.quiet and self.err.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.err,
                transient=True,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        if event.kind == Kind.DECODE and event.first:  # a large dataset's first use
            self._stage(_decoding(event).removesuffix(" ..."))
        if event.kind == Kind.STAGE:
            self._stage(event.message)
        elif event.kind in (Kind.PROGRESS, Kind.DECODE) and self.task is not None:  # a Rich bar
            self.progress.update(self.task, completed=event.done, total=event.total)

    def _stage(self, message: str) -> None:
        self.stage = message
        if self.progress is None:
            self.err.print(f"{message} ...", highlight=False)
        else:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(message, total=None)


TRAIN_EXAMPLE = """Examples:

  imagegen train dcgan --dataset mnist --resolution 32 --steps 2000

  imagegen train dcgan --dataset ./photos --resolution 64 --epochs 10 --json --quiet

  imagegen train dcgan --resume checkpoints/00000-dcgan-mnist --steps 4000
"""


# The train command's options that are not training options (TrainConfig fields): where the
# run goes, how it is launched, model options given as flags, and how the result is shown.
RUN_OPTIONS = (
    "model", "resolution", "channels", "device", "run_dir", "resume", "dist_timeout", "config",
    "option", "data_root", "dry_run", "force", "as_json", "quiet",
)  # fmt: skip


def train(
    model: str = typer.Argument(..., help="Model to train."),
    resolution: int | None = typer.Option(
        None,
        help="Image size: 32, 64 or 128 [default: the data's own, rounded to one of these; "
        "the synthetic set: the model's default].",
    ),
    channels: int | None = typer.Option(None, help="1 or 3 [default: the dataset's own]."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    run_dir: Path | None = typer.Option(
        None, help="Run folder [default: checkpoints/NNNNN-MODEL-DATA]."
    ),
    resume: Path | None = typer.Option(None, help="Continue a run (its folder or a checkpoint)."),
    dist_timeout: float = typer.Option(
        1800.0, help="torchrun jobs: seconds a collective waits for a rank before failing."
    ),
    config: Path | None = typer.Option(None, help="TOML file: training options, [model] table."),
    option: list[str] = typer.Option(
        [], "--set", "-s", help="Model option KEY=VALUE, e.g. --set g_width=32 (repeatable)."
    ),
    data_root: str | None = typer.Option(
        None,
        help="Folder of named datasets [default: $IMAGEGEN_DATA, else ~/.cache/imagegen/data].",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the resolved run (options, model config, total steps) and exit; it refuses "
        "what training would refuse.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print nothing but the result and errors."
    ),
    **train_options: Any,
) -> int:
    """Train a model; writes a run folder with config, log, sample grids and checkpoints.

    Under torchrun (torchrun --nproc-per-node K -m imagegen train ...) it trains data-parallel
    with DistributedDataParallel; rank 0 writes the run folder and prints.
    """
    from imagegen.common.devices import resolve_device
    from imagegen.common.options import parse_assignments
    from imagegen.training import distributed
    from imagegen.training.loop import run_training
    from imagegen.training.plan import plan_training

    flags = _given(**train_options)  # the training options given, by TrainConfig field
    if "steps" in flags and "epochs" in flags:
        raise UsageError("give --steps or --epochs, not both")
    model_flags = parse_assignments(option) | _given(resolution=resolution, channels=channels)
    request = _train_request(model, config, flags, model_flags, resume)
    request = dataclasses.replace(
        request, data_root=data_root, device=device, run_dir=run_dir, force=force
    )
    context = distributed.from_env(dist_timeout)
    out, err = _consoles(quiet)
    if dry_run:
        with _TrainView(err) as view:  # a folder's first decode is said
            plan = plan_training(request, download=False, emit=view)
        if context.is_main:
            resolved = json.dumps(plan.as_dict(), indent=2 if as_json else None)
            if as_json:
                print(resolved)
            else:
                out.print_json(resolved)
        return 0
    device_ = distributed.local_device(resolve_device(device), context)
    with distributed.process_group(context, device_):
        if not context.is_main:  # the other ranks follow rank 0's plan and train silently
            plan = distributed.on_main(context, lambda: plan_training(request))
            result = run_training(plan, None, context)
            return 130 if result.interrupted else 0
        with _TrainView(err) as view:
            # Rank 0 plans (it may download or decode data, or refuse the run folder).
            plan = distributed.on_main(context, lambda: plan_training(request, emit=view))
            result = run_training(plan, view, context)
    return _show_train_result(result, plan.model, out, err, as_json, quiet)


def _shown_default(f: dataclasses.Field, registry: bool) -> str | None:
    """An option's default in its help: the declared one (None: none to show), and with
    `registry` (training options) where the registry's models and presets set their own."""
    from imagegen.models.registry import set_by

    shown = f.metadata["shown"]
    if shown is None and isinstance(f.default, bool):
        shown = "on" if f.default else "off"
    elif shown is None and f.default is None:
        return None
    elif shown is None:
        shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
    if not registry:
        return shown
    by_model, by_preset = set_by(f.name)
    models = "".join(f"; {name}: {value}" for name, value in by_model.items())
    preset = "the preset's, else " if by_preset else ""
    return f"{preset}{shown}{models}"


def option_parameters(cls: type) -> list[inspect.Parameter]:
    """One flag per field of `cls` declared with config.option (TrainConfig: `train`'s,
    EvalRequest: `eval`'s), from its declaration; each defaults to None (not given)."""
    params = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:  # a field the command line does not set
            continue
        flag = flag_of(f)
        kind = _flag_type(typing.get_type_hints(cls)[f.name])
        decls = [f"{flag}/--no-{flag[2:]}" if kind is bool else flag]
        decls += [meta["short"]] if meta["short"] else []
        info = typer.Option(None, *decls, help=_option_help(f, cls))
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind | None
            )
        )
    return params


def _option_help(f: dataclasses.Field, cls: type) -> str:
    """The help of `cls`'s option `f`: its declared text, the presets (--preset) and the
    default shown."""
    text = f.metadata["help"] + (" " + _preset_help() if f.name == "preset" else "")
    if f.name == "model":  # a model by name: the registry's
        text = text.removesuffix(".") + f": {', '.join(MODELS)}."
    shown = _shown_default(f, registry=cls is TrainConfig)
    return text + (f" [default: {shown}]" if shown else "")


def _flag_type(annotation: Any) -> type:
    """The type a flag parses to: bool, int, float, Path or str (a Literal's choices are strings,
    checked with the rest when the config is built)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return args[0] if args[0] in (bool, int, float, Path) else str


def _with_options(command: Any, cls: type, positional: int = 1) -> Any:
    """`command` with a keyword parameter per option of `cls` in place of its **kwargs, after
    its first `positional` arguments."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    first, rest = params[:positional], params[positional:]
    options = [p.replace(kind=p.KEYWORD_ONLY) for p in rest]
    command.__signature__ = signature.replace(
        parameters=[*first, *option_parameters(cls), *options]
    )
    return command


app.command("train", epilog=TRAIN_EXAMPLE, cls=_RegistryCommand)(_with_options(train, TrainConfig))


def _train_request(
    model: str,
    config: Path | None,
    flags: dict[str, Any],
    model_flags: dict[str, Any],
    resume: Path | None,
) -> Any:
    """A TrainRequest from a TOML file (if any) overridden by the flags given."""
    from imagegen.common.options import load_toml
    from imagegen.training.plan import TrainRequest

    options: dict[str, Any] = {}
    model_options: dict[str, Any] = {}
    if config is not None:
        options = load_toml(config)
        table = options.pop("model", {})
        if not isinstance(table, dict):
            raise UsageError(f"{config}: [model] must be a table")
        model_options = {k.replace("-", "_"): v for k, v in table.items()}
        if {"steps", "epochs"} <= options.keys():
            raise UsageError(f"{config}: give steps or epochs, not both")
    for length, other in (("steps", "epochs"), ("epochs", "steps")):
        if length in flags:  # a flag's length replaces the file's, whichever it named
            options.pop(other, None)
    options |= flags
    if "steps" in flags:
        options.setdefault("epochs", 25.0)
    if "dataset" not in options and resume is None:
        raise UsageError("--dataset is required (or --resume RUN)")
    return TrainRequest(model, options, model_options | model_flags, resume=resume)


def _show_train_result(
    result: Any, model: str, out: Any, err: Any, as_json: bool, quiet: bool
) -> int:
    """The summary (or JSON) of a run; the exit code: 130 when it was interrupted."""
    if result.already_complete:
        err.print(
            f"{result.run_dir} is already complete at step {result.step}/{result.total_steps}: "
            f"nothing to train (give --steps above {result.step}, or more --epochs, to go on)",
            highlight=False,
        )
    if as_json:
        print(jsonl.dumps(result.as_dict()))
    elif not quiet:
        from rich.table import Table

        table = Table(show_header=False, box=None)
        table.add_row("run", str(result.run_dir))
        table.add_row("checkpoint", str(result.checkpoint))
        table.add_row("step", f"{result.step}/{result.total_steps}")
        if not result.already_complete:  # nothing was trained: no losses or speed to show
            # the label column is as wide as "checkpoint"; each cell is padded by one a side
            table.add_row("losses", _fmt_losses(result.losses, out.width - len("checkpoint") - 4))
            table.add_row("images/s", f"{result.images_per_s:,.1f}")
            table.add_row("data wait", f"{result.data_wait:.1%} of step time")
        if result.fid is not None:  # where it peaked, and how far the end is from there
            f = result.fid
            table.add_row(
                "fid",
                f"best {f['best']:.2f} at step {f['best_step']} ({result.run_dir}:best); last "
                f"{f['last']:.2f} at step {f['last_step']}, {f['last_over_best']:.2f}x the best",
            )
        for warning in result.warnings:
            table.add_row("warning", warning)
        out.print(table)
    if not result.interrupted:
        return 0
    launcher = "torchrun [the same options] -m imagegen" if result.world_size > 1 else "imagegen"
    err.print(
        f"Interrupted at step {result.step}; checkpoint written. Resume with:\n"
        f"  {launcher} train {model} --resume {result.run_dir}",
        highlight=False,
    )
    return 130


SAMPLE_EXAMPLE = """Examples:

  imagegen sample --n 64

  imagegen sample checkpoints/00000-dcgan-mnist --n 16 --nrow 8 --seed 3 --out digits.png

  imagegen sample run.safetensors --n 1000 --individual out/

  imagegen sample --n 64 --interpolate 8

  imagegen sample --n 16 --interpolate 12 --out walk.gif

  imagegen sample --seeds 0-7,42 --trunc 0.7 --individual picks/

  imagegen sample checkpoints/00002-dcgan-pets --class dog --n 16

  imagegen sample checkpoints/00001-vae-mnist --reconstruct --n 32
"""


def sample(
    source: Path | None = typer.Argument(
        None, help="Checkpoint file or run folder [default: the newest run under checkpoints/]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print nothing but the result and errors."
    ),
    **sample_options: Any,
) -> int:
    """Generate images from a checkpoint and write them as PNG."""
    from imagegen.sampling.generation import parse_seeds
    from imagegen.sampling.sample import sample as run_sample

    options = _given(**sample_options)  # the options given, by SampleRequest field
    if "seeds" in options:
        if "n" in options:
            raise UsageError("give --n or --seeds, not both (--seeds makes one image per seed)")
        options["seeds"] = tuple(parse_seeds(options["seeds"]))
        options["n"] = len(options["seeds"])
    request = SampleRequest(source=source, **options)
    out_c, err = _consoles(quiet)
    with _StageView(err, quiet or as_json) as view:
        result = run_sample(request, view)
    if result.newest_run is not None:
        err.print(f"Using the newest run: {result.newest_run}", highlight=False)
    if as_json:
        print(jsonl.dumps(result.as_dict()))
    elif not quiet:
        where = (
            result.files[0]
            if len(result.files) == 1
            else f"{len(result.files)} files in {Path(result.files[0]).parent}"
        )
        what = "reconstructions" if request.reconstruct else "images"
        if result.class_ is not None:
            what += f" of class {result.class_}"
        elif result.classes:
            what += f", a row per class ({', '.join(result.classes)})"
        out_c.print(
            f"{result.n} {what} from {result.checkpoint} ({result.model}, step {result.step}, "
            f"{'EMA' if result.ema else 'raw'} weights) -> {where}",
            highlight=False,
        )
        if result.metrics:
            out_c.print(
                "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()), highlight=False
            )
    return 0


app.command(epilog=SAMPLE_EXAMPLE)(_with_options(sample, SampleRequest))

EVAL_EXAMPLE = """Examples:

  imagegen eval checkpoints/00000-dcgan-mnist --n 10000

  imagegen eval checkpoints/00000-dcgan-mnist -d mnist --split test --metrics fid,kid,pr,dc --json

  imagegen eval generated/ --dataset cifar10-stats.npz --metrics fid

  imagegen eval generated/ --save-stats generated.npz --metrics fid
"""


def eval_(
    source: Path = typer.Argument(..., help="Checkpoint, run folder, or folder of images."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print nothing but the result and errors."
    ),
    **eval_options: Any,
) -> int:
    """Evaluate a checkpoint, run or image folder: FID, KID, precision/recall, density/coverage."""
    from imagegen.evaluation.evaluate import evaluate
    from imagegen.evaluation.registry import parse_metrics

    out, err = _consoles(quiet)
    options = _given(**eval_options)  # the options given, by EvalRequest field
    if "metrics" in options:
        options["metrics"] = parse_metrics(options["metrics"])
    request = EvalRequest(source=source, **options)
    with _StageView(err, quiet or as_json) as view:
        result = evaluate(request, view)
    for warning in result.warnings:
        err.print(f"warning: {warning}", highlight=False)
    if as_json:
        print(jsonl.dumps(result.as_dict()))
    elif not quiet:
        from rich.table import Table

        table = Table(title="imagegen eval", show_header=True)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in result.metrics.items():
            table.add_row(k, f"{v:.6g}")
        out.print(table)
        ref = result.protocol.get("reference", {})
        ext = result.protocol.get("extractor", {})
        if ref or ext:
            out.print(
                f"reference: {json.dumps(ref)}\nextractor: {ext.get('name', '-')} "
                f"sha256 {ext.get('sha256', '-')[:16]}…; resize {ext.get('resize', '-')}",
                highlight=False,
            )
    return 0


app.command("eval", epilog=EVAL_EXAMPLE)(_with_options(eval_, EvalRequest))

CONVERT_EXAMPLE = """Examples:

  imagegen convert netG_epoch_24.pth dcgan.safetensors --discriminator netD_epoch_24.pth

  imagegen convert netG.pth g.safetensors --nz 100 --ngf 64 --nc 3 --image-size 64

  imagegen convert checkpoints/00000-dcgan-mnist/checkpoints/latest.safetensors export/model.pt

  imagegen convert export/model.pt again.safetensors --model dcgan

  imagegen convert run.safetensors generator.onnx
"""


_JSON = typer.Option(False, "--json", help="Print one JSON object at the end.")
_QUIET = typer.Option(False, "--quiet", "-q", help="Print nothing but the result and errors.")


def convert(
    src: Path = typer.Argument(..., help="Source: .pth/.pt, .safetensors, or a run folder."),
    dst: Path = typer.Argument(..., help="Destination: .safetensors, .pt/.pth or .onnx."),
    option: list[str] = typer.Option(
        [], "--set", "-s", help="Model option KEY=VALUE for an imported state dict."
    ),
    as_json: bool = _JSON,
    quiet: bool = _QUIET,
    **options: Any,
) -> int:
    """Convert checkpoints: import .pth (pytorch/examples DCGAN, state dicts); export .pt, ONNX."""
    from imagegen.common.options import parse_assignments
    from imagegen.storage.convert import convert as run_convert

    asked = parse_assignments(option)
    result = run_convert(ConvertRequest(src=src, dst=dst, set_options=asked, **_given(**options)))
    out, _ = _consoles(quiet)
    if as_json:
        print(jsonl.dumps(result.as_dict()))
    elif not quiet:
        out.print(
            f"{result.direction}: {result.model} -> {', '.join(result.files)}", highlight=False
        )
        if result.check:
            out.print("  ".join(f"{k} {v:.2e}" for k, v in result.check.items()), highlight=False)
    return 0


app.command(epilog=CONVERT_EXAMPLE, cls=_RegistryCommand)(
    _with_options(convert, ConvertRequest, positional=2)
)


_CHECKPOINT = typer.Argument(..., help="Checkpoint file or run folder of a model with an encoder.")
_IMAGES = typer.Argument(..., help="Image files, and folders of them.")

AUTOENCODE_EXAMPLE = """Examples:

  imagegen encode checkpoints/00000-vae-photos photos/ --out codes.safetensors

  imagegen decode checkpoints/00000-vae-photos codes.safetensors --out decoded.png

  imagegen interpolate checkpoints/00000-vae-photos cat.jpg dog.jpg --steps 8 --out walk.gif

  imagegen reconstruct checkpoints/00000-vae-photos photos/ --out reconstructions.png
"""


def _show_autoencoded(result: Any, what: str, as_json: bool, quiet: bool) -> int:
    """One line for an autoencoder command's result (or its JSON)."""
    out, _ = _consoles(quiet)
    if as_json:
        print(jsonl.dumps(result.as_dict()))
    elif not quiet:
        weights = "EMA" if result.ema else "raw"
        out.print(
            f"{result.n} {what} with {result.checkpoint} ({result.model}, step {result.step}, "
            f"{weights} weights, {result.latent_dim} latents) -> {', '.join(result.files)}",
            highlight=False,
        )
        if result.metrics:
            out.print("  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()), highlight=False)
    return 0


def encode(
    source: Path = _CHECKPOINT,
    inputs: list[Path] = _IMAGES,
    as_json: bool = _JSON,
    quiet: bool = _QUIET,
    **options: Any,
) -> int:
    """Encode images to latents (their posterior means) in a .safetensors or .npz file."""
    from imagegen.sampling.autoencode import encode as run

    request = EncodeRequest(source=source, inputs=tuple(inputs), **_given(**options))
    return _show_autoencoded(run(request), "images encoded", as_json, quiet)


def decode(
    source: Path = _CHECKPOINT,
    latents: Path = typer.Argument(..., help="A latents file (encode's .safetensors or .npz)."),
    as_json: bool = _JSON,
    quiet: bool = _QUIET,
    **options: Any,
) -> int:
    """Decode a latents file to a grid of images."""
    from imagegen.sampling.autoencode import decode as run

    request = DecodeRequest(source=source, latents=latents, **_given(**options))
    return _show_autoencoded(run(request), "latents decoded", as_json, quiet)


def interpolate(
    source: Path = _CHECKPOINT,
    first: Path = typer.Argument(..., help="The image to start from."),
    second: Path = typer.Argument(..., help="The image to end at."),
    as_json: bool = _JSON,
    quiet: bool = _QUIET,
    **options: Any,
) -> int:
    """Interpolate between two images: the decoded straight line between their latents."""
    from imagegen.sampling.autoencode import interpolate as run

    request = InterpolateRequest(source=source, first=first, second=second, **_given(**options))
    return _show_autoencoded(run(request), "interpolation steps", as_json, quiet)


def reconstruct(
    source: Path = _CHECKPOINT,
    inputs: list[Path] = _IMAGES,
    as_json: bool = _JSON,
    quiet: bool = _QUIET,
    **options: Any,
) -> int:
    """Reconstruct images: each row above its reconstructions, and the pixel error."""
    from imagegen.sampling.autoencode import reconstruct as run

    request = ReconstructRequest(source=source, inputs=tuple(inputs), **_given(**options))
    return _show_autoencoded(run(request), "images reconstructed", as_json, quiet)


for _command, _request, _positional in (
    (encode, EncodeRequest, 2),
    (decode, DecodeRequest, 2),
    (interpolate, InterpolateRequest, 3),
    (reconstruct, ReconstructRequest, 2),
):
    app.command(epilog=AUTOENCODE_EXAMPLE, cls=_RegistryCommand)(
        _with_options(_command, _request, _positional)
    )


def _error(message: str) -> None:
    line = " ".join(str(message).split())
    sys.stderr.write(f"imagegen: error: {line}\n")
    sys.stderr.flush()


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code; errors become one line on stderr."""
    try:
        rv = app(args=argv, prog_name="imagegen", standalone_mode=False)
    except KeyboardInterrupt:
        sys.stderr.write("imagegen: interrupted\n")
        return 130
    except UserError as e:
        if not isinstance(e, PeerError):
            _error(str(e))
        return e.exit_code
    except OSError as e:
        _error(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
        return 1
    except Exception as e:
        # Click-style errors (Typer bundles click in some versions): a usage error, exit 2.
        if not hasattr(e, "format_message") or not hasattr(e, "exit_code"):
            raise
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
        else:
            _error(e.format_message())
        return int(e.exit_code)
    except BaseException as e:
        if type(e).__name__ == "Abort":
            return 130
        raise
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """Console-script entry point."""
    code = run()
    # Free what a failed torchrun job's traceback kept alive (DDP wrappers holding the process
    # group) now: destroyed during interpreter shutdown instead, gloo aborts the process.
    gc.collect()
    sys.exit(code)
