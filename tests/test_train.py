"""Training: run folder, determinism, exact resume, refusals, interrupts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, train_tiny
from safetensors.torch import load_file


def tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "latest.safetensors"))


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def test_run_folder_layout(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(
        run_cli,
        run,
        "--sample-every",
        "2",
        "--checkpoint-every",
        "1",
        "--keep",
        "2",
        "--log-every",
        "2",
        steps=5,
    )
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "dcgan" and config["model_config"]["g_width"] == 8
    assert config["train_config"]["steps"] == 5 and config["data_shape"] == [3, 32, 32]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 5]
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait"] <= 1 for r in log)
    assert all(set(r) >= {"d_loss", "g_loss", "epoch", "elapsed_s"} for r in log)
    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == ["step-0000002.png", "step-0000004.png", "step-0000005.png"]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["latest.safetensors", "step-0000004.safetensors", "step-0000005.safetensors"]


def test_same_seed_same_weights_other_seed_differs(run_cli, isolated: Path) -> None:
    train_tiny(run_cli, isolated / "a", "--seed", "3")
    train_tiny(run_cli, isolated / "b", "--seed", "3")
    train_tiny(run_cli, isolated / "c", "--seed", "4")
    assert_identical(tensors(isolated / "a"), tensors(isolated / "b"))
    a, c = tensors(isolated / "a"), tensors(isolated / "c")
    assert not torch.equal(a["model/generator.main.0.weight"], c["model/generator.main.0.weight"])


def test_resume_is_bit_exact(run_cli, isolated: Path) -> None:
    """2N steps straight == N steps, then resume to 2N (weights, EMA, Adam, RNG)."""
    extra = ("--checkpoint-every", "100", "--batch-size", "16")
    # 70 steps of 16 cross an epoch boundary of the 1024-image synthetic set (64 batches).
    train_tiny(run_cli, isolated / "straight", *extra, steps=70)
    train_tiny(run_cli, isolated / "split", *extra, steps=35)
    result = run_cli(
        "train", "dcgan", "--resume", isolated / "split", "--steps", "70", "--json", "-q"
    )
    assert result.code == 0, result
    payload = json.loads(result.out)
    assert payload["resumed_from"] == 35 and payload["step"] == 70
    assert_identical(tensors(isolated / "straight"), tensors(isolated / "split"))
    steps = [json.loads(x)["step"] for x in (isolated / "split/log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 70


def test_resume_refuses_a_different_config(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run)
    result = run_cli("train", "dcgan", "--resume", run, "--set", "g_width=16", "--steps", "8")
    assert result.code == 1 and "different model config: g_width: 8 -> 16" in result.err
    result = run_cli("train", "dcgan", "--resume", run, "--batch-size", "8", "--steps", "8")
    assert result.code == 1 and "batch_size: 16 -> 8" in result.err
    result = run_cli("train", "dcgan", "--resume", run, "--resolution", "64")
    assert result.code == 1 and "resolution: 32 -> 64" in result.err


def test_resume_at_the_end_does_nothing(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run)
    before = tensors(run)
    result = run_cli("train", "dcgan", "--resume", run, "--json", "-q")
    assert result.code == 0, result
    assert json.loads(result.out)["step"] == 4
    assert_identical(before, tensors(run))


def test_existing_run_folder_needs_resume_or_force(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run)
    result = run_cli("train", "dcgan", "--dataset", "synthetic", "--run-dir", run, *TINY)
    assert result.code == 1 and "run folder exists" in result.err and "--resume" in result.err
    train_tiny(run_cli, run, "--force", "--seed", "9")
    other = isolated / "not-a-run"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    result = run_cli("train", "dcgan", "--dataset", "synthetic", "--run-dir", other, "--force")
    assert result.code == 1 and "not an imagegen run folder" in result.err
    assert (other / "precious.txt").read_text() == "keep me"


def test_runs_are_numbered_under_checkpoints(run_cli, isolated: Path) -> None:
    for _ in range(2):
        result = run_cli(
            "train",
            "dcgan",
            "-d",
            "synthetic",
            "--resolution",
            "32",
            "--steps",
            "1",
            "--batch-size",
            "8",
            "-q",
            "--json",
            *TINY,
        )
        assert result.code == 0, result
    names = sorted(p.name for p in (isolated / "checkpoints").iterdir())
    assert names == ["00000-dcgan-synthetic", "00001-dcgan-synthetic"]


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_checkpoints_and_exits_130(isolated: Path, sig: signal.Signals) -> None:
    run = isolated / "run"
    cmd = [
        sys.executable,
        "-m",
        "imagegen",
        "train",
        "dcgan",
        "-d",
        "synthetic",
        "--resolution",
        "32",
        "--batch-size",
        "8",
        "--steps",
        "100000",
        "--log-every",
        "1",
        "--run-dir",
        str(run),
        *TINY,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("step ") or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Resume with" in err and f"--resume {run}" in err
    assert "Traceback" not in err
    saved = load_file(str(run / "checkpoints" / "latest.safetensors"))
    assert saved  # a readable checkpoint at the interrupted step
    # Resuming continues from it.
    step = int(json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagegen",
            "train",
            "dcgan",
            "--resume",
            str(run),
            "--steps",
            str(step + 2),
            "--json",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resumed_from"] == step


def test_dry_run_writes_nothing(run_cli, isolated: Path) -> None:
    result = run_cli("train", "dcgan", "-d", "synthetic", "--dry-run", "--json", "--lr", "1e-3")
    assert result.code == 0, result
    resolved = json.loads(result.out)
    assert resolved["train_config"]["lr"] == 1e-3 and resolved["model"] == "dcgan"
    assert resolved["model_config"]["channels"] == 3
    assert not (isolated / "checkpoints").exists()


def test_the_plan_resolves_the_length_that_trains(run_cli, isolated: Path) -> None:
    """--epochs becomes steps once, in the plan: --dry-run shows the steps that then train, and
    refuses a dataset smaller than the batch as training would."""
    args = ["train", "dcgan", "-d", "synthetic", "--batch-size", "256", "--epochs", "1.5", *TINY]
    dry = run_cli(*args, "--resolution", "32", "--dry-run", "--json")
    assert json.loads(dry.out)["total_steps"] == 6, dry  # 1,024 images: 4 batches an epoch
    done = run_cli(*args, "--resolution", "32", "--run-dir", "r", "--json", "--log-every", "1")
    assert done.code == 0 and json.loads(done.out.splitlines()[-1])["step"] == 6, done
    too_few = run_cli("train", "dcgan", "-d", "synthetic", "--batch-size", "2048", "--dry-run")
    assert too_few.code == 2 and "has 1024 images, fewer than the batch size 2048" in too_few.err
    assert not (isolated / "checkpoints").exists()


def test_a_run_planned_far_past_its_curves_flattening_is_told(run_cli, isolated: Path) -> None:
    """The default DCGAN planned for 5M images (100 CIFAR-10 epochs) hears where its measured
    FID curve flattened; a run of 3.2M images, or of a recipe never measured so long, not."""
    from imagegen.models.registry import MODELS

    flat = MODELS["dcgan"].presets[MODELS["dcgan"].default_preset].flattens
    assert flat is not None
    plan = ["train", "dcgan", "-d", "synthetic", "--dry-run", "--json"]
    far = json.loads(run_cli(*plan, "--steps", "312500").out)
    assert far["length_advice"].startswith("5,000,000 training images planned, far past")
    assert f"about {flat.images:,} buy most of it" in far["length_advice"]
    assert "length_advice" not in json.loads(run_cli(*plan, "--steps", "200000").out)
    classic = run_cli(*plan, "--steps", "312500", "--preset", "classic")
    assert "length_advice" not in json.loads(classic.out)


def test_toml_config_and_flags_override_it(run_cli, isolated: Path) -> None:
    cfg = isolated / "run.toml"
    cfg.write_text(
        'dataset = "synthetic"\nbatch_size = 8\nsteps = 2\nlr = 0.001\n'
        "[model]\nresolution = 32\ng_width = 8\nd_width = 8\n"
    )
    result = run_cli("train", "dcgan", "--config", cfg, "--lr", "0.002", "--dry-run", "--json")
    assert result.code == 0, result
    resolved = json.loads(result.out)
    assert resolved["train_config"]["lr"] == 0.002 and resolved["train_config"]["batch_size"] == 8
    assert resolved["model_config"]["g_width"] == 8
    cfg.write_text('dataset = "synthetic"\nbatch_szie = 8\n')
    result = run_cli("train", "dcgan", "--config", cfg)
    assert result.code == 2 and "unknown training option: batch_szie" in result.err
    cfg.write_text('dataset = "synthetic"\n[model]\nwidth = 8\n')
    result = run_cli("train", "dcgan", "--config", cfg)
    assert result.code == 2 and "unknown dcgan option: width" in result.err
    cfg.write_text('dataset = "synthetic"\nsteps = 10\nepochs = 2\n')  # steps silently won
    result = run_cli("train", "dcgan", "--config", cfg, "--dry-run")
    assert result.code == 2 and "give steps or epochs, not both" in result.err, result
    cfg.write_text('dataset = "synthetic"\nsteps = 10\n')  # a flag's length replaces the file's
    result = run_cli("train", "dcgan", "--config", cfg, "--epochs", "0.5", "--dry-run", "--json")
    assert json.loads(result.out)["train_config"]["steps"] is None, result


def test_epochs_set_the_number_of_steps(run_cli, isolated: Path) -> None:
    result = run_cli(
        "train",
        "dcgan",
        "-d",
        "synthetic",
        "--resolution",
        "32",
        "--batch-size",
        "256",
        "--epochs",
        "1.5",
        "--run-dir",
        isolated / "r",
        "--json",
        "-q",
        *TINY,
    )
    assert result.code == 0, result
    assert json.loads(result.out)["step"] == 6  # 1024 / 256 = 4 batches per epoch


def test_folder_run_resumes_from_another_folder(run_cli, isolated: Path, monkeypatch) -> None:
    from PIL import Image

    (isolated / "imgs").mkdir()
    for i in range(20):
        Image.new("RGB", (40, 40), (i * 10, 0, 0)).save(isolated / "imgs" / f"{i}.png")
    (isolated / "imgs" / "bad.jpg").write_bytes(b"nope")
    result = run_cli(
        "train",
        "dcgan",
        "-d",
        "imgs",
        "--resolution",
        "32",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--run-dir",
        isolated / "run",
        *TINY,
    )
    assert result.code == 0, result
    assert "skipped 1 unreadable file(s): bad.jpg" in result.err
    elsewhere = isolated / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run_cli("train", "dcgan", "--resume", isolated / "run", "--steps", "3", "-q")
    assert result.code == 0, result


def test_a_run_says_where_its_fid_peaked(isolated: Path) -> None:
    """The summary's FIDs come from --fid-every's records; eval's records are not counted."""
    from imagegen.training.loop import fid_summary

    run = isolated / "run"
    run.mkdir()
    assert fid_summary(run) is None
    lines = [
        {"step": 100, "fid": 80.0, "fid_n": 2000, "best": True},
        {"step": 200, "fid": 50.0, "fid_n": 2000, "best": True},
        {"step": 150, "metrics": {"fid": 10.0}, "source": "eval"},
        {"step": 300, "fid": 55.0, "fid_n": 2000, "best": False},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert fid_summary(run) == {
        "best": 50.0, "best_step": 200, "last": 55.0, "last_step": 300, "last_over_best": 1.1,
    }  # fmt: skip
