"""VAE and VAE-GAN: shapes, KL and loss terms by hand, gradient routing, the CLI end to end."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from imagegen.common.errors import UsageError
from imagegen.models.blocks import AutoEncoder, gaussian_kl, reparameterize
from imagegen.models.registry import MODELS
from imagegen.models.vae import VAE, VAEConfig, bits_per_dim, reconstruction_nll
from imagegen.models.vaegan import VAEGAN, VAEGANConfig, feature_nll
from imagegen.training.config import TrainConfig

TINY_VAE = ["--set", "width=8", "--set", "latent_dim=8"]
TINY_VAEGAN = ["--set", "width=8", "--set", "d_width=8", "--set", "latent_dim=8"]


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_autoencoder_shapes(resolution: int, channels: int) -> None:
    ae = AutoEncoder(channels, 4, resolution, latent_dim=6)
    mean, logvar = ae.encoder(torch.rand(5, channels, resolution, resolution))
    assert mean.shape == logvar.shape == (5, 6)
    assert ae.decoder(mean).shape == (5, channels, resolution, resolution)


def test_models_generate_and_reconstruct_in_unit_range() -> None:
    for model in (
        VAE(VAEConfig(channels=1, width=4, latent_dim=6)),
        VAEGAN(VAEGANConfig(channels=3, width=4, d_width=4, latent_dim=6)),
    ):
        model.eval()
        c = model.config.channels
        images = model.generate(torch.randn(3, 6))
        recon = model.reconstruct(torch.rand(3, c, 32, 32))
        assert images.shape == recon.shape == (3, c, 32, 32)
        assert images.min() >= 0 and images.max() <= 1 and recon.min() >= 0 and recon.max() <= 1


def test_kl_by_hand() -> None:
    mean = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2) = 0.5 * ((1 + 1 - 1 - 0) + (0 + 2 - 1 - ln 2))
    assert gaussian_kl(mean, logvar).item() == pytest.approx(0.5 * (2 - math.log(2)), rel=1e-6)
    assert gaussian_kl(torch.zeros(4, 3), torch.zeros(4, 3)).abs().max() == 0


def test_reparameterisation_moments() -> None:
    mean, logvar = torch.full((20000, 1), 2.0), torch.full((20000, 1), math.log(9.0))
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(2.0, abs=0.1)
    assert z.std().item() == pytest.approx(3.0, abs=0.1)


def test_reconstruction_terms_by_hand() -> None:
    x = torch.full((2, 1, 2, 2), 0.25)
    # Bernoulli with logit 0 (p = 1/2): -[x ln p + (1 - x) ln(1 - p)] = ln 2 per pixel.
    nll = reconstruction_nll(torch.zeros_like(x), x, "bernoulli", 0.1)
    assert nll.tolist() == pytest.approx([4 * math.log(2)] * 2, rel=1e-6)
    # Gaussian whose mean equals x: only the normalising constant remains.
    logits = torch.logit(x)
    nll = reconstruction_nll(logits, x, "gaussian", 0.1)
    assert nll[0].item() == pytest.approx(
        4 * (math.log(0.1) + 0.5 * math.log(2 * math.pi)), rel=1e-5
    )
    # Off by 0.1 = one sigma: + 1/2 nat per pixel.
    nll_off = reconstruction_nll(torch.logit(x + 0.1), x, "gaussian", 0.1)
    assert (nll_off - nll)[0].item() == pytest.approx(4 * 0.5, rel=1e-4)


def test_bits_per_dim() -> None:
    dims = 1024
    assert bits_per_dim(
        torch.tensor(dims * math.log(2)), dims, "bernoulli"
    ).item() == pytest.approx(1)
    # Gaussian: + ln 255 per dim for the 8-bit bins; a density of 1 per unit gives log2(255) bits.
    assert bits_per_dim(torch.tensor(0.0), dims, "gaussian").item() == pytest.approx(math.log2(255))


def test_beta_warmup_and_loss_composition() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=1, width=4, latent_dim=4, beta=2.0, beta_warmup_steps=4))
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    assert float(model.beta_now()) == 0.0
    noise = torch.Generator().manual_seed(0)
    betas = []
    for _ in range(5):
        beta = float(model.beta_now())
        out = model.training_step(torch.rand(4, 1, 32, 32), opts, noise)
        assert out["loss"].item() == pytest.approx(
            out["recon"].item() + beta * out["kl"].item(), rel=1e-5
        )
        betas.append(beta)
    assert betas == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert int(model.steps_done) == 5  # in the state dict: resume keeps the warm-up


def test_bad_configs() -> None:
    with pytest.raises(UsageError, match="resolution 16 for vae"):
        VAEConfig(resolution=16)
    with pytest.raises(UsageError):
        VAEConfig(beta=-1.0)
    with pytest.raises(UsageError, match="gamma"):
        VAEGANConfig(gamma=-0.5)
    from imagegen.common.options import build_dataclass

    with pytest.raises(UsageError, match="bernoulli, gaussian"):
        build_dataclass(VAEConfig, {"likelihood": "laplace"}, "vae")


def test_feature_nll_by_hand() -> None:
    a = torch.tensor([[[[1.0, 2.0]]]])
    b = torch.tensor([[[[0.0, 4.0]]]])
    assert feature_nll(a, b).item() == pytest.approx(0.5 * (1 + 4))


def test_vaegan_routes_each_loss_to_its_own_network() -> None:
    """Encoder <- prior + llike; decoder <- gamma * llike + GAN; discriminator <- GAN only."""
    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig(channels=1, width=4, d_width=4, latent_dim=4, gamma=0.3))
    real = torch.rand(6, 1, 32, 32)
    reference = copy.deepcopy(model)
    losses = reference.losses(real, torch.Generator().manual_seed(5))
    nets = {
        "encoder": reference.autoencoder.encoder,
        "decoder": reference.autoencoder.decoder,
        "discriminator": reference.discriminator,
    }
    expected = {
        name: torch.autograd.grad(losses[name], list(net.parameters()), retain_graph=True)
        for name, net in nets.items()
    }
    # The discriminator's gradient must not contain the feature reconstruction term.
    f_grad = torch.autograd.grad(
        losses["llike"],
        list(nets["discriminator"].parameters()),
        retain_graph=True,
        allow_unused=True,
    )
    assert any(g is not None and g.abs().sum() > 0 for g in f_grad)  # so a mix-up would show
    opts = model.configure_optimizers(TrainConfig())
    for opt in opts.values():  # gradients kept, weights unchanged
        for group in opt.param_groups:
            group["lr"] = 0.0
    model.training_step(real, opts, torch.Generator().manual_seed(5))
    got = {
        "encoder": model.autoencoder.encoder,
        "decoder": model.autoencoder.decoder,
        "discriminator": model.discriminator,
    }
    for name, net in got.items():
        for p, g in zip(net.parameters(), expected[name], strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    # And the three losses are the paper's, recomputed here from the networks by hand (with
    # the non-saturating GAN loss for the decoder): L_prior, L_llike in Dis_l's features, L_GAN.
    _assert_paper_losses(reference, real, losses, gamma=0.3)


def _assert_paper_losses(model: VAEGAN, real: torch.Tensor, losses: dict, gamma: float) -> None:
    noise = torch.Generator().manual_seed(5)  # the draws of model.losses: eps, then z_p
    x = real * 2 - 1
    mean, logvar = model.autoencoder.encoder(x)
    eps = torch.randn(mean.shape, generator=noise)
    x_rec = torch.tanh(model.autoencoder.decoder(mean + torch.exp(0.5 * logvar) * eps))
    x_prior = torch.tanh(model.autoencoder.decoder(torch.randn(mean.shape, generator=noise)))
    (l_real, f_real), (l_rec, f_rec), (l_prior, _) = (
        model.discriminator(b, with_features=True) for b in (x, x_rec, x_prior)
    )
    kl = (0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1)).mean()
    llike = (0.5 * (f_rec - f_real) ** 2).flatten(1).sum(1).mean()
    log_d = torch.nn.functional.logsigmoid  # log D = logsigmoid(logit)
    # D ascends log Dis(x) + log(1 - Dis(x~)) + log(1 - Dis(x_p)): descends its negative
    d_loss = -(log_d(l_real).mean() + log_d(-l_rec).mean() + log_d(-l_prior).mean())
    # the decoder descends gamma L_llike - L_GAN, with -log Dis(.) for log(1 - Dis(.))
    dec_loss = gamma * llike - (log_d(l_rec).mean() + log_d(l_prior).mean())
    want = {"kl": kl, "llike": llike, "encoder": kl + llike, "decoder": dec_loss}
    want["discriminator"] = d_loss
    for name, value in want.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-5), name


def test_registry_holds_all_three() -> None:
    assert list(MODELS) == ["dcgan", "vae", "vaegan"]
    assert MODELS["vae"].train_defaults["lr"] == 1e-3


@pytest.mark.parametrize(("model", "tiny"), [("vae", TINY_VAE), ("vaegan", TINY_VAEGAN)])
def test_cli_end_to_end(run_cli, isolated: Path, model: str, tiny: list[str]) -> None:
    run = isolated / model
    result = run_cli(
        "train",
        model,
        "-d",
        "synthetic",
        "--batch-size",
        "16",
        "--steps",
        "4",
        "--run-dir",
        run,
        "--json",
        "-q",
        *tiny,
    )
    assert result.code == 0, result
    payload = json.loads(result.out)
    assert all(math.isfinite(v) for v in payload["losses"].values())
    config = json.loads((run / "config.json").read_text())
    if model == "vae":
        assert config["train_config"]["lr"] == 1e-3  # the model's own default
    result = run_cli("sample", run, "--n", "9", "--out", isolated / "s.png", "--json")
    assert result.code == 0, result
    with Image.open(isolated / "s.png") as im:
        assert im.size == (3 * 34 + 2, 3 * 34 + 2)
    result = run_cli(
        "sample",
        run,
        "--reconstruct",
        "--n",
        "6",
        "--nrow",
        "3",
        "--out",
        isolated / "r.png",
        "--json",
    )
    assert result.code == 0, result
    metrics = json.loads(result.out)["metrics"]
    assert metrics["mse"] >= 0 and ("bpd" in metrics) == (model == "vae")
    with Image.open(isolated / "r.png") as im:
        assert im.size == (3 * 34 + 2, 4 * 34 + 2)  # 2 pairs of rows of 3


def test_resume_refuses_another_model(run_cli, isolated: Path) -> None:
    run = isolated / "vae"
    assert (
        run_cli(
            "train", "vae", "-d", "synthetic", "--steps", "1", "--run-dir", run, "-q", *TINY_VAE
        ).code
        == 0
    )
    result = run_cli("train", "dcgan", "--resume", run)
    assert result.code == 1 and "holds a vae model, not dcgan" in result.err


def test_reconstruct_needs_an_encoder(run_cli, isolated: Path) -> None:
    from conftest import train_tiny

    train_tiny(run_cli, isolated / "gan")
    result = run_cli("sample", isolated / "gan", "--reconstruct")
    assert result.code == 2 and "has no encoder" in result.err
    result = run_cli("sample", isolated / "gan", "--reconstruct", "--interpolate", "4")
    assert result.code == 2 and "--reconstruct" in result.err


@pytest.mark.parametrize("name", ["vae", "vaegan"])
def test_checkpoint_round_trip_gives_identical_outputs(name: str, isolated: Path) -> None:
    from imagegen.models.registry import get_spec
    from imagegen.storage import checkpoint
    from imagegen.training.ema import EMA

    spec = get_spec(name)
    options = {"channels": 1, "width": 4, "latent_dim": 6}
    if name == "vaegan":
        options["d_width"] = 4
    torch.manual_seed(0)
    model = spec.model_cls(spec.config_cls(**options))
    opts = model.configure_optimizers(TrainConfig())
    ema = EMA(model.autoencoder, 0.9)
    model.training_step(torch.rand(4, 1, 32, 32), opts, torch.Generator().manual_seed(0))
    ema.update(model.autoencoder)
    path = isolated / f"{name}.safetensors"
    checkpoint.save_checkpoint(
        path,
        model=model,
        model_name=name,
        train_config=TrainConfig(),
        step=1,
        data_shape=(1, 32, 32),
        dataset="synthetic",
        ema=ema.module,
        optimizers=opts,
    )
    ck = checkpoint.read_checkpoint(path, expect_model=name)
    raw, averaged = checkpoint.build_model(ck, use_ema=False), checkpoint.build_model(ck)
    model.eval()
    z, x = torch.randn(3, 6), torch.rand(3, 1, 32, 32)
    assert torch.equal(raw.generate(z), model.generate(z))
    assert torch.equal(raw.reconstruct(x), model.reconstruct(x))
    assert torch.equal(averaged.generate(z), model.generate(z, ema.module))


def test_summary_breaks_the_losses_between_pairs(run_cli, isolated: Path, monkeypatch) -> None:
    """The VAE-GAN's nine losses do not fit an 80-column terminal: the summary breaks its
    losses row between two losses, never between a name and its value."""
    monkeypatch.setenv("COLUMNS", "80")
    run = isolated / "vaegan"
    args = ["train", "vaegan", "-d", "synthetic", "--batch-size", "8", "--steps", "1"]
    result = run_cli(*args, "--run-dir", run, *TINY_VAEGAN)
    assert result.code == 0, result
    lines = result.out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("losses"))
    rows = [lines[first].split("losses", 1)[1]]
    rows += [line for line in lines[first + 1 :] if line.startswith(" " * 12)]  # continued
    assert len(rows) > 1 and all(len(line.rstrip()) <= 80 for line in lines)
    for row in rows:
        words = row.split()
        assert len(words) % 2 == 0 and all(float(v) == float(v) for v in words[1::2]), row
    names = {name for row in rows for name in row.split()[::2]}
    assert {"enc_loss", "dec_loss", "d_loss", "kl"} <= names


def test_auto_likelihood_follows_the_channels_of_the_data(run_cli, isolated: Path) -> None:
    """likelihood=auto stays `auto` in the config; grey data trains a Bernoulli VAE, colour an
    optimal-sigma Gaussian one (whose sigma travels with the autoencoder)."""
    from safetensors import safe_open

    from imagegen.models.vae import VAE, VAEConfig

    assert VAE(VAEConfig(channels=1, likelihood="auto")).likelihood == "bernoulli"
    assert VAE(VAEConfig(channels=3, likelihood="auto")).likelihood == "gaussian-optimal"
    for channels, sigma in (("1", False), ("3", True)):
        run = isolated / f"run{channels}"
        result = run_cli("train", "vae", "-d", "synthetic", "--channels", channels, "--steps", "2",
                         "--batch-size", "8", "--run-dir", run, "--set", "likelihood=auto",
                         "--set", "width=8", "--set", "latent_dim=8", "-q")  # fmt: skip
        assert result.code == 0, result
        with safe_open(str(run / "checkpoints" / "latest.safetensors"), "pt") as f:
            assert ("ema/sigma" in set(f.keys())) == sigma
            assert '"likelihood": "auto"' in f.metadata()["config"]


def test_vaegan_augments_a_real_image_and_its_reconstruction_alike() -> None:
    """Dis_l compares x with x~ through one transformation: equal inputs stay equal, while the
    prior samples draw their own (and an unaugmented model passes all three through)."""
    model = VAEGAN(VAEGANConfig(channels=3, width=4, d_width=4, latent_dim=4, augment="cutout"))
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    real, rec, prior = model._augmented(x, x.clone(), x.clone(), torch.Generator().manual_seed(1))
    assert torch.equal(real, rec) and not torch.equal(real, x) and not torch.equal(real, prior)
    plain = VAEGAN(VAEGANConfig(channels=3, width=4, d_width=4, latent_dim=4))
    assert all(t is x for t in plain._augmented(x, x, x, torch.Generator()))
    with pytest.raises(UsageError, match="augment_target needs an augmentation"):
        VAEGANConfig(augment_target=0.6)


def test_vaegan_adaptive_augmentation_trains_and_resumes_exactly(run_cli, isolated: Path) -> None:
    """ADA's p is the VAE-GAN's state too: logged, saved, and a resumed run ends as a
    straight one."""
    from safetensors.torch import load_file

    aug = ["--set", "augment=translation,cutout", "--set", "augment_target=0.1"]
    common = ["-d", "synthetic", "--batch-size", "8", "--checkpoint-every", "3", "--keep", "5"]
    straight, resumed = isolated / "straight", isolated / "resumed"
    args = ["train", "vaegan", *common, "--steps", "6", "--log-every", "2", *TINY_VAEGAN, *aug]
    assert run_cli(*args, "--run-dir", straight, "-q").code == 0
    middle = straight / "checkpoints" / "step-0000003.safetensors"
    result = run_cli("train", "vaegan", "--resume", middle, "--run-dir", resumed, "-q")
    assert result.code == 0, result
    a = load_file(str(straight / "checkpoints/latest.safetensors"))
    b = load_file(str(resumed / "checkpoints/latest.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert float(a["model/augment_p"]) > float(load_file(str(middle))["model/augment_p"]) > 0
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert log[-1]["augment_p"] > 0 and all(-1 <= r["augment_rt"] <= 1 for r in log), log
