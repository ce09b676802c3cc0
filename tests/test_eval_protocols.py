"""eval: early refusals, progress, defaults that follow the input, the three FID protocols,
blocked nearest-neighbour metrics, weights-only checkpoints."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny
from PIL import Image

from imagegen.evaluation import fid_protocols, metrics
from imagegen.storage import checkpoint


def write_pngs(folder: Path, images: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        arr = im.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(folder / f"{i:05d}.png")


def random_images(n: int, size: int, seed: int, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture
def run(run_cli, isolated: Path) -> Path:
    path = isolated / "run"
    train_tiny(run_cli, path)
    return path


def test_tiled_manifold_metrics_equal_the_full_matrices() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 16)).astype(np.float32)
    fake = (rng.normal(size=(50, 16)) + 0.3).astype(np.float32)
    r, f = torch.as_tensor(real).double(), torch.as_tensor(fake).double()

    def radii(x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    d = torch.cdist(r, f)  # (60, 50)
    precision = (d <= radii(r, 3)[:, None]).any(0).double().mean()
    recall = (d <= radii(f, 3)[None, :]).any(1).double().mean()
    inside = d <= radii(r, 5)[:, None]
    want = {
        "precision": float(precision),
        "recall": float(recall),
        "density": float(inside.sum()) / (5 * 50),
        "coverage": float(inside.any(1).double().mean()),
    }
    for tile in (1, 7, 64, 4096):  # one pair at a time ... everything at once
        got = metrics.manifold_metrics(real, fake, 3, 5, tile=tile)
        assert got == pytest.approx(want, abs=1e-12)


def test_tf_resize_matches_torch_fidelity() -> None:
    tf_interp = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    for size in (28, 32, 64, 299):
        x = random_images(2, size, seed=size).float()
        ours = fid_protocols.tf1_resize_bilinear(x, 299, 299)
        theirs = tf_interp.interpolate_bilinear_2d_like_tensorflow1x(
            x, size=(299, 299), align_corners=False
        )
        assert torch.allclose(ours, theirs, atol=1e-3), (ours - theirs).abs().max()


def test_clean_fid_resize_and_scaling_match_clean_fid() -> None:
    resize = pytest.importorskip("cleanfid.resize")
    fn = resize.make_resizer("PIL", False, "bicubic", (299, 299))
    x = random_images(2, 32, seed=1)
    ours = fid_protocols.to_network_input(x, "clean-fid", torch.device("cpu"))
    for b in range(2):
        theirs = fn(x[b].permute(1, 2, 0).numpy())  # (299, 299, 3) float on [0, 255]
        theirs = (torch.from_numpy(theirs).permute(2, 0, 1) - 128) / 128  # InceptionV3W
        assert torch.allclose(ours[b], theirs, atol=1e-5)


def test_pytorch_fid_resize_and_scaling_match_pytorch_fid() -> None:
    inception = pytest.importorskip("pytorch_fid.inception")
    captured = []

    class Probe:  # pytorch-fid's InceptionV3.forward with a block that records its input
        resize_input, normalize_input, output_blocks, last_needed_block = True, True, [0], 0
        blocks = (lambda x: captured.append(x) or x,)

    x = random_images(2, 32, seed=2)
    inception.InceptionV3.forward(Probe(), x.float() / 255)
    ours = fid_protocols.to_network_input(x, "pytorch-fid", torch.device("cpu"))
    assert torch.allclose(ours, captured[0], atol=1e-6)


def test_features_under_each_protocol_match_the_tools(weights: Path) -> None:
    """The whole chain (resize, scaling, network) of each tool, on the same network."""
    pytest.importorskip("cleanfid")
    pytest.importorskip("torch_fidelity")
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import make_resizer
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    from imagegen.evaluation import inception

    extractor = inception.load_extractor(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, not gone
        net = torch.jit.load(str(weights)).eval()
    x = random_images(3, 32, seed=3)
    with torch.no_grad():
        fn = make_resizer("PIL", False, "bicubic", (299, 299))
        batch = torch.stack(
            [torch.from_numpy(fn(im.permute(1, 2, 0).numpy())).permute(2, 0, 1) for im in x]
        )
        probe = type("W", (), {"resize_inside": False, "layers": net})()
        clean = InceptionV3W.forward(probe, batch)  # clean-fid's own scaling
        tf_in = interpolate_bilinear_2d_like_tensorflow1x(
            x.float(), size=(299, 299), align_corners=False
        )
        tf = net((tf_in - 128) / 128).reshape(3, -1)  # torch-fidelity's scaling
    for protocol, theirs in (("clean-fid", clean), ("tf", tf)):
        ours = extractor.features(x, protocol=protocol)
        assert torch.allclose(ours, theirs.reshape(3, -1), atol=2e-3), protocol


@pytest.mark.integration
def test_protocols_are_stamped_and_npz_protocols_must_match(
    run_cli, run: Path, isolated: Path, weights: Path
) -> None:
    fids = {}
    for protocol in fid_protocols.PROTOCOLS:
        result = run_cli(
            "eval", run, "-n", "16", "--metrics", "fid", "--protocol", protocol, "--json", "-q"
        )
        assert result.code == 0, result
        payload = json.loads(result.out)
        assert payload["protocol"]["extractor"]["protocol"] == protocol
        assert payload["protocol"]["extractor"]["resize"] == fid_protocols.DESCRIPTIONS[protocol]
        fids[protocol] = payload["metrics"]["fid"]
    assert len(set(fids.values())) == 3  # three resize chains, three figures
    stats = isolated / "tf.npz"
    args = ("-n", "16", "--metrics", "fid", "-q")
    result = run_cli("eval", run, *args, "--protocol", "tf", "--save-stats", stats)
    assert result.code == 0, result
    with np.load(stats, allow_pickle=False) as f:
        assert str(f["protocol"]) == "tf"
    result = run_cli("eval", run, *args, "--dataset", stats)
    assert result.code == 2 and "made with the tf protocol" in result.err
    assert "pytorch-fid" in result.err
    result = run_cli("eval", run, *args, "--dataset", stats, "--protocol", "tf", "--json")
    assert result.code == 0 and abs(json.loads(result.out)["metrics"]["fid"]) < 1e-3
    result = run_cli("eval", run, *args, "--protocol", "lanczos")
    assert result.code == 2 and "unknown FID protocol" in result.err


@pytest.mark.integration
def test_folders_are_evaluated_at_their_native_size(run_cli, isolated: Path, weights: Path) -> None:
    write_pngs(isolated / "a", random_images(12, 32, seed=4))
    write_pngs(isolated / "b", random_images(12, 32, seed=5))
    result = run_cli("eval", isolated / "a", "-d", isolated / "b", "--metrics", "fid", "--json")
    assert result.code == 0, result
    payload = json.loads(result.out)
    assert payload["protocol"]["input"]["resolution"] == 32
    assert payload["protocol"]["input"]["resolution_chosen"] == "native 32x32"
    assert payload["protocol"]["reference"]["resolution"] == 32
    assert payload["protocol"]["reference"]["images"] == 12  # follows the images evaluated
    # The same pixels evaluated through the library at 32 px give the same FID.
    from imagegen.evaluation import inception

    ext = inception.load_extractor(weights)
    a = ext.features(random_images(12, 32, seed=4)).numpy()
    b = ext.features(random_images(12, 32, seed=5)).numpy()
    want = metrics.frechet_distance(*metrics.gaussian_stats(a), *metrics.gaussian_stats(b))
    assert payload["metrics"]["fid"] == pytest.approx(want, rel=1e-6)
    # Mixed sizes: brought to the most common size, and said so.
    Image.fromarray(np.zeros((48, 40, 3), np.uint8)).save(isolated / "a" / "odd.png")
    result = run_cli("eval", isolated / "a", "-d", isolated / "b", "--metrics", "fid", "--json")
    chosen = json.loads(result.out)["protocol"]["input"]["resolution_chosen"]
    assert "2 image size(s)" in chosen and "32" in chosen


@pytest.mark.integration
def test_eval_reports_skipped_files_and_stages(run_cli, isolated: Path, weights: Path) -> None:
    write_pngs(isolated / "a", random_images(10, 32, seed=6))
    (isolated / "a" / "broken.png").write_bytes(b"not a png")
    result = run_cli("eval", isolated / "a", "-d", "synthetic", "--metrics", "fid")
    assert result.code == 0, result
    assert "skipped 1 unreadable file(s)" in result.err and "broken.png" in result.err
    assert "Inception features of the 10 images evaluated ..." in result.err  # stage lines
    quiet = run_cli("eval", isolated / "a", "-d", "synthetic", "--metrics", "fid", "--json")
    assert "Inception features" not in quiet.err  # --json: no progress


def test_refusals_come_before_the_slow_work(run_cli, run: Path) -> None:
    result = run_cli("eval", run, "-n", "10", "--kid-subset-size", "50", "--metrics", "kid")
    assert result.code == 2 and "larger than the 10 images" in result.err
    assert "Inception features" not in result.err  # refused before features were computed
    assert "generating" not in result.err  # and, for a checkpoint, before generating
    result = run_cli("eval", run, "-n", "3", "--metrics", "pr")
    assert result.code == 2 and "more than k=3 images" in result.err


@pytest.mark.integration
def test_kid_spread_is_real_at_small_n(run_cli, run: Path, weights: Path) -> None:
    result = run_cli("eval", run, "-n", "40", "--metrics", "kid", "--json", "-q")
    payload = json.loads(result.out)
    assert payload["protocol"]["kid"]["subset_size"] == 20
    assert payload["metrics"]["kid_std"] > 1e-8


@pytest.mark.integration
def test_vae_bits_per_dim_only_when_asked(run_cli, isolated: Path, weights: Path) -> None:
    run = isolated / "vae"
    tiny = ("--set", "width=8", "--set", "latent_dim=8")
    result = run_cli(
        "train", "vae", "-d", "synthetic", "--steps", "2", "--run-dir", run, "-q", *tiny
    )
    assert result.code == 0, result
    result = run_cli("eval", run, "-n", "10", "--metrics", "fid", "--json", "-q")
    assert result.code == 0 and "test_bpd" not in json.loads(result.out)["metrics"]
    write_pngs(isolated / "imgs", random_images(12, 32, seed=7))
    folder_run = isolated / "vae-folder"
    args = ("train", "vae", "-d", isolated / "imgs", "--resolution", "32", "--steps", "2")
    args += ("--batch-size", "4")
    result = run_cli(*args, "--run-dir", folder_run, "-q", *tiny)
    assert result.code == 0, result
    result = run_cli("eval", folder_run, "--metrics", "bpd")
    assert result.code == 2 and "--test-data" in result.err
    result = run_cli("eval", folder_run, "--metrics", "bpd", "--test-data", isolated / "imgs")
    assert result.code == 0, result
    assert "generating" not in result.err  # bits/dim alone generates nothing


@pytest.mark.integration
def test_weights_only_export_samples_the_same_and_is_small(
    run_cli, run: Path, isolated: Path, weights: Path
) -> None:
    small = isolated / "model.safetensors"
    result = run_cli("convert", run, small, "--weights-only")
    assert result.code == 0, result
    full = run / "checkpoints" / "latest.safetensors"
    assert small.stat().st_size < full.stat().st_size / 3
    ckpt = checkpoint.read_checkpoint(small)
    assert ckpt.is_sampler and ckpt.step == 4 and all(k.startswith("ema/") for k in ckpt.tensors)
    for source, out in ((full, "a.png"), (small, "b.png")):
        assert run_cli("sample", source, "-n", "8", "--out", isolated / out).code == 0
    assert (isolated / "a.png").read_bytes() == (isolated / "b.png").read_bytes()
    result = run_cli("eval", small, "-n", "8", "--metrics", "fid", "--json", "-q")
    assert result.code == 0 and json.loads(result.out)["protocol"]["input"]["checkpoint"]
    result = run_cli("train", "dcgan", "--resume", small, "--steps", "8")
    assert result.code == 1 and "cannot resume training" in result.err
    # .pt and back keep it a sampler.
    (isolated / "export").mkdir()
    assert run_cli("convert", small, isolated / "export" / "g.pt").code == 0
    back = isolated / "back.safetensors"
    result = run_cli("convert", isolated / "export" / "g.pt", back)
    assert result.code == 0, result
    assert checkpoint.read_checkpoint(back).is_sampler
    assert run_cli("sample", back, "-n", "8", "--out", isolated / "c.png").code == 0
    assert (isolated / "c.png").read_bytes() == (isolated / "a.png").read_bytes()
