"""Safe file writing: atomic replacement and checks before anything is written."""

import os
import tempfile
from pathlib import Path

from imagegen.errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename.

    A process killed at any moment leaves either the old file or the new one, never a
    half-written file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_link_or_copy(src: Path, dst: Path) -> None:
    """Make `dst` an atomic replica of `src` (a hard link where possible, else a copy)."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(dst, Path(src).read_bytes())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries so a rename survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_file(path: Path, force: bool) -> Path:
    """Refuse an output whose folder is missing or unwritable, or that exists without --force."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder is not writable: {parent}")
    if path.is_dir():
        raise UserError(f"output is a folder, not a file: {path}")
    if path.exists() and not force:
        raise UserError(f"output file exists: {path} (use --force to overwrite)")
    return path


def check_output_dir(path: Path, force: bool) -> Path:
    """Refuse an output folder that is non-empty without --force, or whose parent is missing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output is a file, not a folder: {path}")
    if not path.parent.is_dir():
        raise UserError(f"output folder's parent does not exist: {path.parent}")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise UserError(f"output folder is not writable: {path}")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"output folder is not empty: {path} (use --force to write into it)")
    return path
