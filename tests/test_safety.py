"""Nothing lost, nothing crashes: non-finite guards, strict JSON, resume edge cases, alarms."""

import json
import math
import os
import re
import stat
from pathlib import Path

import pytest
import torch
from conftest import train_tiny
from safetensors.torch import load_file

from imagegen.common import jsonl
from imagegen.common.files import atomic_write_bytes
from imagegen.models.registry import MODELS
from imagegen.storage import runs
from imagegen.training.health import HealthMonitor


def strict_lines(path: Path) -> list[dict]:
    """Parse a JSON-lines file as a strict parser would (NaN and Infinity are errors)."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_strict_json_never_writes_nan() -> None:
    text = jsonl.dumps({"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": 2})
    assert json.loads(text) == {"a": None, "b": [1.0, None, {"c": None}], "d": 2}


def test_diverging_run_stops_and_saves_nothing_non_finite(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    args = ["--lr", "1e8", "--log-every", "2", "--checkpoint-every", "1", "--preset", "classic"]
    result = run_cli(
        "train", "dcgan", "-d", "synthetic", "--resolution", "32", "--batch-size", "16",
        "--steps", "40", "--run-dir", run, "--set", "g_width=8", "--set", "d_width=8",
        "--set", "latent_dim=16", "-q", *args,
    )  # fmt: skip
    assert result.code == 1, result
    assert result.err.startswith("imagegen: error: training diverged at step 2: ")
    assert "last good checkpoint is step 1" in result.err and "--lr 2.5e+07" in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    for path in (run / "checkpoints").glob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(path)).values())
    strict_lines(run / "log.jsonl")  # no bare NaN in the log
    # Resuming the last good checkpoint with another lr is accepted (these weights are already
    # too large for any lr to save, so it diverges again: with the same clean error).
    result = run_cli("train", "dcgan", "--resume", run, "--lr", "1e-4", "-q")
    assert "cannot resume" not in result.err
    assert result.code == 0 or "training diverged at step 2" in result.err


def test_exploding_losses_raise_an_alarm_in_log_progress_and_json(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    result = train_tiny(
        run_cli, run, "--lr", "100", "--preset", "classic", "--log-every", "5", "--json", steps=20
    )
    payload = json.loads(result.out)
    assert any("losses explode" in w for w in payload["warnings"]), payload
    # The same alarm apart from its advice, for scripts: in the result and the log line.
    alarm = next(a for a in payload["alarms"] if a["kind"] == "losses-explode")
    assert alarm["message"].startswith("losses explode at step") and "--lr" in alarm["advice"]
    assert f"{alarm['message']}. {alarm['advice']}" in payload["warnings"]
    log = strict_lines(run / "log.jsonl")
    assert any(r.get("alarms") == [alarm] for r in log)
    result = run_cli("train", "dcgan", "--resume", run, "--steps", "25", "--log-every", "5")
    assert result.code == 0  # progress lines go to stderr, the summary to stdout


def test_discriminator_winning_outright_is_flagged_once() -> None:
    health = HealthMonitor(window_steps=100)
    wins = {"d_loss": 0.001, "g_loss": 9.0, "d_real": 0.999, "d_fake": 0.001}
    fair = {"d_loss": 0.9, "g_loss": 1.2, "d_real": 0.7, "d_fake": 0.3}
    assert health.check(50, fair) == []
    assert health.check(100, wins) == [] and health.check(150, wins) == []
    warning = health.check(200, wins)
    assert len(warning) == 1 and "wins outright since step 100" in warning[0].message
    assert warning[0].kind == "discriminator-wins" and warning[0].step == 200
    assert warning[0].text == f"{warning[0].message}. {warning[0].advice}"
    assert health.check(300, wins) == []  # once
    hinge = HealthMonitor(window_steps=100)  # the hinge loss: 0 when every margin holds
    quiet = {"d_loss": 0.0, "g_loss": 3.0, "d_real": 0.8, "d_fake": 0.05}
    assert hinge.check(0, quiet) == [] and len(hinge.check(100, quiet)) == 1


def test_a_growing_gradient_norm_is_not_an_exploding_loss() -> None:
    health = HealthMonitor()
    lines = [{"d_loss": 0.7, "g_loss": 2.0, "r1": 4.0 * 2.0**k} for k in range(14)]  # r1 to 32768
    assert [a for k, line in enumerate(lines) for a in health.check(100 * k, line)] == []
    alarms = health.check(1500, {"d_loss": 0.7, "g_loss": 3000.0, "r1": 4.0})
    assert [a.kind for a in alarms] == ["losses-explode"] and "g_loss" in alarms[0].message


def test_fid_rising_well_above_its_best_is_flagged() -> None:
    health = HealthMonitor()
    assert health.check_fid(1000, 80.0) == [] and health.check_fid(2000, 60.0) == []
    assert health.check_fid(3000, 70.0) == []  # within 20%
    warning = health.check_fid(4000, 90.0)
    assert len(warning) == 1 and "1.50x its best 60.00 (step 2000)" in warning[0].message


@pytest.mark.parametrize("model", ["dcgan", "vaegan"])
def test_alarm_advice_names_only_options_the_gan_models_take(
    run_cli, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Advice a user can follow: every flag and preset it names exists (a dropped one did not)."""
    wins = {"d_loss": 0.001, "g_loss": 9.0, "d_real": 0.999, "d_fake": 0.001}
    health = HealthMonitor(window_steps=1)
    advice = health.check(0, wins) + health.check(1, wins)
    advice += health.check(2, {"d_loss": 1e9, "g_loss": 1e9}) + health.check_fid(3, 50.0)
    advice += health.check_fid(4, 90.0)
    assert len(advice) == 3, advice
    text = " ".join(a.advice for a in advice)
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli("train", model, "--help")
    assert result.code == 0
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert flags and flags <= set(re.findall(r"--[a-z][a-z0-9-]*", result.out)), flags
    for preset in re.findall(r"--preset (\S+)", text):
        assert preset.strip(",.()") in MODELS[model].presets


def test_torn_log_line_and_later_metrics_are_dropped_on_resume(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run, "--log-every", "2", "--checkpoint-every", "4", steps=6)
    # A kill during the write of step 6's line, and an eval row of a later checkpoint.
    with (run / "log.jsonl").open("a") as f:
        f.write('{"step": 7, "d_loss": 0.4')
    jsonl.append(run / "metrics.jsonl", {"step": 4, "fid": 10.0})
    jsonl.append(run / "metrics.jsonl", {"step": 6, "fid": 12.0})
    step4 = run / "checkpoints" / "step-0000004.safetensors"
    result = run_cli("train", "dcgan", "--resume", step4, "--steps", "8", "--log-every", "2", "-q")
    assert result.code == 0, result
    assert [r["step"] for r in strict_lines(run / "log.jsonl")] == [2, 4, 6, 8]
    assert [r["step"] for r in strict_lines(run / "metrics.jsonl")] == [4]


def test_epochs_on_resume_of_a_steps_run_takes_effect(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run, steps=4)
    # 64 batches of 16 make an epoch of the synthetic set: 0.125 epochs are 8 steps.
    result = run_cli("train", "dcgan", "--resume", run, "--epochs", "0.125", "--json", "-q")
    assert result.code == 0, result
    assert json.loads(result.out)["step"] == 8
    assert json.loads((run / "config.json").read_text())["train_config"]["steps"] is None


def test_resume_past_the_end_is_refused_and_leaves_the_run(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run, steps=6)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = run_cli("train", "dcgan", "--resume", run, "--steps", "4")
    assert result.code == 1 and "is at step 6, past the --steps 4 asked for" in result.err
    result = run_cli("train", "dcgan", "--resume", run, "--json")
    assert result.code == 0 and "already complete at step 6/6" in result.err
    assert json.loads(result.out)["already_complete"] is True
    result = run_cli("train", "dcgan", "--resume", run)
    assert result.code == 0 and "images/s" not in result.out  # nothing trained: no speed shown
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_rotation_sorts_steps_as_numbers(isolated: Path) -> None:
    folder = isolated / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for step in (9_999_998, 9_999_999, 10_000_000, 10_000_001):
        (folder / f"{runs.step_name(step)}.safetensors").write_bytes(b"x")
    runs.rotate(isolated / "run", keep=2)
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["step-10000000.safetensors", "step-10000001.safetensors"]


def test_written_files_follow_the_umask(isolated: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(isolated / "a.bin", b"1")
        os.umask(0o077)
        atomic_write_bytes(isolated / "b.bin", b"2")
    finally:
        os.umask(old)
    assert stat.S_IMODE((isolated / "a.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((isolated / "b.bin").stat().st_mode) == 0o600


def test_checkpoints_and_grids_are_group_readable(run_cli, isolated: Path) -> None:
    old = os.umask(0o022)
    try:
        train_tiny(run_cli, isolated / "run")
    finally:
        os.umask(old)
    for path in (isolated / "run").rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


@pytest.mark.parametrize(
    ("dataset", "slug"),
    [
        ("mnist", "mnist"),
        ("/data/cifar10-jpeg/train.zip", "cifar10-jpeg-train"),
        ("/data/photos", "photos"),
        ("/data/Faces HQ/images", "faces-hq-images"),
        ("/data/cats.zip", "cats"),
    ],
)
def test_runs_are_named_after_what_tells_datasets_apart(dataset: str, slug: str) -> None:
    assert runs.dataset_slug(dataset) == slug
