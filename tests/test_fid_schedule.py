"""A long run measures its own FID by default, within about 5% of its training time
(training/fid_schedule.py), keeps the best checkpoint and says where it peaked."""

import json
from pathlib import Path
from typing import ClassVar

from conftest import TINY, train_tiny

from imagegen.training import fid_schedule, loop
from imagegen.training.fid_schedule import FIDSchedule


def test_the_plan_follows_the_flag_else_the_runs_length() -> None:
    assert FIDSchedule.plan(500, 10_000, 10**6, weights=False, start=0).every == 500
    assert not FIDSchedule.plan(0, 10_000, 10**7, weights=True, start=0).on
    assert not FIDSchedule.plan(None, 10_000, 999_999, weights=True, start=0).on  # short
    assert not FIDSchedule.plan(None, 10_000, 10**6, weights=False, start=0).on  # no weights
    auto = FIDSchedule.plan(None, 10_000, 10**6, weights=True, start=0)
    assert auto.auto and auto.next_step == 200 and "from step 200" in auto.describe()
    assert FIDSchedule.plan(None, 10_000, 10**6, True, start=700).next_step == 701
    assert (
        FIDSchedule.plan(None, 10_000, 10**6, True, start=700, recorded_next=950).next_step == 950
    )


def test_auto_fids_cost_about_the_budget_and_the_last_step_is_measured() -> None:
    """A simulated run: 0.01 s a step, 3 s an FID; 100,000 steps (1,000 s of training)."""
    total, step_s, fid_s = 100_000, 0.01, 3.0
    schedule = FIDSchedule.plan(None, total, 10**7, weights=True, start=0)
    measured = [s for s in range(1, total + 1) if _measured(schedule, s, fid_s, step_s)]
    assert measured[0] == 2000 and measured[-1] == total
    # each FID costs the budget of the steps before the next; the first and last come on top
    assert len(measured) * fid_s <= fid_schedule.BUDGET * total * step_s + 2 * fid_s
    cheap = FIDSchedule.plan(None, total, 10**7, weights=True, start=0)  # FID nearly free:
    steps = [s for s in range(1, total + 1) if _measured(cheap, s, 0.0, 1.0)]
    assert len(steps) == 50  # at most one every MIN_GAP of the run


def _measured(schedule: FIDSchedule, step: int, fid_s: float, step_s: float) -> bool:
    if not schedule.due(step):
        return False
    schedule.measured(step, fid_s, step_s)
    return True


class _FakeMonitor:
    """FIDs that fall, then rise: the best is the third."""

    protocol: ClassVar[dict[str, str]] = {"name": "fake"}

    def __init__(self) -> None:
        self.values = iter([90.0, 70.0, 50.0, 60.0, 65.0, 66.0, 67.0, 68.0])

    def fid(self, model, net) -> float:
        return next(self.values)


def _long_runs_are_short(monkeypatch) -> None:
    """50 steps of 4 images count as long, FIDs 10 steps apart whatever they cost (a timed
    gap would make the steps depend on the machine), and a fake FID."""
    monkeypatch.setattr(fid_schedule, "LONG_RUN_IMAGES", 100)
    monkeypatch.setattr(fid_schedule, "MIN_GAP", 0.2)
    monkeypatch.setattr(fid_schedule, "BUDGET", 1e9)
    monkeypatch.setattr(loop.inception, "find_weights", lambda *a: Path("weights.pt"))
    monkeypatch.setattr(loop, "_fid_monitor", lambda s: _FakeMonitor())


def test_a_long_run_measures_its_fid_by_itself(run_cli, isolated: Path, monkeypatch) -> None:
    _long_runs_are_short(monkeypatch)
    run = isolated / "run"
    extra = ("--batch-size", "4", "--checkpoint-every", "20", "--keep", "10", "--json")
    result = train_tiny(run_cli, run, *extra, steps=50)
    config = json.loads((run / "config.json").read_text())
    assert config["train_config"]["fid_every"] is None
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 11, 21, 31, 41, 50]
    summary = json.loads(result.out)["fid"]
    assert summary["best"] == 50.0 and summary["best_step"] == steps[2]
    assert (run / "checkpoints" / "best.safetensors").is_file()
    short = isolated / "short"  # --fid-every 0 turns it off
    train_tiny(run_cli, short, "--batch-size", "4", "--fid-every", "0", steps=50)
    assert not (short / "metrics.jsonl").exists()


def test_the_first_line_says_so_and_a_resumed_run_keeps_the_schedule(
    run_cli, isolated: Path, monkeypatch
) -> None:
    _long_runs_are_short(monkeypatch)
    run = isolated / "run"
    result = run_cli(
        "train", "dcgan", "-d", "synthetic", "--resolution", "32", "--batch-size", "4",
        "--steps", "50", "--checkpoint-every", "35", "--run-dir", run, *TINY,
    )  # fmt: skip
    assert result.code == 0 and "FID of the EMA model from step 1, then as often" in result.err
    straight = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    resumed = isolated / "resumed"
    middle = run / "checkpoints" / "step-0000035.safetensors"  # its next FID: 41, recorded
    assert run_cli("train", "dcgan", "--resume", middle, "--run-dir", resumed, "-q").code == 0
    again = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert again == [41, 50] and straight[-2:] == [41, 50]  # a plan made anew: 36
