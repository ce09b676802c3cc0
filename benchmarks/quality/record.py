"""The record: measurements in a JSON-lines file, looked up by key (what is done stays
done), runs set aside under it, and what a run folder says about its run."""

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

from imagegen.common import files
from imagegen.storage import runs
from quality.settings import BenchError, log


class Results:
    """Measurements kept in a JSON-lines file, looked up by key: what is done stays done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line torn by a kill
                self.rows[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {"key": key, **row}
        self.rows[key] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def rename(self, prefix: str, new_prefix: str) -> None:
        """Every row under `prefix/` moves to `new_prefix/`; the file is rewritten atomically."""
        old = f"{prefix}/"
        renamed = {
            k: f"{new_prefix}/{k[len(old) :]}" if k.startswith(old) else k for k in self.rows
        }
        self.rows = {renamed[k]: {**r, "key": renamed[k]} for k, r in self.rows.items()}
        text = "".join(json.dumps(r) + "\n" for r in self.rows.values())
        files.atomic_write_bytes(self.path, text.encode())


# The names set_aside gives: NAME.config-HASH, NAME.IMAGES-images, NAME.carried.
ASIDE = re.compile(r"\.(config-[0-9a-f]{8}|\d+-images|carried)$")


def set_aside(results: Results, key: str, run_dir: Path, tag: str, why: str) -> None:
    """A run that cannot stand for its recipe at the asked budget (its lr decayed to 0 at its
    last step, so going on would raise it again; or its preset was retuned since): its folder
    and rows move aside under a name that carries `tag`, nothing deleted, and the recipe
    trains anew."""
    aside = run_dir.with_name(f"{run_dir.name}.{tag}")
    if aside.exists():
        raise BenchError(f"cannot set {run_dir} aside: {aside} exists (move one of them)")
    log(f"{key}: {why}; kept as {aside.name}, training anew")
    if run_dir.exists():  # its rows may outlive a folder the user removed
        run_dir.rename(aside)
    results.rename(key, f"{key}.{tag}")


def machine() -> str:
    """This machine in words: CPU model, cores and threads used, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def cpu(machine_text: str) -> str:
    """The CPU model of a machine() text."""
    return machine_text.split(",", 1)[0]


def alarms(run_dir: Path) -> list[dict[str, Any]]:
    """The alarms a run raised in all its sessions, from its log (the JSON result of a resumed
    run holds only those of its last session); a log line written before alarms had their own
    field gives its warning as the message."""
    out = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        old = [{"step": row.get("step"), "message": w} for w in row.get("warnings", [])]
        out += row.get("alarms", old)
    return out


def elapsed(run_dir: Path) -> float:
    """Training seconds, from the last log line (it counts across resumes)."""
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["elapsed_s"]) if lines else 0.0


def curve_points(results: Results, key: str) -> list[dict[str, Any]]:
    return sorted(
        (r for k, r in results.rows.items() if k.startswith(f"{key}/curve/")),
        key=lambda r: r["step"],
    )


def best_and_last(results: Results, key: str, tr: dict[str, Any]) -> tuple[dict, float] | None:
    """The curve's best point and its last FID over its best, from the curve points, or from
    the summary that a row carried over from an earlier report holds instead of its points."""
    curve = curve_points(results, key)
    if curve:
        best = min(curve, key=lambda r: r["fid"])
        return best, curve[-1]["fid"] / best["fid"]
    summary = tr.get("curve_summary")
    if summary:
        return {"fid": summary["best_fid"], "images": summary["best_images"]}, summary[
            "last_over_best"
        ]
    return None


def trained_in(tr: dict[str, Any], work: Path) -> str:
    """The precision a run trained at (what `auto` chose), from its record or its folder."""
    if "trained_in" in tr:
        return tr["trained_in"]
    latest = work / tr["dataset"] / tr["recipe"] / "checkpoints" / runs.LATEST
    return runs.recorded_precision(latest) or "?"


def grid_file(results: Results, dataset: str, name: str) -> str:
    """The file name of a recipe's grid: its own run's, or for a name recorded as the run of
    another recipe (`same_run_as`, a candidate its preset adopted) that run's."""
    done = results.get(f"{dataset}/{name}/train") or {}
    return f"{dataset}-{done.get('same_run_as', name)}.png"
