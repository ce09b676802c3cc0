"""Training recipes: DiffAugment, spectral normalisation, hinge loss, lr options, presets."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import train_tiny
from safetensors.torch import load_file

from imagegen.common.errors import UsageError
from imagegen.models import augment
from imagegen.models.dcgan import DCGAN, DCGANConfig, r1_penalty
from imagegen.models.gan_losses import discriminator_loss, generator_loss
from imagegen.training.lr_schedule import LRSchedule

TINY_CFG = {"resolution": 32, "channels": 3, "latent_dim": 8, "g_width": 8, "d_width": 8}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def straight_and_resumed(
    run_cli, isolated: Path, extra: tuple, steps: int
) -> tuple[dict[str, torch.Tensor], Path]:
    """Train `steps` straight, and again resumed from the half-way checkpoint (which the
    options must write): the two last checkpoints are equal. Returns the straight run's
    tensors and the half-way checkpoint."""
    straight = isolated / "straight"
    train_tiny(run_cli, straight, *extra, steps=steps)
    middle = straight / "checkpoints" / f"step-{steps // 2:07d}.safetensors"
    result = run_cli("train", "dcgan", "--resume", middle, "--run-dir", isolated / "resumed", "-q")
    assert result.code == 0, result
    a = load_file(str(straight / "checkpoints/latest.safetensors"))
    b = load_file(str(isolated / "resumed/checkpoints/latest.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    return a, middle


def test_augment_policy_parsing() -> None:
    assert augment.parse_policy("") == ()
    assert augment.parse_policy(" color, cutout ,color") == ("color", "cutout")
    with pytest.raises(UsageError, match="unknown augmentation flip"):
        augment.parse_policy("color,flip")
    with pytest.raises(UsageError, match="unknown augmentation"):
        DCGANConfig(augment="rotate")


def test_augment_is_seeded_shaped_and_differentiable() -> None:
    x = torch.rand(6, 3, 32, 32, requires_grad=True)
    policy = ("color", "translation", "cutout")
    a = augment.diff_augment(x * 2 - 1, policy, gen(1))
    b = augment.diff_augment(x * 2 - 1, policy, gen(1))
    c = augment.diff_augment(x * 2 - 1, policy, gen(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(augment.diff_augment(x, (), gen(1)), x)


def test_augment_with_a_probability_transforms_that_share_of_images() -> None:
    x = torch.rand(400, 1, 8, 8) * 2 - 1
    policy = ("translation", "cutout")
    everything = augment.diff_augment(x, policy, gen(3))
    assert torch.equal(augment.diff_augment(x, policy, gen(3), torch.tensor(1.0)), everything)
    assert torch.equal(augment.diff_augment(x, policy, gen(3), torch.tensor(0.0)), x)
    some = augment.diff_augment(x, policy, gen(3), torch.tensor(0.25))
    changed = ~(some == x).flatten(1).all(1)  # (B,)
    assert 60 < int(changed.sum()) < 140  # about a quarter of 400
    assert torch.equal(some[changed], everything[changed])


def test_adaptive_probability_follows_the_sign_of_real_logits() -> None:
    step = 16 / augment.ADAPT_IMAGES
    p = torch.tensor(0.5)
    sure = torch.full((16,), 3.0)  # D calls every real image real: E[sign] = 1 > 0.6
    assert float(augment.adapt(p, sure, 0.6)) == pytest.approx(0.5 + step)
    unsure = torch.tensor([1.0] * 10 + [-1.0] * 6)  # E[sign] = 0.25 < 0.6
    assert float(augment.adapt(p, unsure, 0.6)) == pytest.approx(0.5 - step)
    assert float(augment.adapt(torch.tensor(0.0), unsure, 0.6)) == 0.0  # within [0, 1]
    assert float(augment.adapt(torch.tensor(1.0), sure, 0.6)) == 1.0


def test_adaptive_augmentation_trains_resumes_exactly_and_is_checked(
    run_cli, isolated: Path
) -> None:
    """p is state: saved in the checkpoint, logged, and a resumed run ends as a straight one."""
    extra = (
        "--set", "augment=translation,cutout", "--set", "augment_target=0.1",
        "--checkpoint-every", "4", "--keep", "5", "--log-every", "2",
    )  # fmt: skip
    a, middle = straight_and_resumed(run_cli, isolated, extra, steps=8)
    straight = isolated / "straight"
    p_end, p_mid = a["model/augment_p"], load_file(str(middle))["model/augment_p"]
    assert float(p_end) > float(p_mid) > 0
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["augment_p"] > 0 for r in log] == [True] * 4
    assert all(-1 <= r["augment_rt"] <= 1 for r in log), log
    result = run_cli("train", "dcgan", "-d", "synthetic", "--preset", "small-batch",
                     "--set", "augment_target=0.6", "--dry-run")  # fmt: skip
    assert result.code == 2 and "augment_target needs an augmentation" in result.err, result
    result = run_cli("train", "dcgan", "-d", "synthetic", "--set", "augment=cutout",
                     "--set", "augment_target=1", "--dry-run")  # fmt: skip
    assert result.code == 2 and "augment_target must be in [0, 1), got 1.0" in result.err


@pytest.mark.parametrize("d_batch", ["joint", "reference"])
def test_d_batch_trains_resumes_exactly_and_samples(run_cli, isolated: Path, d_batch: str) -> None:
    extra = ("--set", f"d_batch={d_batch}", "--checkpoint-every", "3", "--keep", "5")
    straight_and_resumed(run_cli, isolated, extra, steps=6)
    config = json.loads((isolated / "straight/config.json").read_text())
    assert config["model_config"]["d_batch"] == d_batch
    result = run_cli("sample", isolated / "resumed", "--n", "4", "--out", isolated / "s.png")
    assert result.code == 0 and (isolated / "s.png").is_file(), result


def test_translation_shifts_whole_pixels_and_brings_in_zeros() -> None:
    x = torch.arange(1 * 1 * 8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8) + 1
    for seed in range(20):
        y = augment.translation(x, gen(seed))
        kept = y[y != 0]
        # Every pixel that is not brought-in zero is one of x's, in order along each row.
        assert set(kept.tolist()) <= set(x.flatten().tolist())
        assert int((y == 0).sum()) in {0, 8, 15, 16, 28, 29, 30}  # 0/1 row/col of 8 px, or both
    shifted = [augment.translation(x, gen(s)) for s in range(40)]
    assert any(torch.equal(s, x) for s in shifted)  # zero shift happens
    assert any(torch.equal(s[..., 1:, :], x[..., :-1, :]) for s in shifted)  # down by one row


def test_cutout_zeroes_one_square_of_half_the_size() -> None:
    x = torch.ones(64, 1, 16, 16)
    y = augment.cutout(x, gen(0))
    zeros = (y == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0  # 8x8 inside, clipped at the borders
    for image in y[:, 0]:
        rows = (image == 0).any(1).nonzero().flatten()
        cols = (image == 0).any(0).nonzero().flatten()
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()  # one rectangle


def test_color_leaves_grayscale_saturation_alone() -> None:
    """A grey image gets brightness and contrast only: no saturation factor is drawn for it."""
    x = torch.rand(4, 1, 8, 8)
    draws = gen(0)
    shift = torch.rand(4, 1, 1, 1, generator=draws) - 0.5  # U(-0.5, 0.5)
    contrast = torch.rand(4, 1, 1, 1, generator=draws) + 0.5  # U(0.5, 1.5), the second draw
    y = x + shift
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(augment.color(x, gen(0)), (y - mean) * contrast + mean)
    # a colour image draws a saturation factor between the two: its channels move apart
    rgb = x.expand(-1, 3, -1, -1).clone()
    rgb[:, 0] += 0.2
    out = augment.color(rgb, gen(0))
    assert not torch.allclose(out[:, 0] - out[:, 1], rgb[:, 0] - rgb[:, 1], atol=1e-3)


def test_spectral_discriminator_has_no_batchnorm_and_unit_norm() -> None:
    model = DCGAN(DCGANConfig(**TINY_CFG, d_norm="spectral"))
    d = model.discriminator
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert any("parametrizations" in k for k in d.state_dict())
    x = torch.randn(8, 3, 32, 32)
    for _ in range(30):  # power iterations converge in training mode
        d(x)
    conv = d.main[0]
    sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
    assert abs(float(sigma.detach()) - 1.0) < 0.05


def test_joint_batchnorm_lets_d_see_a_contrast_shared_by_the_batch() -> None:
    """Separate BatchNorm batches make D blind to a batch's contrast: its first conv has no
    bias and LeakyReLU scales with its input, so the next BatchNorm divides the scale out.
    In one batch with the real images, the real images set the statistics."""
    torch.manual_seed(0)
    x, fake = torch.randn(8, 3, 32, 32) * 3, torch.randn(8, 3, 32, 32) * 10  # far above eps
    shifts = {}
    for d_batch in ("separate", "joint", "reference"):
        model = DCGAN(DCGANConfig(**TINY_CFG | {"d_width": 16}, d_batch=d_batch))
        d = model.discriminator.train().requires_grad_(False)
        _, full = model._d_logits(d, x, fake, gen(0))
        _, washed = model._d_logits(d, x, fake * 0.3, gen(0))  # the same images, less contrast
        g_full, g_washed = model._g_logits(x, fake, gen(0)), model._g_logits(x, fake * 0.3, gen(0))
        assert torch.allclose(g_full, full) and torch.allclose(g_washed, washed)  # G sees as D
        shifts[d_batch] = float((full - washed).abs().max())
    assert shifts["separate"] < 1e-3 < 0.1 < min(shifts["joint"], shifts["reference"]), shifts


def test_reference_batchnorm_judges_each_generated_image_by_the_real_statistics() -> None:
    """Under d_batch=reference a generated image's logit depends on itself and the real
    batch only; over the real images alone it is BatchNorm2d, running statistics too."""
    from imagegen.models.blocks import ReferenceBatchNorm2d, reference_batch

    torch.manual_seed(0)
    model = DCGAN(DCGANConfig(**TINY_CFG | {"d_width": 16}, d_batch="reference"))
    d = model.discriminator.train().requires_grad_(False)
    x, fake = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    _, logits = model._d_logits(d, x, fake, gen(0))
    _, alone = model._d_logits(d, x, fake[:1], gen(0))  # one generated image, the same reals
    assert torch.allclose(logits[:1], alone, atol=1e-5)
    ref, plain = ReferenceBatchNorm2d(4), torch.nn.BatchNorm2d(4)
    h = torch.randn(6, 4, 5, 5) * 3 + 1
    with reference_batch(ref, 6):
        assert torch.allclose(ref(h), plain(h), atol=1e-5)
    assert torch.allclose(ref.running_var, plain.running_var)
    assert torch.allclose(ref.running_mean, plain.running_mean) and ref.reference == 0


def test_joint_batchnorm_needs_batchnorm() -> None:
    with pytest.raises(UsageError, match=r"d_batch=joint .* needs d_norm=batch"):
        DCGANConfig(**TINY_CFG, d_norm="spectral", d_batch="joint")


def test_hinge_losses_by_hand() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.25])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1.25] -> 0.625
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx(0.875)
    assert float(generator_loss(fake, "hinge")) == pytest.approx(0.875)


@pytest.mark.parametrize(
    "options",
    [
        {"d_norm": "spectral", "loss": "hinge", "augment": "color,translation,cutout"},
        {"d_norm": "none", "loss": "bce", "augment": "translation"},
        {"d_norm": "batch", "loss": "hinge", "augment": "cutout"},
        {"d_norm": "batch", "d_batch": "joint", "augment": "translation", "augment_target": 0.6},
        {"d_batch": "reference", "augment": "translation,cutout", "augment_target": 0.6},
        {"r1_gamma": 10.0, "augment": "translation,cutout", "augment_target": 0.6},
        {"r1_gamma": 1.0, "d_norm": "spectral", "loss": "hinge"},
    ],
)
def test_training_step_with_each_recipe(options: dict) -> None:
    from imagegen.training.config import TrainConfig

    torch.manual_seed(0)
    model = DCGAN(DCGANConfig(**TINY_CFG, **options))
    opts = model.configure_optimizers(TrainConfig(lr_d=4e-4))
    assert opts["discriminator"].param_groups[0]["lr"] == 4e-4
    assert opts["generator"].param_groups[0]["lr"] == 2e-4
    before = {k: p.clone() for k, p in model.named_parameters()}
    losses = model.training_step(torch.rand(4, 3, 32, 32), opts, gen(0))
    assert all(torch.isfinite(v) for v in losses.values())
    assert ("r1" in losses) == bool(options.get("r1_gamma"))
    # Every weight moves (a hinge head's bias may not at first: its two gradients cancel).
    unmoved = [k for k, p in model.named_parameters() if torch.equal(before[k], p)]
    assert unmoved in ([], ["discriminator.head.bias"])


def test_r1_penalty_by_hand() -> None:
    """A linear D(x) = <w, x> has the gradient w at every x: the penalty is ||w||^2."""
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3))  # (5,)
    penalty = r1_penalty(logits, x).detach()
    assert float(penalty) == pytest.approx(float(w.square().sum()), rel=1e-6)
    quadratic = x.square().sum(dim=(1, 2, 3))  # gradient 2x: the penalty is E||2x||^2
    expected = (2 * x.detach()).square().sum(dim=(1, 2, 3)).mean()
    assert float(r1_penalty(quadratic, x).detach()) == pytest.approx(float(expected), rel=1e-6)


def test_r1_step_descends_on_the_penalty() -> None:
    """With a penalty that outweighs the GAN loss (here about 100 to 1), D's step makes D
    smoother at the real images (the sign of the term is right) and logs the penalty."""
    from imagegen.training.config import TrainConfig

    torch.manual_seed(0)
    model = DCGAN(DCGANConfig(**TINY_CFG, d_norm="none", r1_gamma=1e8))
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    real = torch.rand(8, 3, 32, 32)
    x = (real * 2 - 1).requires_grad_(True)
    before = float(r1_penalty(model.discriminator(x), x).detach())
    losses = model.training_step(real, opts, gen(0))
    after = float(r1_penalty(model.discriminator(x), x).detach())
    assert float(losses["r1"]) == pytest.approx(before, rel=1e-5)
    assert after < 0.7 * before, (before, after)


def test_r1_trains_and_resumes_exactly(run_cli, isolated: Path) -> None:
    extra = ("--set", "r1_gamma=0.5", "--checkpoint-every", "3", "--keep", "5")
    straight_and_resumed(run_cli, isolated, extra, steps=6)
    config = json.loads((isolated / "straight" / "config.json").read_text())
    assert config["model_config"]["r1_gamma"] == 0.5
    log = [json.loads(line) for line in (isolated / "straight/log.jsonl").read_text().splitlines()]
    assert all(r["r1"] > 0 for r in log), log


def test_lazy_r1_takes_the_penalty_every_kth_step_weighted_k(monkeypatch) -> None:
    """r1_every=4: R1 on D steps 0, 4, 8 only, weighted 4 x gamma (a due step moves D as the
    every-step model with 4 x gamma does); the log's r1 is the last penalty computed."""
    from imagegen.models import dcgan
    from imagegen.training.config import TrainConfig

    calls = []
    original = dcgan.r1_penalty
    monkeypatch.setattr(dcgan, "r1_penalty", lambda *a: calls.append(1) or original(*a))
    models = []
    for cfg in ({"r1_gamma": 0.5, "r1_every": 4}, {"r1_gamma": 2.0}):
        torch.manual_seed(0)
        models.append(DCGAN(DCGANConfig(**TINY_CFG, **cfg)))
    lazy, every = models
    opts = [m.configure_optimizers(TrainConfig()) for m in models]
    real = torch.rand(4, 3, 32, 32)
    logs = [m.training_step(real, o, gen(1)) for m, o in zip(models, opts, strict=True)]
    assert torch.equal(lazy.discriminator.state_dict()["main.0.weight"],
                       every.discriminator.state_dict()["main.0.weight"])  # fmt: skip
    assert float(logs[0]["r1"]) == float(logs[1]["r1"])
    calls.clear()
    for step in range(1, 9):
        out = lazy.training_step(real, opts[0], gen(step))
        assert "r1" in out
    assert len(calls) == 2 and int(lazy.d_steps) == 9  # steps 4 and 8


def test_lazy_r1_without_r1_is_inert_and_resumes_exactly(run_cli, isolated: Path) -> None:
    # The default preset's r1_every stays when a user turns R1 off: no penalty, no error.
    model = DCGAN(DCGANConfig(**TINY_CFG, r1_every=16))
    assert not any(model._r1_due(model._count_d_step()) for _ in range(17))
    extra = ("--set", "r1_gamma=0.5", "--set", "r1_every=4", "--checkpoint-every", "3")
    straight_and_resumed(run_cli, isolated, (*extra, "--keep", "5"), steps=6)  # resumed at 3


def test_presets_resolve_and_are_recorded(run_cli, isolated: Path) -> None:
    result = run_cli("train", "dcgan", "-d", "synthetic", "--dry-run", "--json")
    plan = json.loads(result.out)
    # the default recipe, written out (docs/models.md): changing it must change this test
    assert plan["train_config"]["preset"] == "adaptive-lazy-r1"
    want_train = {"batch_size": 16, "lr": 4e-4, "ema_decay": 0.999, "beta1": 0.5}
    assert {k: plan["train_config"][k] for k in want_train} == want_train
    want_model = {"augment": "translation,cutout", "augment_target": 0.9, "r1_gamma": 0.01}
    want_model |= {"r1_every": 16}
    want_model |= {"d_norm": "batch", "loss": "bce", "d_batch": "separate"}
    assert {k: plan["model_config"][k] for k in want_model} == want_model
    result = run_cli(
        "train", "dcgan", "-d", "synthetic", "--preset", "classic", "--dry-run", "--json"
    )
    plan = json.loads(result.out)
    assert plan["model_config"]["d_norm"] == "batch" and plan["model_config"]["loss"] == "bce"
    assert plan["train_config"]["ema_decay"] == 0.0 and plan["train_config"]["preset"] == "classic"
    # Flags override the preset.
    result = run_cli(
        "train", "dcgan", "-d", "synthetic", "--preset", "classic", "--set", "loss=hinge",
        "--ema-decay", "0.99", "--dry-run", "--json",
    )  # fmt: skip
    plan = json.loads(result.out)
    assert plan["model_config"]["loss"] == "hinge" and plan["train_config"]["ema_decay"] == 0.99
    result = run_cli("train", "dcgan", "-d", "synthetic", "--preset", "fast", "--dry-run")
    assert result.code == 2 and "unknown preset 'fast' for dcgan (valid: classic" in result.err
    assert "classic" in run_cli("train", "--help").out


def test_preset_lands_in_config_json_and_resume_keeps_it(run_cli, isolated: Path) -> None:
    run = isolated / "run"
    train_tiny(run_cli, run, "--preset", "classic")
    config = json.loads((run / "config.json").read_text())
    assert config["train_config"]["preset"] == "classic"
    result = run_cli("train", "dcgan", "--resume", run, "--preset", "bn-hinge", "--steps", "6")
    assert result.code == 1 and "preset: 'classic' -> 'bn-hinge'" in result.err


def test_linear_lr_decay_and_exact_resume_mid_schedule(run_cli, isolated: Path) -> None:
    """The schedule follows the planned total: resuming step 5 of 10 ends as 10 straight."""
    extra = (
        "--set", "augment=color,translation,cutout", "--lr-decay", "linear", "--lr", "5e-4",
        "--lr-d", "3e-4", "--checkpoint-every", "5", "--keep", "5",
    )  # fmt: skip
    straight = isolated / "straight"
    straight_and_resumed(run_cli, isolated, extra, steps=10)
    from safetensors import safe_open

    with safe_open(str(straight / "checkpoints/latest.safetensors"), "pt") as f:
        optim = json.loads(f.metadata()["optim"])
    g = optim["generator"]["param_groups"][0]
    d = optim["discriminator"]["param_groups"][0]
    assert g["initial_lr"] == 5e-4 and d["initial_lr"] == 3e-4
    assert g["lr"] == pytest.approx(5e-4 * (1 - 9 / 10))  # the last step ran at step 9 of 10
    assert d["lr"] == pytest.approx(3e-4 * (1 - 9 / 10))


def test_extending_a_decayed_run_says_the_schedule_changed(run_cli, isolated: Path) -> None:
    """A decay that reached 0 at step 4 restarts from 50% when the run goes on to step 8."""
    train_tiny(run_cli, isolated / "run", "--lr-decay", "linear", steps=4)
    result = run_cli("train", "dcgan", "--resume", isolated / "run", "--steps", "8")
    assert result.code == 0, result.err
    said = " ".join((result.out + result.err).split())
    assert (
        "the linear lr decay planned to end at step 4 now ends at step 8: the lr goes on at "
        "50% of its initial value, not 0%" in said
    )
    again = run_cli("train", "dcgan", "--resume", isolated / "run", "--steps", "8")
    assert "lr decay" not in again.out + again.err  # complete: nothing changed


def test_lr_schedule_holds_then_decays_to_zero() -> None:
    whole = LRSchedule("linear", 0.0, 10)
    assert [whole.scale(s) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert whole.scale(9) == 1.0 - 9 / 10  # the formula runs before --lr-decay-start kept
    tail = LRSchedule("linear", 0.75, 100)
    assert tail.scale(0) == tail.scale(75) == 1.0
    assert tail.scale(90) == pytest.approx(0.4) and tail.scale(100) == 0.0
    assert LRSchedule("none", 0.5, 10).scale(9) == 1.0
    assert tail.describe() == "lr constant to step 75, then decayed linearly to 0"


def test_a_decay_started_on_resume_is_the_run_planned_with_it(run_cli, isolated: Path) -> None:
    """A constant run's checkpoint at step 4 of 8, resumed with a decay over its second half,
    ends bit-exactly as a run trained with that schedule from the start: a long run can try
    a late decay from its own checkpoint."""
    train_tiny(run_cli, isolated / "constant", "--checkpoint-every", "4", steps=8)
    decayed = ("--lr-decay", "linear", "--lr-decay-start", "0.5")
    train_tiny(run_cli, isolated / "planned", *decayed, steps=8)
    middle = isolated / "constant/checkpoints/step-0000004.safetensors"
    branch = isolated / "branch"
    result = run_cli("train", "dcgan", "--resume", middle, "--run-dir", branch, *decayed)
    assert result.code == 0, result.err
    said = " ".join((result.out + result.err).split())
    assert (
        "the lr schedule changed from constant lr to lr constant to step 4, then decayed "
        "linearly to 0: the lr goes on at 100% of its initial value" in said
    )
    assert "not 100%" not in said  # the lr is where it was: nothing to contrast
    a = load_file(str(isolated / "planned/checkpoints/latest.safetensors"))
    b = load_file(str(branch / "checkpoints/latest.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    constant = load_file(str(isolated / "constant/checkpoints/latest.safetensors"))
    assert any(not torch.equal(a[k], constant[k]) for k in a)  # the decay changed the end


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--lr", "nan"), "--lr must be in (0, inf), got nan"),
        (("--lr", "inf"), "--lr must be in (0, inf), got inf"),
        (("--epochs", "nan"), "epochs must be in (0, inf), got nan"),
        (("--beta1", "1.5"), "beta1 must be in [0, 1), got 1.5"),
        (("--beta2", "-0.1"), "beta2 must be in [0, 1), got -0.1"),
        (("--lr-d", "0"), "--lr-d must be in (0, inf), got 0.0"),
        (("--ema-decay", "1"), "--ema-decay must be in [0, 1), got 1.0"),
        (("--lr-decay", "cosine"), "lr_decay: expected one of none, linear"),
        (("--lr-decay-start", "1"), "--lr-decay-start must be in [0, 1), got 1.0"),
    ],
)
def test_numeric_options_are_checked_before_anything_runs(
    run_cli, isolated: Path, args: tuple, message: str
) -> None:
    length = () if "--epochs" in args else ("--steps", "2")
    result = run_cli("train", "dcgan", "-d", "synthetic", *length, *args)
    assert result.code == 2 and message in result.err, result
    assert "Traceback" not in result.err and not (isolated / "checkpoints").exists()


@pytest.mark.parametrize(
    ("model", "option", "message"),
    [
        ("vae", "beta=nan", "beta must be in [0, inf), got nan"),
        ("vae", "gaussian_std=inf", "gaussian_std must be in (0, inf), got inf"),
        ("vaegan", "gamma=nan", "gamma must be in [0, inf), got nan"),
        ("dcgan", "d_norm=layer", "d_norm: expected one of batch, spectral, none"),
        ("dcgan", "r1_gamma=-1", "r1_gamma must be in [0, inf), got -1.0"),
    ],
)
def test_model_options_are_checked(run_cli, model: str, option: str, message: str) -> None:
    result = run_cli("train", model, "-d", "synthetic", "--set", option, "--dry-run")
    assert result.code == 2 and message in result.err, result


def test_vaegan_balancing_rule_skips_as_the_authors_do() -> None:
    from imagegen.models.vaegan import VAEGAN, VAEGANConfig

    model = VAEGAN(VAEGANConfig(channels=1, width=4, d_width=4, latent_dim=4, balance=True))
    t = torch.tensor
    # equilibrium 0.68, margin 0.35: D skipped below 0.33, the decoder above 1.03
    assert model._balance(t(0.7), t(0.7)) == (True, True)
    assert model._balance(t(0.2), t(0.7)) == (False, True)  # D too good on real: rest D
    assert model._balance(t(0.7), t(1.2)) == (True, False)  # D beats the decoder: rest it
    assert model._balance(t(0.2), t(1.2)) == (True, True)  # both would rest: both train
    plain = VAEGAN(VAEGANConfig(channels=1, width=4, d_width=4, latent_dim=4))
    assert plain._balance(t(0.0), t(9.0)) == (True, True)


def test_vaegan_skipped_networks_do_not_move_and_skips_are_logged() -> None:
    from imagegen.models.vaegan import VAEGAN, VAEGANConfig
    from imagegen.training.config import TrainConfig

    cfg = VAEGANConfig(channels=1, width=4, d_width=4, latent_dim=4, balance=True)
    # each decision of the rule in turn (the rule itself: the test above)
    for decision, rested, flags in [
        ((False, True), "discriminator", (1.0, 0.0)),
        ((True, False), "autoencoder.decoder", (0.0, 1.0)),
        ((True, True), None, (0.0, 0.0)),
    ]:
        torch.manual_seed(0)
        model = VAEGAN(cfg)
        model._balance = lambda real, prior, decision=decision: decision
        opts = model.configure_optimizers(TrainConfig())
        before = {k: p.clone() for k, p in model.named_parameters()}
        losses = model.training_step(torch.rand(4, 1, 32, 32), opts, gen(0))
        assert (float(losses["d_skipped"]), float(losses["dec_skipped"])) == flags
        moved = {k.split(".")[0] if k.startswith("dis") else ".".join(k.split(".")[:2])
                 for k, p in model.named_parameters() if not torch.equal(before[k], p)}  # fmt: skip
        trained = {"discriminator", "autoencoder.decoder", "autoencoder.encoder"} - {rested}
        assert moved == trained, (decision, moved)  # the encoder is never rested


@pytest.mark.parametrize(
    "options",
    [
        {"d_norm": "spectral", "loss": "hinge", "d_on_reconstructions": False, "beta": 2.0},
        {"balance": True},
        {"balance": True, "d_batch": "joint", "d_on_reconstructions": False},
        {"balance": True, "d_batch": "reference", "d_on_reconstructions": False},
    ],
)
def test_vaegan_options_train(options: dict) -> None:
    from imagegen.models.vaegan import VAEGAN, VAEGANConfig
    from imagegen.training.config import TrainConfig

    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig(channels=1, width=4, d_width=4, latent_dim=4, **options))
    opts = model.configure_optimizers(TrainConfig(lr_d=1e-4))
    assert opts["discriminator"].param_groups[0]["lr"] == 1e-4
    for _ in range(3):
        losses = model.training_step(torch.rand(4, 1, 32, 32), opts, gen(0))
    assert all(torch.isfinite(v) for v in losses.values())


def test_vaegan_joint_batchnorm_sees_the_contrast_of_reconstructions() -> None:
    """The feature reconstruction (Dis_l) of a washed-out reconstruction batch: equal to the
    original's under separate BatchNorm batches, different in one batch with the real images."""
    from imagegen.models.vaegan import VAEGAN, VAEGANConfig

    torch.manual_seed(0)
    x, rec = torch.randn(8, 1, 32, 32) * 3, torch.randn(8, 1, 32, 32) * 10
    shifts = {}
    for d_batch in ("separate", "joint", "reference"):
        model = VAEGAN(VAEGANConfig(channels=1, width=4, d_width=16, latent_dim=4, d_batch=d_batch))
        dis = model.discriminator.train().requires_grad_(False)
        (_, f_real), (_, f_rec) = model._dis(dis, [x, rec])
        (_, f_real2), (_, f_washed) = model._dis(dis, [x, rec * 0.3])
        assert torch.equal(f_real, f_real2) or d_batch == "joint"  # reference: x sets them
        shifts[d_batch] = float((f_rec - f_washed).abs().max() / f_rec.abs().max())
    assert shifts["separate"] < 1e-3 < 0.1 < min(shifts["joint"], shifts["reference"]), shifts


def test_sigma_vae_tracks_the_optimal_sigma_and_uses_it_for_bits_per_dim() -> None:
    from imagegen.models.vae import VAE, VAEConfig
    from imagegen.training.config import TrainConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(likelihood="gaussian-optimal", width=4, latent_dim=4, channels=1))
    assert "autoencoder.sigma" in model.state_dict()  # travels with the EMA and exports
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    x = torch.rand(8, 1, 32, 32)
    for _ in range(300):
        model.training_step(x, opts, gen(0))
    with torch.no_grad():
        mean = torch.sigmoid(model.autoencoder.decoder(model.autoencoder.encoder(x)[0]))
    rmse = float((x - mean).pow(2).mean().sqrt())
    sigma = float(model.autoencoder.sigma)
    assert 0.5 * rmse < sigma < 2.0 * rmse  # the running optimum, near this data's error
    out = model.evaluate(x, gen(1), model.autoencoder)
    assert math.isfinite(out["bpd"]) and out["bpd"] > 0
    old = VAE(VAEConfig(channels=1, width=4, latent_dim=4))  # other likelihoods: no buffer
    assert "autoencoder.sigma" not in old.state_dict()


def test_standing_statistics_belong_to_the_averaged_weights() -> None:
    """The EMA generator's BatchNorm statistics are re-estimated for its own weights, from
    latents of a seed of their own; the trained generator is left alone."""
    from imagegen.training.ema import EMA, STANDING_BATCHES

    model = DCGAN(DCGANConfig(resolution=32, channels=1, g_width=8, d_width=8, latent_dim=8))
    ema = EMA(model.generator, decay=0.9)
    with torch.no_grad():  # averaged weights that differ from the trained ones
        for p in ema.module.parameters():
            p.mul_(1.5)
    live = [b.clone() for b in model.generator.buffers()]
    ema.standing_statistics(model.generate, 8, torch.device("cpu"))
    first_bn = next(m for m in ema.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not ema.module.training and first_bn.momentum == 0.1
    standing = first_bn.running_mean.clone()
    inputs = []
    hook = first_bn.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(64, 8, generator=g) for _ in range(STANDING_BATCHES)])
    with torch.no_grad():
        ema.module(z)
    hook.remove()
    assert torch.allclose(standing, inputs[0].mean(dim=(0, 2, 3)), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(live, model.generator.buffers(), strict=True))


def test_saved_ema_statistics_are_standing_only_for_an_average(run_cli, isolated: Path) -> None:
    """With an EMA the saved BatchNorm statistics are re-estimated (they differ from the
    trained generator's); without one (decay 0) they are the generator's own."""
    for decay, same in (("0.999", False), ("0", True)):
        run = isolated / f"ema-{decay}"
        train_tiny(run_cli, run, "--ema-decay", decay)
        tensors = load_file(str(run / "checkpoints/latest.safetensors"))
        key = next(k for k in tensors if k.startswith("ema/") and k.endswith("running_mean"))
        live = tensors[key.replace("ema/", "model/generator.", 1)]
        assert torch.equal(tensors[key], live) is same, (decay, key)
