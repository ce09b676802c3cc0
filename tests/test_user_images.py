"""The user's own folders: transparency onto one background, non-square images, said on the
run's first line, through the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

from imagegen.common import locations


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
        result = run_cli(
            "train", "dcgan", "-d", dataset, "--batch-size", "8", "--dry-run", "--json", *extra
        )
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


def _noise_folder(path: Path, seed: int, n: int = 24) -> Path:
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)  # coarse random patterns
        Image.fromarray(blocks).resize((32, 32), Image.Resampling.NEAREST).save(path / f"{i}.png")
    return path


def test_copying_is_measured_and_raises_an_alarm(run_cli, isolated: Path, weights: Path) -> None:
    """A "generator" that returns its training images, against one that makes new ones."""
    train = _noise_folder(isolated / "train", seed=0)
    copied = isolated / "copied"
    copied.mkdir()
    for p in sorted(train.iterdir())[:12]:
        (copied / p.name).write_bytes(p.read_bytes())
    new = _noise_folder(isolated / "new", seed=1, n=12)
    pairs = isolated / "pairs.png"
    args = ("--dataset", train, "--n-ref", "24", "--metrics", "copy", "--json")  # all of train
    result = run_cli("eval", copied, *args, "--save-pairs", pairs)
    assert result.code == 0, result
    payload = json.loads(result.out)
    # A copy's features are its original's up to float rounding: its ratio was 0 on the Intel
    # Xeon and 2.1e-6 on the AMD EPYC (the two sets go through Inception in other batches).
    assert payload["metrics"]["copies"] == 1.0 and payload["metrics"]["nn_ratio"] < 1e-4
    assert any(w.startswith("alarm: 100% of the samples") for w in payload["warnings"])
    with Image.open(pairs) as strip:  # 8 samples above their nearest training images
        assert strip.size == (8 * 34 + 2, 2 * 34 + 2)
    honest = json.loads(run_cli("eval", new, *args).out)
    assert honest["metrics"]["copies"] < 0.05 and honest["metrics"]["nn_ratio"] > 0.5
    assert not any(w.startswith("alarm") for w in honest["warnings"])
    refused = run_cli("eval", new, "--dataset", train, "--save-pairs", isolated / "p.png")
    assert refused.code == 2 and "add copy to --metrics" in refused.err


def test_nearest_neighbours_constructed() -> None:
    from imagegen.evaluation import metrics

    real = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])  # own neighbours at 1, 1, 9
    fake = np.array([[0.1, 0.0], [10.0, 4.5]])
    near = metrics.nearest_neighbours(real, fake, tile=1)  # a pair at a time
    assert near.index.tolist() == [0, 2]
    assert near.distance.tolist() == pytest.approx([0.1, 4.5])
    assert near.ratio.tolist() == pytest.approx([0.1, 0.5])


def _alpha_sprites(folder: Path, n: int = 32) -> Path:
    """n 32-px sprites: a coloured square, clear (alpha 0) around it."""
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        art = np.zeros((32, 32, 4), np.uint8)
        art[8:24, 8:24] = (*rng.integers(0, 256, 3), 255)
        Image.fromarray(art, "RGBA").save(folder / f"{i:02d}.png")
    return folder


def test_keep_alpha_decodes_rgba() -> None:
    from imagegen.data import decode

    art = np.zeros((10, 20, 4), np.uint8)
    art[:, :, 3] = 255
    art[:, :5] = (255, 0, 0, 128)  # a half-clear red left edge
    fitting = decode.Fitting(fit="pad", keep_alpha=True)
    out = decode.fit_image(Image.fromarray(art, "RGBA"), 20, fitting)
    assert out.shape == (20, 20, 4)
    assert out[10, 0].tolist() == [255, 0, 0, 128] and out[0, 10, 3] == 0  # pad: clear
    rgb = decode.composite(torch.from_numpy(out.copy()).permute(2, 0, 1)[None], (0, 0, 255))
    assert rgb[0, :, 10, 0].tolist() == [128, 0, 127] and rgb[0, :, 0, 10].tolist() == [0, 0, 255]


def test_transparent_runs_write_rgba_samples(run_cli, isolated: Path) -> None:
    sprites = _alpha_sprites(isolated / "sprites", n=16)
    result = _train(run_cli, sprites, isolated / "run", "--transparent")
    assert result.code == 0, result
    assert run_cli("sample", isolated / "run", "--n", "4", "--out", isolated / "s.png").code == 0
    with Image.open(isolated / "s.png") as grid:
        assert grid.mode == "RGBA"
    exported = run_cli("convert", isolated / "run", isolated / "m.onnx", "--json", "-q")
    assert exported.code == 0, exported  # checked against onnxruntime where it is installed
    resumed = run_cli("train", "dcgan", "--resume", isolated / "run", "--steps", "2", "-q")
    assert resumed.code == 0, resumed
    bad = _train(run_cli, sprites, isolated / "run2", "--transparent", "--channels", "3")
    assert bad.code == 2 and "--transparent trains on 4 channels" in bad.err


@pytest.mark.integration  # 300 steps, then eval: about 30 s
def test_transparent_training_samples_keep_alpha(run_cli, isolated: Path, weights: Path) -> None:
    sprites = _alpha_sprites(isolated / "sprites")
    run = isolated / "vae"
    result = run_cli(
        "train", "vae", "-d", sprites, "--transparent", "--batch-size", "16", "--steps", "300",
        "--lr", "3e-3", "--run-dir", run, "--set", "width=8", "--set", "latent_dim=4",
    )  # fmt: skip
    assert result.code == 0, result
    assert "RGBA: samples keep an alpha channel (--transparent)" in " ".join(result.err.split())
    assert run_cli("sample", run, "--n", "16", "--individual", isolated / "s").code == 0
    alpha = np.stack([np.asarray(Image.open(p)) for p in sorted((isolated / "s").iterdir())])
    assert alpha.shape == (16, 32, 32, 4)  # RGBA PNGs
    corners, centres = alpha[:, :4, :4, 3], alpha[:, 12:20, 12:20, 3]
    # where the sprites are clear the samples are clear, where they are opaque mostly opaque
    assert corners.mean() < 32 and centres.mean() > 128, (corners.mean(), centres.mean())
    assert (centres.mean(axis=(1, 2)) > corners.mean(axis=(1, 2)) + 100).all()
    result = run_cli("eval", run, "--n", "16", "--metrics", "fid", "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["protocol"]["input"]["composited"] == "RGBA onto white"
    bad = run_cli("sample", run, "--n", "4", "--out", isolated / "s.jpg")
    assert bad.code == 2 and "JPEG has no alpha channel" in bad.err


def test_a_small_folder_hears_of_flip_and_a_named_dataset_does_not(run_cli, isolated: Path) -> None:
    _sprites(isolated / "sprites")
    result = _train(run_cli, isolated / "sprites", isolated / "run")
    said = " ".join(result.err.split())
    assert "24 images are few to learn from: if a mirror image is as valid as the original" in said
    result = _train(run_cli, isolated / "sprites", isolated / "flipped", "--flip")
    assert result.code == 0 and "are few" not in result.err, result
    result = _train(run_cli, "synthetic", isolated / "named")
    assert result.code == 0 and "are few" not in result.err, result


def test_dry_run_shows_a_folders_channels_and_readable_images(run_cli, isolated: Path) -> None:
    """A folder's channels and its readable images are known only once decoded: the plan
    decodes it (once: training then reads the cache), so --dry-run shows the channels that
    train and the steps --epochs makes of the images that decode."""
    folder = isolated / "digits"
    folder.mkdir()
    for i in range(17):
        Image.new("L", (28, 28), 10 * i).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    args = ["train", "dcgan", "-d", folder, "--batch-size", "4", "--epochs", "2", *TINY]
    dry = run_cli(*args, "--dry-run", "--json")
    planned = json.loads(dry.out)
    assert planned["model_config"]["channels"] == 1  # every image grey
    assert planned["total_steps"] == 8  # 17 readable images: 4 batches of 4 an epoch
    cached = sorted(locations.decoded_cache_dir().glob("*.safetensors"))
    assert len(cached) == 1  # the first decode, in the plan
    written = cached[0].stat().st_mtime_ns
    done = run_cli(*args, "--run-dir", isolated / "run", "--json")
    assert done.code == 0 and json.loads(done.out.splitlines()[-1])["step"] == 8, done
    assert sorted(locations.decoded_cache_dir().glob("*.safetensors")) == cached  # no other
    assert cached[0].stat().st_mtime_ns == written  # read, not decoded again
    config = json.loads((isolated / "run" / "config.json").read_text())
    assert config["model_config"]["channels"] == 1 and config["data_shape"][0] == 1
