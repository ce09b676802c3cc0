"""What people do with a VAE, through the CLI: encode their images, decode latents files,
interpolate between two images, reconstruct files; and the fitted sampling prior in the file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from imagegen.storage import checkpoint

TINY_VAE = ["--set", "latent_dim=8", "--set", "width=8", "--set", "prior_fit_images=200"]


def _train_vae(run_cli, run_dir: Path, *extra: str, steps: int = 6) -> Path:
    result = run_cli(
        "train", "vae", "--dataset", "synthetic", "--resolution", "32", "--batch-size", "16",
        "--steps", steps, "--run-dir", run_dir, "--quiet", *TINY_VAE, *extra,
    )  # fmt: skip
    assert result.code == 0, result
    return run_dir / "checkpoints" / "latest.safetensors"


def _photos(folder: Path, n: int = 5, seed: int = 0) -> Path:
    """A user's folder of odd-sized RGB photos."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _model(path: Path):
    return checkpoint.build_model(checkpoint.read_checkpoint(path), use_ema=True).eval()


def test_a_fitted_prior_is_in_the_file_and_samples_identically_after_a_reload(
    run_cli, isolated: Path
) -> None:
    ckpt = _train_vae(run_cli, isolated / "run", "--set", "prior=mixture")
    with safe_open(str(ckpt), "pt") as f:  # in the EMA and the raw weights (--no-ema)
        assert int(f.get_tensor("ema/prior.fitted")) == 1
        raw, ema = (f.get_tensor(f"{k}prior.means") for k in ("model/autoencoder.", "ema/"))
        assert torch.equal(raw, ema)
    model = _model(ckpt)
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    prior = model.autoencoder.prior
    assert not torch.equal(prior.transform(z), z)  # the mixture, not N(0, I)
    assert torch.equal(model.generate(z), model.decode(prior.transform(z)))
    small = isolated / "vae.safetensors"  # the sampling network alone carries the prior too
    assert run_cli("convert", ckpt, small, "--weights-only").code == 0
    grids = []
    for source in (ckpt, ckpt, small):
        out = isolated / f"grid{len(grids)}.png"
        result = run_cli("sample", source, "--n", "16", "--out", out, "--json")
        assert "through the fitted mixture prior" in json.loads(result.out)["latents"]
        grids.append(out.read_bytes())
    assert grids[0] == grids[1] == grids[2]


def test_a_checkpoint_from_before_the_prior_samples_as_it_did(run_cli, isolated: Path) -> None:
    """Configs written before blocks and prior existed load with their defaults."""
    ckpt = _train_vae(run_cli, isolated / "run", "--preset", "bernoulli")  # the old default
    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
    config = json.loads(meta["config"])
    for key in ("blocks", "prior", "prior_components", "prior_fit_images"):
        del config[key]
    old = isolated / "old.safetensors"
    save_file(load_file(str(ckpt)), str(old), metadata=meta | {"config": json.dumps(config)})
    a, b = isolated / "a.png", isolated / "b.png"
    assert run_cli("sample", ckpt, "--n", "9", "--out", a).code == 0
    assert run_cli("sample", old, "--n", "9", "--out", b).code == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_encode_then_decode_is_the_reconstruction(run_cli, isolated: Path, suffix: str) -> None:
    ckpt = _train_vae(run_cli, isolated / "run", "--set", "prior=mixture")
    photos = _photos(isolated / "photos")
    codes = isolated / f"codes{suffix}"
    result = run_cli("encode", ckpt, photos, photos / "2.png", "--out", codes, "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["n"] == 6
    if suffix == ".npz":
        with np.load(codes, allow_pickle=False) as npz:
            latents, names = torch.from_numpy(npz["latents"]), list(npz["names"])
    else:
        latents = load_file(str(codes))["latents"]
        with safe_open(str(codes), "pt") as f:
            names = json.loads(f.metadata()["names"])
    assert latents.shape == (6, 8) and names[-1] == str(photos / "2.png")
    # the same file, the same latent (to float rounding: at two threads the AMD EPYC's batched
    # convolutions give another last bit at another place in the batch)
    assert torch.allclose(latents[2], latents[5], atol=1e-5)
    decoded = isolated / "decoded.png"
    assert run_cli("decode", ckpt, codes, "--out", decoded, "--nrow", "6").code == 0
    recon = isolated / "recon.png"
    result = run_cli("reconstruct", ckpt, photos, photos / "2.png", "--out", recon, "--nrow", "6")
    assert result.code == 0, result
    assert "mse" in result.out and "psnr_db" in result.out
    with Image.open(decoded) as d, Image.open(recon) as r:  # recon: originals, then decoded
        assert np.array_equal(np.asarray(d)[2:34], np.asarray(r)[36:68])


def test_interpolate_walks_from_one_image_to_the_other(run_cli, isolated: Path) -> None:
    ckpt = _train_vae(run_cli, isolated / "run", steps=40)  # its steps decode differently
    photos = _photos(isolated / "photos")
    row = isolated / "walk.png"
    result = run_cli("interpolate", ckpt, photos / "0.png", photos / "1.png", "--steps", "5",
                     "--out", row)  # fmt: skip
    assert result.code == 0, result
    with Image.open(row) as image:
        assert image.size == (7 * 34 + 2, 34 + 2)  # the two images and five steps
    gif = isolated / "walk.gif"
    assert run_cli("interpolate", ckpt, photos / "0.png", photos / "1.png", "--steps", "5",
                   "--out", gif).code == 0  # fmt: skip
    with Image.open(gif) as image:
        assert image.n_frames == 8  # there and back
    recon = isolated / "r.png"
    assert run_cli("reconstruct", ckpt, photos / "0.png", "--out", recon).code == 0
    with Image.open(row) as walk, Image.open(recon) as r:  # step 0 is image 0's reconstruction
        first_step = np.asarray(walk.crop((34, 0, 70, 36)))[2:34, 2:34]
        assert np.array_equal(first_step, np.asarray(r)[36:68, 2:34])


def test_a_conditional_vae_takes_the_class(run_cli, isolated: Path) -> None:
    folder = isolated / "pets"
    for name in ("cat", "dog"):
        _photos(folder / name if folder.exists() else (folder.mkdir() or folder / name), n=12)
    ckpt = _train_vae(run_cli, isolated / "run", "--dataset", folder, "--conditional")
    photos = folder / "cat"
    missing = run_cli("encode", ckpt, photos, "--out", isolated / "c.npz")
    assert missing.code == 2 and "--class" in missing.err
    assert run_cli("encode", ckpt, photos, "--class", "dog", "--out", isolated / "c.npz").code == 0
    assert run_cli("decode", ckpt, isolated / "c.npz", "--out", isolated / "d.png").code == 0
    unknown = run_cli("reconstruct", ckpt, photos, "--class", "cow")
    assert unknown.code == 2 and "cat, dog" in unknown.err


def test_bad_inputs_are_one_line_errors(run_cli, isolated: Path) -> None:
    ckpt = _train_vae(run_cli, isolated / "run")
    photos = _photos(isolated / "photos")
    (isolated / "notes.png").write_text("not an image")
    wrong = isolated / "wrong.safetensors"
    save_file({"latents": torch.zeros(3, 5)}, str(wrong))
    dcgan = isolated / "gan"
    assert run_cli("train", "dcgan", "--dataset", "synthetic", "--steps", "2", "--batch-size",
                   "4", "--run-dir", dcgan, "--quiet", "--set", "g_width=8",
                   "--set", "d_width=8").code == 0  # fmt: skip
    cases = [
        (("encode", ckpt, isolated / "nowhere"), 1, "no such file or folder"),
        (("encode", ckpt, isolated / "notes.png"), 1, "cannot read"),
        (("encode", ckpt, photos, "--out", isolated / "codes.txt"), 2, ".safetensors or .npz"),
        (("decode", ckpt, wrong, "--out", isolated / "x.png"), 1, "shape (N, 8)"),
        (("decode", ckpt, photos / "0.png", "--out", isolated / "y.png"), 1, "latents file"),
        (("interpolate", ckpt, photos / "0.png", photos / "1.png", "--steps", "1"), 2, "--steps"),
        (("reconstruct", dcgan, photos), 2, "has no encoder"),
    ]
    for args, code, words in cases:
        result = run_cli(*args)
        assert result.code == code and words in result.err, (args, result)
        assert result.err.count("\n") == 1 and "Traceback" not in result.err


def test_the_onnx_decoder_samples_through_the_fitted_mixture(run_cli, isolated: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    ckpt = _train_vae(run_cli, isolated / "run", "--set", "prior=mixture")
    graph = isolated / "vae.onnx"
    assert run_cli("convert", ckpt, graph).code == 0
    model = _model(ckpt)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images = torch.from_numpy(session.run(None, {name: z.numpy()})[0])
    assert torch.allclose(images, model.generate(z), atol=1e-5)
    assert not torch.allclose(images, model.decode(z), atol=1e-3)  # the prior is in the graph


def test_a_mixture_vae_resumed_ends_as_a_straight_run(run_cli, isolated: Path) -> None:
    """The fit is a function of the weights and its own seed: a run resumed half-way writes
    the same checkpoint (prior and grids included) as one that was not stopped."""
    extra = ("--set", "prior=mixture", "--checkpoint-every", "4", "--sample-every", "2")
    _train_vae(run_cli, isolated / "straight", *extra, steps=8)
    middle = isolated / "straight/checkpoints/step-0000004.safetensors"
    result = run_cli("train", "vae", "--resume", middle, "--run-dir", isolated / "resumed", "-q")
    assert result.code == 0, result
    a = load_file(str(isolated / "straight/checkpoints/latest.safetensors"))
    b = load_file(str(isolated / "resumed/checkpoints/latest.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    for grid in ("step-0000006.png", "step-0000008.png"):
        same = [(isolated / run / "samples" / grid).read_bytes() for run in ("straight", "resumed")]
        assert same[0] == same[1], grid


def test_a_mixture_vae_trains_on_a_handful_of_images(run_cli, isolated: Path) -> None:
    photos = _photos(isolated / "few", n=5)  # 5 latents for 10 components
    ckpt = _train_vae(
        run_cli,
        isolated / "run",
        "--set",
        "prior=mixture",
        "--dataset",
        photos,
        "--batch-size",
        "4",
    )
    assert run_cli("sample", ckpt, "--n", "4", "--out", isolated / "s.png").code == 0
