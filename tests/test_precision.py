"""The speed paths, checked on the CPU: bf16 autocast, torch.compile, flips on the device."""

import json
from pathlib import Path

import pytest
import torch
from conftest import train_tiny
from safetensors.torch import load_file

from imagegen.common import devices
from imagegen.common.devices import precision_reason, resolve_precision
from imagegen.models.dcgan import DCGAN, DCGANConfig
from imagegen.models.registry import MODELS
from imagegen.storage import runs
from imagegen.storage.checkpoint import read_checkpoint
from imagegen.training.config import TrainConfig


def test_auto_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 on CUDA; on a CPU only where it has bf16 units and the model was measured."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("fp32", cuda) == "fp32"
    for units, measured, expected in [
        ("avx512_bf16", True, "bf16"),
        ("avx512_bf16", False, "fp32"),
        (None, True, "fp32"),
    ]:
        monkeypatch.setattr(devices, "cpu_native_bf16", lambda units=units: units)
        assert resolve_precision("auto", cpu, measured) == expected
        assert precision_reason("auto", cpu, measured).startswith(f"{expected} (auto: ")
    assert MODELS["dcgan"].cpu_bf16 and not MODELS["vae"].cpu_bf16
    assert not MODELS["vaegan"].cpu_bf16


def test_resume_keeps_the_precision_auto_chose(
    run_cli, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that auto put in bf16 stays in bf16 when resumed where auto would say fp32."""
    monkeypatch.setattr(devices, "cpu_native_bf16", lambda: "avx512_bf16")
    train_tiny(run_cli, isolated / "run", steps=4)
    assert json.loads((isolated / "run" / "config.json").read_text())["precision"] == "bf16"
    monkeypatch.setattr(devices, "cpu_native_bf16", lambda: None)
    result = run_cli("train", "dcgan", "--resume", isolated / "run", "--steps", "6")
    assert result.code == 0, result.err
    assert "precision bf16 (kept from the checkpoint)" in result.out + result.err
    latest = read_checkpoint(isolated / "run" / "checkpoints" / "latest.safetensors")
    assert latest.counters.precision == "bf16"
    assert runs.recorded_precision(latest.path) == "bf16"  # what older checkpoints fall back on
    # Asked for explicitly, the precision changes (as --help says it may on resume).
    result = run_cli(
        "train", "dcgan", "--resume", isolated / "run", "--steps", "8", "--precision", "fp32"
    )
    assert result.code == 0 and "precision fp32 (asked for)" in result.out + result.err


def mean_losses(run: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return {k: sum(r[k] for r in rows) / len(rows) for k in ("d_loss", "g_loss")}


@pytest.mark.integration
def test_bf16_and_fp32_training_give_comparable_losses(run_cli, isolated: Path) -> None:
    for precision in ("fp32", "bf16"):
        train_tiny(
            run_cli, isolated / precision, "--precision", precision, "--log-every", "20", steps=300
        )
        config = json.loads((isolated / precision / "config.json").read_text())
        assert config["precision"] == precision
    fp32, bf16 = mean_losses(isolated / "fp32"), mean_losses(isolated / "bf16")
    for k in fp32:  # means over 300 steps; measured: d 0.221 vs 0.227, g 2.97 vs 2.92
        assert abs(bf16[k] - fp32[k]) / fp32[k] < 0.3, (k, fp32, bf16)


@pytest.mark.integration
def test_compiled_and_eager_steps_agree() -> None:
    def one_step(compiled: bool) -> tuple[dict[str, float], torch.Tensor]:
        torch.manual_seed(0)
        model = DCGAN(DCGANConfig(resolution=32, channels=1, latent_dim=8, g_width=8, d_width=8))
        opts = model.configure_optimizers(TrainConfig())
        if compiled:
            for network in model.children():
                network.compile()
        x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(1))
        losses = model.training_step(x, opts, torch.Generator().manual_seed(2))
        keys = list(model.state_dict())
        assert keys[0] == "generator.main.0.weight"  # no _orig_mod. prefix
        return {k: float(v) for k, v in losses.items()}, model.generator.main[0].weight.detach()

    eager_losses, eager_w = one_step(False)
    compiled_losses, compiled_w = one_step(True)
    for k in eager_losses:
        assert compiled_losses[k] == pytest.approx(eager_losses[k], rel=1e-4, abs=1e-5)
    torch.testing.assert_close(compiled_w, eager_w, rtol=1e-4, atol=1e-5)


def test_flips_change_the_batches_and_resume_exactly(run_cli, isolated: Path) -> None:
    train_tiny(run_cli, isolated / "plain", steps=6)
    train_tiny(run_cli, isolated / "flip", "--flip", steps=6)
    train_tiny(run_cli, isolated / "split", "--flip", steps=3)
    result = run_cli("train", "dcgan", "--resume", isolated / "split", "--steps", "6", "-q")
    assert result.code == 0, result
    plain, flipped, split = (
        load_file(str(isolated / r / "checkpoints/latest.safetensors"))
        for r in ("plain", "flip", "split")
    )
    key = "model/generator.main.0.weight"
    assert not torch.equal(plain[key], flipped[key])
    assert all(torch.equal(flipped[k], split[k]) for k in flipped)
    # Flipping is part of the data: a resume may not switch it off.
    result = run_cli("train", "dcgan", "--resume", isolated / "split", "--no-flip", "--steps", "8")
    assert result.code == 1 and "flip: True -> False" in result.err


@pytest.mark.integration
def test_compile_through_the_cli_keeps_the_checkpoint_format(run_cli, isolated: Path) -> None:
    train_tiny(run_cli, isolated / "eager", "--set", "r1_gamma=0", steps=2)
    train_tiny(run_cli, isolated / "compiled", "--set", "r1_gamma=0", "--compile", steps=2)
    a = load_file(str(isolated / "eager/checkpoints/latest.safetensors"))
    b = load_file(str(isolated / "compiled/checkpoints/latest.safetensors"))
    assert a.keys() == b.keys()
    result = run_cli("sample", isolated / "compiled", "--n", "4", "--out", isolated / "s.png")
    assert result.code == 0, result


@pytest.mark.integration
def test_compile_leaves_the_discriminator_eager_under_r1(run_cli, isolated: Path) -> None:
    """torch.compile has no double backward: with R1 (the default) only G is compiled."""
    args = ["--set", "r1_gamma=0.5", "--set", "r1_every=1", "--compile", "--log-every", "1"]
    train_tiny(run_cli, isolated / "r1", *args, steps=2)
    first = run_cli("train", "dcgan", "--resume", isolated / "r1", "--steps", "3", "--compile")
    assert first.code == 0, first
    said = "compiled generator (not discriminator: R1 takes a double backward through it"
    assert said in " ".join(first.err.split()), first.err
    log = [json.loads(line) for line in (isolated / "r1/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "r1" in r] == [1, 2, 3]


def test_logged_means_of_bf16_values_are_summed_in_fp32() -> None:
    """bf16 statistics (D's outputs under autocast) averaged over a long log window: a bf16
    running sum stops growing at 256 (0.9 is below half its spacing there), so the mean of
    500 values of 0.9 came out as 0.512."""
    from imagegen.training import distributed
    from imagegen.training.loop import _LossMeter

    meter = _LossMeter(distributed.Context(), torch.device("cpu"))
    for _ in range(500):
        meter.add({"d_real": torch.tensor(0.9, dtype=torch.bfloat16), "g": torch.tensor(2.0)})
    means, stop = meter.read(False)
    assert means["d_real"] == pytest.approx(0.8984375)  # 0.9 as bf16 holds it
    assert means["g"] == 2.0 and not stop
