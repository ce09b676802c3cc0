"""The benchmark scripts still run (tiny arguments): `make bench` must not rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # the benchmark scripts, run small

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"],
        capture_output=True,
        text=True,
        env=os.environ | {"IMAGEGEN_DATA": ""},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_train() -> None:
    result = run(
        "bench_train.py",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--images",
        "128",
        "--batch-size",
        "16",
        "--resolutions",
        "32",
    )
    row = result["rows"][0]
    assert row["imagegen_images_per_s"] > 0 and row["reference_images_per_s"] > 0


def test_bench_precision() -> None:
    result = run(
        "bench_precision.py",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-compile",
        "--presets",
        "classic",
        "adaptive-r1",
        "adaptive-r1:r1_every=4",
        "adaptive-r1:num_classes=10",
        "--precisions",
        "fp32",
    )
    rows = result["rows"]
    assert [(r["preset"], r["precision"]) for r in rows] == [
        ("classic", "fp32"),
        ("adaptive-r1", "fp32"),
        ("adaptive-r1:r1_every=4", "fp32"),
        ("adaptive-r1:num_classes=10", "fp32"),
    ]
    # the conditional step: its class embeddings are lookups, its projection elementwise; no
    # more matrix FLOPs (the counter counts those)
    assert rows[3]["gflop_per_step"] == rows[1]["gflop_per_step"]
    # lazy R1: its second backward in one step of four, so fewer FLOPs per step on average
    assert rows[0]["gflop_per_step"] < rows[2]["gflop_per_step"] < rows[1]["gflop_per_step"]
    assert all(r["gflop_per_step"] > 0 for r in rows)
    # R1 is a second backward through D: more FLOPs than the classic step, and x first says so
    assert rows[1]["gflop_per_step"] > rows[0]["gflop_per_step"] and rows[0]["vs_first"] == 1.0
    assert rows[1]["vs_first"] == round(rows[1]["images_per_s"] / rows[0]["images_per_s"], 3)


def test_bench_precision_side_by_side_with_a_revision() -> None:
    """--previous REV runs REV's own script and imagegen, alternately with this code."""
    args = ["--steps", "2", "--warmup", "1", "--batch-size", "8", "--device", "cpu"]
    args += ["--no-compile", "--presets", "classic", "--precisions", "fp32"]
    result = run("bench_precision.py", *args, "--previous", "HEAD", "--rounds", "1")
    (row,) = result["rows"]
    assert row["preset"] == "classic" and row["ratio"] == round(row["this"] / row["previous"], 3)


def test_bench_fid() -> None:
    from imagegen.common.errors import UserError
    from imagegen.evaluation import inception

    try:
        inception.find_weights()
    except UserError:
        pytest.skip("no Inception weights installed")
    result = run("bench_fid.py", "--n", "6", "--batch-size", "6")  # fails on a disagreement
    assert [r["pipeline"] for r in result["rows"]] == [
        "imagegen fp32",
        "imagegen bf16",
        "reference",
    ]
    assert result["rows"][0]["fid_rel_diff"] <= 0.005 and result["failed"] == []


def test_bench_fid_fails_where_fp32_disagrees() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_fid

    row = {"pipeline": "imagegen fp32", "fid": 10.1, "fid_rel_diff": 0.01}
    assert bench_fid.disagreements([row]) == [
        "imagegen fp32: FID 10.1 is 1.000% from the reference's (at most 0.5%)"
    ]
    assert bench_fid.disagreements([row | {"fid_rel_diff": 0.004}]) == []
    assert bench_fid.disagreements([row | {"pipeline": "imagegen bf16"}]) == []  # not promised


def test_bench_ddp() -> None:
    result = run("bench_ddp.py", "--steps", "3", "--batch-size", "8", "--repeats", "1")
    assert [r["processes"] for r in result["rows"]] == [1, 2, 2]
    assert [r["global_batch"] for r in result["rows"]] == [8, 16, 8]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert result["rows"][0]["vs_1_process"] == 1.0


def test_bench_eval_memory() -> None:
    result = run("bench_eval_memory.py", "--sizes", "200", "400", "--previous-at", "400")
    assert [r["n"] for r in result["rows"]] == [200, 400]
    assert all(r["peak_mb"] > 0 and r["pr_dc_s"] >= 0 for r in result["rows"])
    small, large = result["rows"]
    assert "previous" not in small and large["previous"] == large["values"]


def test_long_run_reads_a_runs_own_curve(tmp_path: Path, weights) -> None:
    """long_run.py's curve: the run's FID points (not eval's results) with images seen and the
    run's clock; its table marks the best; a point recorded earlier is not measured again."""
    run = tmp_path / "run"
    train = [sys.executable, "-m", "imagegen", "train", "dcgan", "-d", "synthetic", "-q"]
    train += ["--steps", "4", "--batch-size", "4", "--fid-every", "2", "--fid-n", "16"]
    train += ["--set", "g_width=8", "--set", "d_width=8", "--log-every", "1", "--run-dir", run]
    env = os.environ | {"IMAGEGEN_CACHE": str(tmp_path / "cache"), "IMAGEGEN_OFFLINE": "1"}
    done = subprocess.run([str(a) for a in train], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    with (run / "metrics.jsonl").open("a") as f:  # an `imagegen eval` result: not the curve
        f.write(json.dumps({"step": 4, "fid": 1.0, "protocol": {}}) + "\n")
    record = tmp_path / "record.jsonl"
    record.write_text(json.dumps({"label": "x", "step": 4, "images": 16, "fid": 9.5,
                                  "precision": 0.5, "recall": 0.25}) + "\n")  # fmt: skip
    cmd = [sys.executable, str(ROOT / "benchmarks/long_run.py"), str(run), "--label", "x"]
    cmd += ["--at", "16", "--record", str(record), "--plot", str(tmp_path / "c.png")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split(" | ") for line in out.stdout.splitlines() if line[2:3].isdigit()]
    assert [r[0] for r in rows] == ["| 8", "| 16"], out.stdout  # the eval result left out
    best = min(range(2), key=lambda i: float(rows[i][1].strip("*")))
    assert rows[best][1].startswith("**") and not rows[1 - best][1].startswith("**")
    assert rows[1][2:5] == ["9.50", "0.500", "0.250"] and rows[0][2] == "–"
    assert len(record.read_text().splitlines()) == 1  # recorded before: not measured again
    assert (tmp_path / "c.png").stat().st_size > 0
    # Two runs on one plot (a branch beside its trunk), a table each; a label for each run.
    both = [*cmd[:3], str(run), "--label", "x", "--label", "y", "--record", str(record)]
    out = subprocess.run([*both, "--plot", str(tmp_path / "two.png")], capture_output=True,
                         text=True, env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0 and "x:\n|" in out.stdout and "y:\n|" in out.stdout, out
    assert (tmp_path / "two.png").stat().st_size > 0
    out = subprocess.run([*cmd[:3], "--label", "x", "--label", "y", "--record", str(record)],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 2 and "1 runs need as many --label, got 2" in out.stderr
