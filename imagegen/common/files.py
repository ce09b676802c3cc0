"""Safe file writing (atomic replacement, checks before anything is written), and file digests."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

from imagegen.common import locations
from imagegen.common.errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename.

    A process killed at any moment leaves either the old file or the new one, never a
    half-written file.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would: mkstemp makes the file 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, quota, I/O error: the old file is untouched
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


TMP_SUFFIX = ".tmp"  # temporary files: ".NAME.XXXX.tmp" beside their target


def remove_stray_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files a killed process left in `folder` (one level); return them."""
    removed = []
    for path in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_link_or_copy(src: Path, dst: Path) -> None:
    """Make `dst` an atomic replica of `src` (a hard link where possible, else a copy)."""
    tmp = dst.with_name(f".{dst.name}.link{TMP_SUFFIX}")
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


# Image files the commands write, by suffix: the format PIL writes them in.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF"}


def refuse_checkpoint_target(path: Path, what: str = "output") -> None:
    """Refuse to write over a checkpoint, or into a run's checkpoints/ folder."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors" or _is_safetensors(path):
        raise UserError(f"{what} {path} is a checkpoint file; it would be overwritten")
    refuse_run_checkpoints(path, what)


def refuse_run_checkpoints(path: str | Path, what: str = "output") -> None:
    """Refuse to write into a run's checkpoints/ folder (where only checkpoints belong)."""
    if locations.in_run_checkpoints(path):
        raise UserError(f"{what} {path} lies in a run's checkpoints folder; write elsewhere")


def _is_safetensors(path: Path) -> bool:
    """Whether an existing file starts like a safetensors file (a JSON header after 8 bytes)."""
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def check_image_output(path: Path, force: bool) -> tuple[Path, str]:
    """An image output: a known suffix (its format), never a checkpoint, then as
    `check_output_file`. Returns the path and the PIL format to write."""
    path = Path(path)
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"--out {path}: the file name must end in "
            f"{', '.join(IMAGE_FORMATS)} (the suffix names the format written)"
        )
    refuse_checkpoint_target(path, "--out")
    return check_output_file(path, force), fmt


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


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, remembered by path, size and modification time (a
    touched or copied file is hashed once more, to the same digest)."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    memo = locations.decoded_cache_dir().parent / "sha256" / f"{key[:32]}.json"
    try:
        return json.loads(memo.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: hash again
        pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(memo, json.dumps({"path": str(path), "sha256": digest}).encode())
    except (OSError, UserError):  # a read-only cache: the digest still stands
        pass
    return digest
