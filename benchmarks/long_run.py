"""A long run's quality curve: what `imagegen train` gives after millions of images.

Reads a run folder that measured its own FID during training (`--fid-every`, the FID monitor's
protocol: `fid_n` samples against as many training images), measures chosen checkpoints again
at the quality benchmark's final protocol (5,000 samples against 10,000 training images, the
extractor in bf16, as benchmarks/bench_quality.py), and writes the record (one JSON line per
measurement, appended; a point already measured is not measured again), a plot and a Markdown
table of images seen -> FID and training minutes.

    python benchmarks/long_run.py RUN --label "dcgan default" --at 1000000,2000000,5000000 \
        --record docs/long-runs/results.jsonl --plot docs/long-runs/cifar10-dcgan.png

Minutes are the run's own clock (`elapsed_s` in its log.jsonl, summed over resumed sessions),
on whatever machine and load it trained under: the report names the machine, and a run that
shared its CPU is not a speed benchmark.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagegen.evaluation.evaluate import evaluate  # noqa: E402
from imagegen.evaluation.request import EvalRequest  # noqa: E402
from imagegen.storage import runs  # noqa: E402

FINAL_N, REF_N = 5000, 10_000  # bench_quality's final protocol


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curve(run: Path) -> list[dict[str, Any]]:
    """The run's own FID points: step, images seen, FID, training minutes at that step."""
    config = json.loads((run / runs.CONFIG).read_text())
    batch = int(config["train_config"]["batch_size"])
    elapsed = {r["step"]: r["elapsed_s"] for r in read_jsonl(run / runs.LOG) if "elapsed_s" in r}
    points = []
    for r in read_jsonl(run / runs.METRICS):
        if "fid" not in r or "fid_n" not in r:  # an `imagegen eval` result, not the monitor's
            continue
        step = int(r["step"])
        logged = [s for s in elapsed if s <= step]
        minutes = elapsed[max(logged)] / 60 if logged else None
        points.append(
            {"step": step, "images": step * batch, "fid": r["fid"], "fid_n": r["fid_n"],
             "minutes": minutes}
        )  # fmt: skip
    return points


def measure(run: Path, step: int, dataset: str, data_root: str | None) -> dict[str, Any]:
    """FID, KID and precision/recall of the run's checkpoint of `step` (EMA weights) at the
    final protocol, not logged to the run."""
    path = runs.find_checkpoint(Path(f"{run}:{step}"))
    request = EvalRequest(
        source=path,
        reference=dataset,
        split="train",
        n=FINAL_N,
        n_ref=REF_N,
        metrics=("fid", "kid", "pr"),
        precision="bf16",
        data_root=data_root,
        log_to_run=False,
        kid_subset_size=1000,
        resolution=32,
    )
    return dict(evaluate(request).metrics)


def plot(runs_: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]], out: Path) -> None:
    """Each run's FID curve during training (lines) and final-protocol figures (squares), by
    (label, points, finals), on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, points, finals) in enumerate(runs_):
        colour, n = f"C{i}", points[0]["fid_n"] if points else 0
        ax.plot([p["images"] / 1e6 for p in points], [p["fid"] for p in points], "o-",
                color=colour, markersize=4,
                label=f"{label}: {n} samples vs {n} training images (during training)")  # fmt: skip
        if finals:
            ax.plot([f["images"] / 1e6 for f in finals], [f["fid"] for f in finals], "s",
                    color=colour,
                    label=f"{label}: {FINAL_N} samples vs {REF_N} (final protocol)")  # fmt: skip
    ax.set_xlabel("training images seen (millions)")
    ax.set_ylabel("FID")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def table(points: list[dict[str, Any]], finals: list[dict[str, Any]], minutes: bool = True) -> str:
    """Markdown: images seen, the run's FID, the final protocol's where measured, minutes
    (left out where the run's clock does not measure training: paused, shared)."""
    at = {f["step"]: f for f in finals}
    best = min((p["fid"] for p in points), default=None)
    rows = [
        "| images seen | FID (during training) | FID, final protocol | precision | recall "
        + ("| training minutes |" if minutes else "|"),
        "| --- | --- | --- | --- | --- |" + (" --- |" if minutes else ""),
    ]
    for p in points:
        f = at.get(p["step"], {})
        mark = "**" if p["fid"] == best else ""
        clock = f"{p['minutes']:.0f}" if p["minutes"] is not None else "–"
        final = f"{f['fid']:.2f}" if f else "–"
        pr = (f"{f['precision']:.3f}", f"{f['recall']:.3f}") if f else ("–", "–")
        rows.append(
            f"| {p['images']:,} | {mark}{p['fid']:.2f}{mark} | {final} | {pr[0]} | {pr[1]} |"
            + (f" {clock} |" if minutes else "")
        )
    return "\n".join(rows)


def measure_run(run: Path, label: str, at: list[int], record: Path, data_root: str | None) -> None:
    """Measure `run`'s checkpoints at the images `at` (those it has and the record lacks) at
    the final protocol, appending each to the record."""
    config = json.loads((run / runs.CONFIG).read_text())
    batch, dataset = config["train_config"]["batch_size"], config["train_config"]["dataset"]
    points = curve(run)
    done = {(r["label"], r["step"]) for r in read_jsonl(record)}
    for images in at:
        step = images // batch
        if (label, step) in done or not any(p["step"] == step for p in points):
            continue
        result = measure(run, step, dataset, data_root)
        row = {"label": label, "step": step, "images": step * batch, **result}
        record.parent.mkdir(parents=True, exist_ok=True)
        with record.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (drawn on one plot)")
    parser.add_argument("--label", action="append", help="each run's label, in order")
    parser.add_argument("--at", default="", help="images seen to measure at the final protocol")
    parser.add_argument("--record", type=Path, required=True, help="the JSON-lines record")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--data-root")
    parser.add_argument(
        "--no-minutes", action="store_true", help="leave the run's clock out (paused, shared)"
    )
    args = parser.parse_args()
    labels = args.label or ["run"]
    if len(labels) != len(args.runs):
        parser.error(f"{len(args.runs)} runs need as many --label, got {len(labels)}")
    at = [int(float(a)) for a in args.at.split(",") if a]
    drawn = []
    for run, label in zip(args.runs, labels, strict=True):
        measure_run(run, label, at, args.record, args.data_root)
        finals = [r for r in read_jsonl(args.record) if r["label"] == label]
        drawn.append((label, curve(run), finals))
        print(f"{label}:\n{table(curve(run), finals, minutes=not args.no_minutes)}")
    if args.plot is not None:
        plot(drawn, args.plot)


if __name__ == "__main__":
    main()
