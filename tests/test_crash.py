"""Crash consistency: SIGKILL at every kind of moment, and a disk that fills up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_tiny

from imagegen.storage import checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_killed_runs_resume_to_bit_identical_results() -> None:
    """benchmarks/crash_resume.py: 20 kills of five kinds, each resumed (about 3 minutes)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "crash_resume.py"), "--kills", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["identical"] and result["kills"] == 20
    assert set(result["phases"]) == {"step", "checkpoint", "sample", "log", "link"}


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs of a given size (root only; skipped where mounting is not allowed)."""
    mounted: list[Path] = []

    def make(size_kb: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(point)],
            capture_output=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_disk_full_during_a_checkpoint_keeps_the_last_good_one(
    run_cli, isolated: Path, small_disk
) -> None:
    probe = isolated / "probe"
    train_tiny(run_cli, probe, "--no-tensorboard", steps=2)
    size = (probe / "checkpoints" / "latest.safetensors").stat().st_size
    # Room for one checkpoint and the small files, not for two checkpoints at once.
    disk = small_disk(int(size * 1.5 / 1024) + 96)
    run = disk / "run"
    result = run_cli(
        "train", "dcgan", "-d", "synthetic", "--resolution", "32", "--batch-size", "16",
        "--set", "g_width=8", "--set", "d_width=8", "--set", "latent_dim=16", "--steps", "10",
        "--checkpoint-every", "2", "--keep", "1", "--no-tensorboard", "-q", "--run-dir", run,
    )  # fmt: skip
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], result
    assert "the checkpoint of step 4 was not written, step 2" in lines[0] and "intact" in lines[0]
    assert checkpoint.read_checkpoint(run / "checkpoints" / "latest.safetensors").step == 2
    assert not [p for p in run.rglob("*.tmp")]
