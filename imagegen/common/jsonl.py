"""JSON as imagegen writes it: strict (no NaN or Infinity), and JSON-lines files that survive
a process killed in the middle of a line.

Non-finite floats become `null`: strict parsers (jq, JavaScript, Go) reject the bare `NaN`
that Python's json module writes by default.
"""

import json
import math
from pathlib import Path
from typing import Any, TextIO

from imagegen.common.files import atomic_write_bytes


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float, at any depth, replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON: non-finite floats as null; never NaN or Infinity."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def write_line(f: TextIO, record: dict[str, Any]) -> None:
    """Write one record as a line to an open file, and flush it."""
    f.write(dumps(record) + "\n")
    f.flush()


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line (flushed)."""
    with Path(path).open("a") as f:
        write_line(f, record)


def read(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; lines that do not parse (a torn last line) are left out."""
    records = []
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate(path: Path, step: int) -> None:
    """Keep the records up to `step` (those written after a checkpoint that a resume starts
    from are dropped), and drop torn lines; atomically. No file: nothing to do."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read(path) if _step(r) <= step]
    atomic_write_bytes(path, "".join(dumps(r) + "\n" for r in kept).encode())


def _step(record: dict[str, Any]) -> float:
    value = record.get("step", 0)
    return value if isinstance(value, int | float) else 0
