"""With MNIST in the data root (skipped cleanly where it is absent)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen.data import datasets as data

pytestmark = pytest.mark.integration  # real MNIST, hundreds of steps


def test_mnist_few_hundred_cpu_steps(run_cli, mnist_root: Path, isolated: Path) -> None:
    result = run_cli(
        "train",
        "dcgan",
        "--dataset",
        "mnist",
        "--data-root",
        mnist_root,
        "--resolution",
        "32",
        "--batch-size",
        "32",
        "--steps",
        "300",
        "--set",
        "g_width=16",
        "--set",
        "d_width=16",
        "--sample-every",
        "300",
        "--run-dir",
        isolated / "mnist",
        "--json",
        "--quiet",
    )
    assert result.code == 0, result
    payload = json.loads(result.out)
    assert payload["step"] == 300
    assert all(math.isfinite(v) for v in payload["losses"].values())
    config = json.loads((isolated / "mnist" / "config.json").read_text())
    assert config["data_shape"] == [1, 32, 32] and config["images"] == 60000
    result = run_cli("sample", isolated / "mnist", "--n", "16", "--out", isolated / "g.png")
    assert result.code == 0, result
    with Image.open(isolated / "g.png") as im:
        assert im.size == (4 * 34 + 2, 4 * 34 + 2) and im.mode == "L"
        pixels = np.asarray(im).flatten().tolist()
    # Digits: mostly dark background with bright strokes, not noise or a flat image.
    dark = sum(p < 64 for p in pixels) / len(pixels)
    bright = sum(p > 192 for p in pixels) / len(pixels)
    assert 0.5 < dark < 0.97 and bright > 0.02


def test_resume_finds_the_data_root_again(run_cli, mnist_root: Path, isolated: Path) -> None:
    args = ("--batch-size", "16", "--set", "g_width=8", "--set", "d_width=8", "-q")
    result = run_cli(
        "train",
        "dcgan",
        "-d",
        "mnist",
        "--data-root",
        mnist_root,
        "--resolution",
        "32",
        "--steps",
        "2",
        "--run-dir",
        isolated / "r",
        *args,
    )
    assert result.code == 0, result
    # $IMAGEGEN_DATA points elsewhere in tests; the run remembers its data root.
    result = run_cli("train", "dcgan", "--resume", isolated / "r", "--steps", "3", "-q")
    assert result.code == 0, result


@pytest.mark.integration
def test_demo_length_run_gives_digit_like_samples(
    run_cli, mnist_root: Path, isolated: Path
) -> None:
    """The demo's budget (6,000 steps at 32 px, the default preset): samples look like digits."""
    result = run_cli(
        "train",
        "dcgan",
        "--dataset",
        "mnist",
        "--data-root",
        mnist_root,
        "--resolution",
        "32",
        "--steps",
        "6000",
        "--run-dir",
        isolated / "demo",
        "--json",
        "--quiet",
    )
    assert result.code == 0, result
    result = run_cli("sample", isolated / "demo", "--n", "256", "--individual", isolated / "s")
    assert result.code == 0, result
    samples = np.stack([np.asarray(Image.open(p)) for p in sorted((isolated / "s").iterdir())])
    real = data.load_images("mnist", resolution=32, root=mnist_root).images[:256, 0].numpy()
    # Mean intensity and the share of stroke pixels within 30% of the real digits'.
    assert abs(samples.mean() - real.mean()) / real.mean() < 0.3
    assert abs((samples > 128).mean() - (real > 128).mean()) / (real > 128).mean() < 0.3


def test_vae_test_loss_falls_clearly_in_a_few_hundred_steps(
    run_cli, mnist_root: Path, isolated: Path
) -> None:
    import torch

    from imagegen.models.vae import VAE, VAEConfig
    from imagegen.storage import checkpoint

    test = data.load_images("mnist", resolution=32, root=mnist_root, split="test")
    x = test.images[:1000].float() / 255

    def neg_elbo(model: VAE) -> float:
        return model.eval().evaluate(x, torch.Generator().manual_seed(0))["neg_elbo"]

    torch.manual_seed(0)  # the training loop seeds the same way before building the model
    before = neg_elbo(VAE(VAEConfig(channels=1)))
    result = run_cli(
        "train",
        "vae",
        "-d",
        "mnist",
        "--data-root",
        mnist_root,
        "--steps",
        "300",
        "--run-dir",
        isolated / "vae",
        "--json",
        "-q",
    )
    assert result.code == 0, result
    ck = checkpoint.read_checkpoint(isolated / "vae" / "checkpoints" / "latest.safetensors")
    after = neg_elbo(checkpoint.build_model(ck))
    assert after < 0.5 * before, (before, after)  # e.g. 712 -> 180 nats per image


# about 40 s on 2 cores; the contract test covers the same path on tiny sizes
@pytest.mark.integration
def test_vaegan_gives_finite_losses_samples_and_reconstructions(
    run_cli, mnist_root: Path, isolated: Path
) -> None:
    result = run_cli(
        "train",
        "vaegan",
        "-d",
        "mnist",
        "--data-root",
        mnist_root,
        "--steps",
        "400",
        "--run-dir",
        isolated / "vg",
        "--json",
        "-q",
    )
    assert result.code == 0, result
    assert all(math.isfinite(v) for v in json.loads(result.out)["losses"].values())
    result = run_cli("sample", isolated / "vg", "--n", "16", "--out", isolated / "s.png")
    assert result.code == 0, result
    result = run_cli(
        "sample",
        isolated / "vg",
        "--reconstruct",
        "--n",
        "16",
        "--json",
        "--out",
        isolated / "r.png",
    )
    assert result.code == 0, result
    metrics = json.loads(result.out)["metrics"]
    variance = data.load_images("mnist", resolution=32, root=mnist_root, split="test").images
    variance = float((variance[:1000].float() / 255).var())
    assert metrics["mse"] < variance  # better than the mean image: e.g. 0.048 against 0.08
    for name in ("s.png", "r.png"):
        with Image.open(isolated / name) as im:
            assert np.asarray(im).std() > 10  # not a flat image
