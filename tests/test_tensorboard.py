"""TensorBoard: losses, images/s, FID and sample grids as event files, read back."""

from pathlib import Path

import pytest
from conftest import train_tiny

pytest.importorskip("tensorboard")


def events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_losses_throughput_and_grids_are_written(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run, "--log-every", "2", "--sample-every", "3", steps=6)
    acc = events(run)
    tags = acc.Tags()
    assert {"train/d_loss", "train/g_loss", "train/images_per_s"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/d_loss")] == [2, 4, 6]
    assert [e.step for e in acc.Images("samples")] == [3, 6]
    assert acc.Images("samples")[0].width == 2 + 8 * 34  # an 8x8 grid of 32 px with padding


def test_resume_drops_events_past_the_checkpoint(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run, "--log-every", "2", "--checkpoint-every", "4", steps=6)
    step4 = run / "checkpoints" / "step-0000004.safetensors"
    result = run_cli("train", "dcgan", "--resume", step4, "--steps", "8", "--log-every", "2", "-q")
    assert result.code == 0, result
    steps = [e.step for e in events(run).Scalars("train/d_loss")]
    assert steps == [2, 4, 6, 8]  # step 6 of the first run was purged, then written again


def test_off_switch_and_missing_package(run_cli, isolated: Path, monkeypatch) -> None:
    run = isolated / "off"
    train_tiny(run_cli, run, "--no-tensorboard")
    assert not (run / "tensorboard").exists()
    from imagegen.training import tensorboard_log

    monkeypatch.setattr(tensorboard_log, "available", lambda: False)
    train_tiny(run_cli, isolated / "auto")  # default: off without the package, no error
    assert not (isolated / "auto" / "tensorboard").exists()
    result = run_cli("train", "dcgan", "-d", "synthetic", "--tensorboard", "--dry-run")
    assert result.code == 2 and "pip install 'imagegen[tensorboard]'" in result.err
