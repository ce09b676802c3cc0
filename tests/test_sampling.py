"""Sampling as users ask for it: images by seed, the truncation trick, animated interpolations."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny
from PIL import Image

from imagegen.common.errors import UsageError
from imagegen.sampling.generation import parse_seeds, seed_latents, truncated


def test_seeds_are_ranges_and_lists() -> None:
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds(" 9 ") == [9]
    for bad, why in [("3-1", "backwards"), ("1,1", "twice"), ("a", "0-63"), ("", "0-63")]:
        with pytest.raises(UsageError, match=why):
            parse_seeds(bad)


def test_truncation_draws_again_what_lies_beyond_the_threshold() -> None:
    z = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    t = truncated(z, 0.5, torch.Generator().manual_seed(1))
    assert t.abs().max() <= 0.5 and torch.equal(t[z.abs() <= 0.5], z[z.abs() <= 0.5])
    assert torch.equal(t, truncated(z, 0.5, torch.Generator().manual_seed(1)))
    # A seed's latent is the same in any list of seeds.
    assert torch.equal(seed_latents([5, 6], 8)[0], seed_latents([2, 5], 8)[1])


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_images_by_seed_and_truncated(run_cli, isolated: Path) -> None:
    train_tiny(run_cli, isolated / "run")
    run = isolated / "run"
    result = run_cli("sample", run, "--seeds", "3,5", "--individual", "a", "--json", "-q")
    assert result.code == 0, result
    out = json.loads(result.out)
    assert out["seeds"] == [3, 5] and out["n"] == 2 and out["latents"] == "N(0, I)"
    assert sorted(p.name for p in Path("a").iterdir()) == ["seed0003.png", "seed0005.png"]
    assert run_cli("sample", run, "--seeds", "5-6", "--individual", "b", "-q").code == 0
    assert np.array_equal(_pixels(Path("a/seed0005.png")), _pixels(Path("b/seed0005.png")))

    result = run_cli("sample", run, "--seeds", "5", "--trunc", "0.5", "--individual", "c", "--json")
    assert result.code == 0 and "truncated to [-0.5, 0.5]" in json.loads(result.out)["latents"]
    assert not np.array_equal(_pixels(Path("a/seed0005.png")), _pixels(Path("c/seed0005.png")))
    result = run_cli("sample", run, "--seeds", "1", "--n", "4")
    assert result.code == 2 and "not both" in result.err


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_interpolation_as_an_animation(run_cli, isolated: Path, suffix: str) -> None:
    train_tiny(run_cli, isolated / "run")
    out = isolated / f"walk{suffix}"
    result = run_cli("sample", isolated / "run", "--n", "8", "--interpolate", "4", "--out", out)
    assert result.code == 0, result
    animation = Image.open(out)
    assert animation.n_frames == 4 + 2 and animation.info["loop"] == 0  # there and back
    frames = []
    for i in range(animation.n_frames):
        animation.seek(i)
        frames.append(np.asarray(animation.convert("RGB")))
    assert frames[0].shape == (2 + 34, 2 + 2 * 34, 3)  # the 2 interpolations side by side
    assert not np.array_equal(frames[0], frames[3]) and np.array_equal(frames[2], frames[4])
    result = run_cli("sample", isolated / "run", "--n", "8", "--out", isolated / "still.gif")
    assert result.code == 2 and "--interpolate" in result.err
