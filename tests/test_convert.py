"""imagegen convert: pytorch/examples import, state dicts both ways, ONNX, and no pickled code."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import train_tiny
from torch import nn

from imagegen.storage import checkpoint


class ExamplesGenerator(nn.Module):
    """The network of pytorch/examples' dcgan/main.py (nz, ngf, nc; 64 px), rebuilt for tests."""

    def __init__(self, nz: int, ngf: int, nc: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class ExamplesDiscriminator(nn.Module):
    def __init__(self, ndf: int, nc: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def randomise_batchnorm(net: nn.Module) -> None:
    """Give BatchNorm non-trivial statistics, as after training."""
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.fixture
def examples_files(isolated: Path) -> tuple[Path, Path, ExamplesGenerator, ExamplesDiscriminator]:
    torch.manual_seed(0)
    net_g, net_d = ExamplesGenerator(nz=20, ngf=8, nc=3), ExamplesDiscriminator(ndf=4, nc=3)
    randomise_batchnorm(net_g)
    randomise_batchnorm(net_d)
    torch.save(net_g.state_dict(), isolated / "netG_epoch_24.pth")
    torch.save(net_d.state_dict(), isolated / "netD_epoch_24.pth")
    return isolated / "netG_epoch_24.pth", isolated / "netD_epoch_24.pth", net_g, net_d


def test_import_pytorch_examples_dcgan(run_cli, isolated: Path, examples_files) -> None:
    g_path, d_path, net_g, net_d = examples_files
    result = run_cli(
        "convert",
        g_path,
        isolated / "dcgan.safetensors",
        "--discriminator",
        d_path,
        "--nz",
        "20",
        "--ngf",
        "8",
        "--nc",
        "3",
        "--image-size",
        "64",
        "--json",
    )
    assert result.code == 0, result
    ck = checkpoint.read_checkpoint(isolated / "dcgan.safetensors", expect_model="dcgan")
    assert ck.config.latent_dim == 20 and ck.config.g_width == 8 and ck.config.d_width == 4
    model = checkpoint.build_model(ck)
    net_g.eval(), net_d.eval()
    z = torch.randn(7, 20)
    with torch.no_grad():
        ours = model.generator(z)
        theirs = net_g(z[:, :, None, None])
        assert (ours - theirs).abs().max().item() < 1e-5
        images = theirs
        assert (torch.sigmoid(model.discriminator(images)) - net_d(images)).abs().max() < 1e-5
    # The imported checkpoint samples through the CLI.
    result = run_cli(
        "sample", isolated / "dcgan.safetensors", "--n", "4", "--out", isolated / "s.png"
    )
    assert result.code == 0, result


def test_examples_options_are_inferred_and_checked(run_cli, isolated: Path, examples_files) -> None:
    g_path, *_ = examples_files
    result = run_cli("convert", g_path, isolated / "a.safetensors", "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["config"]["latent_dim"] == 20
    result = run_cli("convert", g_path, isolated / "b.safetensors", "--nz", "100")
    assert result.code == 1 and "latent_dim: given 100, the weights say 20" in result.err
    assert not (isolated / "b.safetensors").exists()


def test_state_dict_round_trip(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run)
    src = run / "checkpoints" / "latest.safetensors"
    (isolated / "export").mkdir()
    result = run_cli("convert", src, isolated / "export" / "model.pt", "--json")
    assert result.code == 0, result
    meta = json.loads((isolated / "export" / "config.json").read_text())
    assert meta["model"] == "dcgan" and meta["config"]["g_width"] == 8
    state = torch.load(isolated / "export" / "model.pt", weights_only=True)
    assert "generator.main.0.weight" in state
    result = run_cli("convert", isolated / "export" / "model.pt", isolated / "back.safetensors")
    assert result.code == 0, result
    original = checkpoint.build_model(checkpoint.read_checkpoint(src))
    again = checkpoint.build_model(checkpoint.read_checkpoint(isolated / "back.safetensors"))
    z = torch.randn(3, 16)
    assert torch.equal(original.generate(z), again.generate(z))


def test_state_dict_mismatch_is_named(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run, "--set", "d_norm=spectral")
    (isolated / "export").mkdir()
    assert (
        run_cli(
            "convert", run / "checkpoints" / "latest.safetensors", isolated / "export" / "m.pt"
        ).code
        == 0
    )
    (isolated / "export" / "config.json").unlink()
    result = run_cli(
        "convert", isolated / "export" / "m.pt", isolated / "x.safetensors", "--model", "dcgan"
    )
    assert result.code == 2 and "missing architecture options" in result.err
    result = run_cli(
        "convert",
        isolated / "export" / "m.pt",
        isolated / "x.safetensors",
        "--model",
        "dcgan",
        "--resolution",
        "32",
        "--set",
        "channels=3",
        "--latent-dim",
        "16",
    )
    assert result.code == 1 and "shape mismatch" in result.err
    # Spectral normalisation is read from the keys themselves.
    assert "discriminator.main.0.bias (8,) vs (64,)" in result.err
    assert not (isolated / "x.safetensors").exists()


def test_onnx_export_matches_pytorch(run_cli, isolated: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    for model, extra in (("dcgan", ()), ("vae", ("--set", "width=8", "--set", "latent_dim=8"))):
        run = isolated / model
        if model == "dcgan":
            train_tiny(run_cli, run)
        else:
            assert (
                run_cli(
                    "train",
                    "vae",
                    "-d",
                    "synthetic",
                    "--steps",
                    "2",
                    "--run-dir",
                    run,
                    "-q",
                    *extra,
                ).code
                == 0
            )
        dst = isolated / f"{model}.onnx"
        result = run_cli("convert", run / "checkpoints" / "latest.safetensors", dst, "--json")
        assert result.code == 0, result
        ck = checkpoint.read_checkpoint(run / "checkpoints" / "latest.safetensors")
        torch_model = checkpoint.build_model(ck)
        session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
        for batch in (1, 6):  # dynamic batch
            z = torch.randn(batch, torch_model.latent_dim)
            (out,) = session.run(["image"], {"latent": z.numpy()})
            assert out.shape == (batch, ck.config.channels, 32, 32)
            assert abs(out - torch_model.generate(z).numpy()).max() < 1e-4


def test_a_code_running_pickle_is_refused(run_cli, isolated: Path) -> None:
    marker = isolated / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = isolated / "netG_epoch_1.pth"
    torch.save({"main.0.weight": torch.zeros(1), "extra": Payload()}, evil)
    plain = isolated / "plain.pth"
    plain.write_bytes(pickle.dumps({"main.0.weight": Payload()}))
    for path in (evil, plain):
        result = run_cli("convert", path, isolated / "out.safetensors")
        assert result.code == 1 and "refused" in result.err and "never runs" in result.err, result
        assert not marker.exists()
        assert not (isolated / "out.safetensors").exists()


def test_bad_input(run_cli, isolated: Path, examples_files) -> None:
    g_path, *_ = examples_files
    (isolated / "weights.bin").write_bytes(b"x")
    result = run_cli("convert", isolated / "weights.bin", isolated / "o.safetensors")
    assert result.code == 2 and "unknown file type .bin" in result.err
    result = run_cli("convert", g_path, isolated / "o.h5")
    assert result.code == 2 and "unknown file type .h5" in result.err
    (isolated / "exists.safetensors").write_bytes(b"keep")
    result = run_cli("convert", g_path, isolated / "exists.safetensors")
    assert result.code == 1 and "--force" in result.err
    assert (isolated / "exists.safetensors").read_bytes() == b"keep"
    result = run_cli("convert", g_path, isolated / "o.onnx")
    assert result.code == 2 and "cannot convert .pth to .onnx" in result.err
    result = run_cli("convert", isolated / "missing.pth", isolated / "o.safetensors")
    assert result.code == 1 and "not found" in result.err
    (isolated / "text.pth").write_text("hello")
    result = run_cli("convert", isolated / "text.pth", isolated / "o.safetensors")
    assert result.code == 1 and "is not a PyTorch file" in result.err
    result = run_cli("convert", g_path, isolated / "o.safetensors", "--model", "vae")
    assert result.code == 2 and "pytorch/examples DCGAN, not a vae" in result.err
    # The architecture flags: each in its declared range; two that set one option agree.
    result = run_cli("convert", g_path, isolated / "o.safetensors", "--nc", "7")
    assert result.code == 2 and "--nc must be in [1, 4], got 7" in result.err, result
    both = ["--image-size", "64", "--resolution", "32"]
    result = run_cli("convert", g_path, isolated / "o.safetensors", *both)
    assert result.code == 2 and "disagree on resolution" in result.err, result
    assert not (isolated / "o.safetensors").exists()
