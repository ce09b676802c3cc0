"""The CLI as users and scripts call it: help, --json, exit codes, every bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, train_tiny
from PIL import Image
from safetensors.torch import save_file


@pytest.fixture
def run(run_cli, isolated: Path) -> Path:
    path = isolated / "checkpoints" / "00000-dcgan-synthetic"
    train_tiny(run_cli, path)
    return path


def test_version_and_help(run_cli) -> None:
    from imagegen import __version__

    result = run_cli("--version")
    assert result.code == 0 and result.out.strip() == f"imagegen {__version__}"
    commands = ("train", "sample", "eval", "convert")
    for command in commands:
        result = run_cli(command, "--help")
        assert result.code == 0 and "Example" in result.out, result
    listed = run_cli("--help").out.split("Commands")[-1]
    names = [line.split()[0] for line in listed.splitlines() if line.strip().startswith(commands)]
    assert sorted(names) == sorted(commands)  # exactly these: no placeholder commands


def test_python_dash_m_and_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "imagegen", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("imagegen ")


def test_end_to_end_train_then_sample(run_cli, isolated: Path) -> None:
    result = run_cli(
        "train",
        "dcgan",
        "--dataset",
        "synthetic",
        "--resolution",
        "32",
        "--batch-size",
        "16",
        "--steps",
        "6",
        "--json",
        *TINY,
    )
    assert result.code == 0, result
    payload = json.loads(result.out)
    assert payload["step"] == 6 and Path(payload["checkpoint"]).is_file()
    assert set(payload["losses"]) >= {"d_loss", "g_loss"} and payload["images_per_s"] > 0
    assert all(Path(f).exists() for f in payload["files"])
    assert "Run folder" in result.err  # progress goes to stderr, the JSON alone to stdout

    result = run_cli("sample", "--n", "10", "--nrow", "5", "--seed", "1", "--json")
    assert result.code == 0, result
    assert "Using the newest run" in result.err
    grid = Path(json.loads(result.out)["files"][0])
    assert grid.parent == Path(payload["run_dir"]) / "samples"
    with Image.open(grid) as im:
        assert im.size == (5 * 34 + 2, 2 * 34 + 2) and im.mode == "RGB"


def test_same_seed_gives_byte_identical_png(run_cli, run: Path, isolated: Path) -> None:
    for name in ("a.png", "b.png"):
        assert (
            run_cli("sample", run, "--n", "9", "--seed", "5", "--out", isolated / name, "-q").code
            == 0
        )
    assert (isolated / "a.png").read_bytes() == (isolated / "b.png").read_bytes()
    assert run_cli("sample", run, "--n", "9", "--seed", "6", "--out", isolated / "c.png").code == 0
    assert (isolated / "a.png").read_bytes() != (isolated / "c.png").read_bytes()
    assert (
        run_cli(
            "sample", run, "--n", "9", "--seed", "5", "--no-ema", "--out", isolated / "d.png"
        ).code
        == 0
    )
    assert (isolated / "a.png").read_bytes() != (isolated / "d.png").read_bytes()


def test_individual_and_interpolate(run_cli, run: Path, isolated: Path) -> None:
    result = run_cli(
        "sample",
        run / "checkpoints" / "latest.safetensors",
        "--n",
        "5",
        "--individual",
        isolated / "each",
        "--json",
    )
    assert result.code == 0, result
    files = sorted((isolated / "each").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    with Image.open(files[0]) as im:
        assert im.size == (32, 32)
    result = run_cli("sample", run, "--n", "12", "--interpolate", "4", "--out", isolated / "i.png")
    assert result.code == 0, result
    with Image.open(isolated / "i.png") as im:
        assert im.size == (4 * 34 + 2, 3 * 34 + 2)  # 3 rows of 4 steps


def test_quiet_prints_nothing(run_cli, run: Path, isolated: Path) -> None:
    result = run_cli("sample", run, "--n", "4", "--out", isolated / "q.png", "--quiet")
    assert result.code == 0 and result.out == "" and result.err == ""


def one_line_error(result, code: int, *fragments: str) -> None:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagegen: error:"), result.err
    assert "Traceback" not in result.err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_bad_training_input(run_cli, isolated: Path) -> None:
    one_line_error(run_cli("train", "gan", "-d", "synthetic"), 2, "unknown model 'gan'", "dcgan")
    one_line_error(run_cli("train", "dcgan", "-d", "imagenet"), 2, "unknown dataset", "cifar10")
    one_line_error(
        run_cli("train", "dcgan", "-d", "mnist", "--data-root", isolated / "none"),
        1,
        "MNIST not found",
        "train-images-idx3-ubyte",
        str(isolated / "none"),
    )
    (isolated / "empty").mkdir()
    one_line_error(run_cli("train", "dcgan", "-d", isolated / "empty"), 1, "no images")
    (isolated / "junk").mkdir()
    (isolated / "junk" / "a.png").write_bytes(b"junk")
    one_line_error(
        run_cli(
            "train",
            "dcgan",
            "-d",
            isolated / "junk",
            "--batch-size",
            "1",
            "--run-dir",
            isolated / "r",
        ),
        1,
        "no usable image",
        "a.png",
    )
    one_line_error(
        run_cli("train", "dcgan", "-d", "synthetic", "--resolution", "48"),
        2,
        "unsupported resolution 48",
        "32, 64",
    )
    one_line_error(
        run_cli("train", "dcgan", "-d", "synthetic", "--set", "nope=1"), 2, "unknown dcgan option"
    )
    one_line_error(
        run_cli("train", "dcgan", "-d", "synthetic", "--batch-size", "0"), 2, "--batch-size"
    )
    one_line_error(run_cli("train", "dcgan"), 2, "--dataset is required")
    one_line_error(
        run_cli("train", "dcgan", "-d", "synthetic", "--device", "tpu"), 2, "unknown device"
    )
    one_line_error(
        run_cli("train", "dcgan", "-d", "synthetic", "--no-such-flag"), 2, "No such option"
    )
    one_line_error(run_cli("train", "dcgan", "--resume", isolated / "missing"), 1, "not found")
    assert not (isolated / "r").exists()  # nothing written for a failed start


@pytest.mark.parametrize("n", ["0", "-3", "1000000000", "many"])
def test_bad_n(run_cli, run: Path, n: str) -> None:
    result = run_cli("sample", run, "--n", n)
    assert result.code == 2 and "--n" in result.err and "Traceback" not in result.err


def test_bad_sampling_input(run_cli, run: Path, isolated: Path) -> None:
    one_line_error(run_cli("sample", isolated / "nope.safetensors"), 1, "not found")
    (isolated / "text.safetensors").write_text("this is not safetensors")
    one_line_error(run_cli("sample", isolated / "text.safetensors"), 1, "not a safetensors file")
    blob = (run / "checkpoints" / "latest.safetensors").read_bytes()
    (isolated / "half.safetensors").write_bytes(blob[: len(blob) // 2])
    one_line_error(run_cli("sample", isolated / "half.safetensors"), 1, "truncated")
    save_file({"x": torch.zeros(1)}, str(isolated / "other.safetensors"))
    one_line_error(
        run_cli("sample", isolated / "other.safetensors"), 1, "not an imagegen checkpoint"
    )
    one_line_error(
        run_cli("sample", run, "--out", isolated / "missing" / "x.png"), 1, "does not exist"
    )
    (isolated / "exists.png").write_bytes(b"precious")
    one_line_error(run_cli("sample", run, "--out", isolated / "exists.png"), 1, "exists", "--force")
    assert (isolated / "exists.png").read_bytes() == b"precious"
    assert run_cli("sample", run, "--out", isolated / "exists.png", "--force", "-q").code == 0
    assert (isolated / "exists.png").read_bytes() != b"precious"
    one_line_error(run_cli("sample", run, "--n", "5000"), 2, "too large", "--individual")
    one_line_error(run_cli("sample", run, "--interpolate", "1"), 2, "--interpolate")
    (isolated / "full").mkdir()
    (isolated / "full" / "keep.png").write_bytes(b"x")
    one_line_error(run_cli("sample", run, "--individual", isolated / "full"), 1, "not empty")


def test_unwritable_output_is_one_line(run_cli, run: Path) -> None:
    result = run_cli("sample", run, "--out", "/proc/imagegen-test.png")
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.startswith("imagegen: error:")


def test_no_runs_yet(run_cli) -> None:
    one_line_error(run_cli("sample"), 1, "no run with a checkpoint")


def test_a_usage_error_through_the_real_entry_point(isolated: Path) -> None:
    """python -m imagegen: exit 2 and one line, no traceback (Ctrl-C and SIGTERM's 130:
    test_train.py's test_ctrl_c_checkpoints_and_exits_130)."""
    out = subprocess.run(
        [sys.executable, "-m", "imagegen", "sample", "--n", "0"], capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("imagegen: error: ") and "--n" in out.stderr, out.stderr


def test_a_runs_checkpoints_by_short_name(run_cli, isolated: Path) -> None:
    """RUN:best, RUN:latest and RUN:STEP for sample and convert (and every command that
    takes a checkpoint); a missing one says what there is."""
    import shutil

    run = isolated / "run"
    train_tiny(run_cli, run, "--checkpoint-every", "2", steps=4)
    folder = run / "checkpoints"
    shutil.copy(folder / "step-0000002.safetensors", folder / "best.safetensors")  # as FID would
    for name, step in (("best", 2), ("latest", 4), ("2", 2), ("4", 4)):
        result = run_cli("sample", f"{run}:{name}", "--n", "4", "--out", isolated / f"{name}.png",
                         "--json")  # fmt: skip
        assert result.code == 0 and json.loads(result.out)["step"] == step, (name, result)
    converted = run_cli("convert", f"{run}:2", isolated / "g.safetensors", "--weights-only")
    assert converted.code == 0, converted
    (folder / "best.safetensors").unlink()
    for name, words in (("best", "no best checkpoint"), ("3", "steps kept: 2, 4"),
                        ("last", "best, latest or a step number")):  # fmt: skip
        result = run_cli("sample", f"{run}:{name}")
        assert result.code == 1 and words in result.err, (name, result)
