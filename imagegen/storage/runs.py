"""The run folder: its name, its files, and finding a run's checkpoints.

checkpoints/00000-dcgan-mnist/
  config.json                           the resolved config
  log.jsonl                             one line per --log-every
  metrics.jsonl                         FIDs from --fid-every and results of imagegen eval
  samples/step-0000500.png              grids from a fixed noise batch
  checkpoints/step-0001000.safetensors  every --checkpoint-every steps, the last --keep kept
  checkpoints/latest.safetensors        the newest checkpoint
  checkpoints/best.safetensors          the lowest FID so far (with --fid-every)
"""

import json
import re
from pathlib import Path
from typing import Any

from imagegen.common import jsonl, locations
from imagegen.common.errors import UserError
from imagegen.common.files import atomic_write_bytes

LATEST = "latest.safetensors"
BEST = "best.safetensors"  # the checkpoint with the lowest FID, with --fid-every
CONFIG = locations.RUN_CONFIG
CHECKPOINTS = locations.RUN_CHECKPOINTS
SAMPLES = locations.RUN_SAMPLES
LOG = "log.jsonl"
METRICS = "metrics.jsonl"
_STEP = re.compile(r"step-(\d+)\.safetensors$")
# File or folder names that say nothing about the data: runs are named after the folder above.
_GENERIC = {"train", "test", "val", "valid", "validation", "images", "imgs", "img", "data"}


def step_name(step: int) -> str:
    """`step-0001000`: the stem of a step's checkpoint and sample grid."""
    return f"step-{step:07d}"


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file, a run folder's latest checkpoint, or one of a run's by a short name:
    RUN:best (the lowest FID), RUN:latest, RUN:STEP (step-STEP.safetensors)."""
    path = Path(path)
    run, colon, name = str(path).rpartition(":")
    if colon and not path.exists() and Path(run).is_dir():
        return _named_checkpoint(Path(run), name)
    if path.is_dir():
        latest = checkpoints_dir(path) / LATEST
        if latest.is_file():
            return latest
        raise UserError(f"{path} has no checkpoint ({Path(CHECKPOINTS) / LATEST} is missing)")
    if not path.exists():
        raise UserError(f"checkpoint or run not found: {path}")
    return path


def _named_checkpoint(run: Path, name: str) -> Path:
    """RUN:best, RUN:latest or RUN:STEP as a file; an unknown or missing one says what exists."""
    folder = checkpoints_dir(run)
    if name in ("best", "latest"):
        path = folder / (BEST if name == "best" else LATEST)
        if path.is_file():
            return path
        why = " (a run keeps one when it measures FID: --fid-every)" if name == "best" else ""
        raise UserError(f"{run} has no {name} checkpoint{why}")
    steps = step_checkpoints(run)
    if not name.isdigit():
        raise UserError(f"{run}:{name}: after the colon, best, latest or a step number")
    for step, path in steps:
        if step == int(name):
            return path
    kept = ", ".join(str(s) for s, _ in steps) or "none"
    raise UserError(f"{run} has no checkpoint of step {int(name)} (steps kept: {kept})")


def checkpoints_dir(run: Path) -> Path:
    """A run's checkpoints/ folder."""
    return Path(run) / CHECKPOINTS


def samples_dir(run: Path) -> Path:
    """A run's samples/ folder (its grids)."""
    return Path(run) / SAMPLES


def is_run(path: Path) -> bool:
    """Whether `path` is a run folder (it has a checkpoints/ folder)."""
    return Path(path).is_dir() and checkpoints_dir(path).is_dir()


def run_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file lies in, or None for a file elsewhere."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else None


def recorded_data_root(checkpoint: Path) -> str | None:
    """The data root a run was trained with, from its config.json (None if unknown)."""
    return _recorded(checkpoint, "data_root")


def recorded_precision(checkpoint: Path) -> str | None:
    """The precision a run was trained at, from its config.json (None if unknown)."""
    return _recorded(checkpoint, "precision")


def _recorded(checkpoint: Path, key: str) -> Any:
    run = run_of(checkpoint)
    if run is None or not (run / CONFIG).is_file():
        return None
    try:
        return json.loads((run / CONFIG).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def newest_run() -> Path:
    """The run under the runs folder whose latest checkpoint is newest."""
    root = locations.runs_dir()
    candidates = [p for p in root.glob(f"*/checkpoints/{LATEST}") if p.is_file()]
    if not candidates:
        raise UserError(f"no run with a checkpoint under {root}/; train one or name a checkpoint")
    return max(candidates, key=lambda p: p.stat().st_mtime).parent.parent


def dataset_slug(dataset: str) -> str:
    """A short name for the data: `mnist`; `photos` for ./photos/; `cifar10-jpeg-train` for
    .../cifar10-jpeg/train.zip (a generic name takes the folder above it along)."""
    if "/" not in dataset and "\\" not in dataset:
        name = dataset
    else:
        path = Path(dataset)
        name = path.stem if path.suffix.lower() == ".zip" else path.name
        if name.lower() in _GENERIC and path.parent.name:
            name = f"{path.parent.name}-{name}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return slug or "data"


def next_run_dir(model: str, dataset: str) -> Path:
    """`checkpoints/NNNNN-MODEL-DATA`, numbered after the highest number there."""
    root = locations.runs_dir()
    numbers = [
        int(m.group(1))
        for p in (root.iterdir() if root.is_dir() else [])
        if (m := re.match(r"(\d{5,})-", p.name))
    ]
    return root / f"{max(numbers, default=-1) + 1:05d}-{model}-{dataset_slug(dataset)}"


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's step checkpoints as (step, path), by step (numerically)."""
    found = []
    for path in checkpoints_dir(run_dir).glob("step-*.safetensors"):
        m = _STEP.search(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def rotate(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (latest and best are links or copies
    of their own, so they stay readable)."""
    for _, path in step_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)


def write_config(run_dir: Path, resolved: dict[str, Any]) -> Path:
    """Write config.json atomically."""
    path = Path(run_dir) / CONFIG
    atomic_write_bytes(path, (jsonl.dumps(resolved, indent=2) + "\n").encode())
    return path


def truncate_records(run_dir: Path, step: int) -> None:
    """On resume: drop log and metrics lines written after the checkpoint at `step`."""
    for name in (LOG, METRICS):
        jsonl.truncate(Path(run_dir) / name, step)
