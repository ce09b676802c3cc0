"""The user's own folders: transparency onto one background, non-square images, said on the
run's first line, through the CLI."""

import json
from pathlib import Path

import numpy as np
from conftest import TINY
from PIL import Image


def _sprites(folder: Path, n: int = 20) -> None:
    """n RGBA sprites of 24x16 (black under their transparent pixels), and 4 opaque ones."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        art = np.zeros((16, 24, 4), np.uint8)
        art[4:12, 6:18] = (*rng.integers(0, 256, 3), 255)
        Image.fromarray(art, "RGBA").save(folder / f"s{i:02d}.png")
    for i in range(4):
        Image.new("RGB", (24, 16), (10, 20, 30)).save(folder / f"o{i}.png")


def _train(run_cli, folder: Path, run: Path, *extra: str):
    return run_cli(
        "train", "dcgan", "-d", folder, "--resolution", "32", "--batch-size", "8",
        "--steps", "1", "--run-dir", run, *TINY, *extra,
    )  # fmt: skip


def test_first_line_says_how_many_images_were_composited(run_cli, isolated: Path) -> None:
    _sprites(isolated / "sprites")
    result = _train(run_cli, isolated / "sprites", isolated / "run")
    assert result.code == 0, result
    assert "20 of 24 images had transparency: composited onto white (--background)" in result.err
    config = json.loads((isolated / "run" / "config.json").read_text())
    assert config["train_config"]["background"] == "white"
    assert config["train_config"]["fit"] == "crop"
    result = _train(
        run_cli, isolated / "sprites", isolated / "run2", "--background", "#00ff00", "--fit", "pad"
    )
    assert result.code == 0, result
    said = " ".join(result.err.split())
    assert "composited onto #00ff00 (--background)" in said
    assert "non-square images padded (--fit pad)" in said


def test_bad_background_and_fit_are_usage_errors(run_cli, isolated: Path) -> None:
    _sprites(isolated / "sprites")
    bad = _train(run_cli, isolated / "sprites", isolated / "run", "--background", "pink")
    assert bad.code == 2 and "background must be white, black or #rrggbb, got 'pink'" in bad.err
    bad = _train(run_cli, isolated / "sprites", isolated / "run", "--fit", "stretch")
    assert bad.code == 2 and "fit" in bad.err and "crop, pad" in bad.err
    assert not (isolated / "run").exists()  # refused before anything was written


def test_background_cannot_change_on_resume(run_cli, isolated: Path) -> None:
    _sprites(isolated / "sprites")
    assert _train(run_cli, isolated / "sprites", isolated / "run").code == 0
    result = run_cli(
        "train", "dcgan", "--resume", isolated / "run", "--steps", "2", "--background", "black"
    )
    assert result.code == 1 and "background: 'white' -> 'black'" in result.err


def _folder(path: Path, size: tuple[int, int], n: int = 10) -> Path:
    path.mkdir()
    for i in range(n):
        Image.new("RGB", size, (20 * i, 50, 90)).save(path / f"{i}.png")
    return path


def test_resolution_defaults_to_the_datas_own(run_cli, isolated: Path) -> None:
    def planned(dataset: Path | str, *extra: str) -> int:
        result = run_cli("train", "dcgan", "-d", dataset, "--dry-run", "--json", *extra)
        assert result.code == 0, result
        return json.loads(result.out)["model_config"]["resolution"]

    assert planned(_folder(isolated / "sprites", (68, 56))) == 64  # 56 px: nearest is 64
    assert planned(_folder(isolated / "digits", (28, 28))) == 32
    assert planned(_folder(isolated / "photos", (300, 200))) == 128  # the largest supported
    assert planned(isolated / "photos", "--resolution", "32") == 32  # a flag still decides
    assert planned("synthetic") == 64  # no size of its own: the model's default
    result = _train(run_cli, isolated / "sprites", isolated / "run", "--resolution", "32")
    assert "resolution 64" not in result.err  # said only where the data chose it
    result = run_cli(
        "train", "dcgan", "-d", isolated / "sprites", "--batch-size", "8", "--steps", "1",
        "--run-dir", isolated / "run2", *TINY,
    )  # fmt: skip
    assert result.code == 0, result
    said = " ".join(result.err.split())
    assert "resolution 64 (the data's most common size, 68x56 in 10 of 10 images" in said
