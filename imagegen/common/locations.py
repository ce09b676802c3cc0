"""Where imagegen reads data, caches decoded datasets and writes runs."""

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """The per-user cache folder: `$XDG_CACHE_HOME/imagegen` or `~/.cache/imagegen`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imagegen"


def data_root(option: str | Path | None = None) -> Path:
    """The data root: the `--data-root` option, else `$IMAGEGEN_DATA`, else the user cache."""
    if option:
        return Path(option).expanduser()
    env = os.environ.get("IMAGEGEN_DATA")
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "data"


def decoded_cache_dir() -> Path:
    """Where decoded uint8 datasets are cached: `$IMAGEGEN_CACHE`, else the user cache."""
    env = os.environ.get("IMAGEGEN_CACHE")
    return Path(env).expanduser() if env else user_cache_dir() / "decoded"


# A run folder's layout (storage/runs.py describes it whole): declared here, below every
# stage, because writing files anywhere must refuse a run's checkpoints folder.
RUN_CONFIG = "config.json"
RUN_CHECKPOINTS = "checkpoints"
RUN_SAMPLES = "samples"


def in_run_checkpoints(path: str | Path) -> bool:
    """Whether `path` lies in a run's checkpoints/ folder (where only checkpoints belong)."""
    parent = Path(path).resolve().parent
    return parent.name == RUN_CHECKPOINTS and (parent.parent / RUN_CONFIG).is_file()


def runs_dir() -> Path:
    """The folder that holds run folders: `$IMAGEGEN_RUNS`, else `./checkpoints`."""
    return Path(os.environ.get("IMAGEGEN_RUNS", "checkpoints"))


def downloads_allowed() -> bool:
    """False when `$IMAGEGEN_OFFLINE` is set: never try the network."""
    return os.environ.get("IMAGEGEN_OFFLINE", "") in ("", "0")
