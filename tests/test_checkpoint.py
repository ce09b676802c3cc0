"""Checkpoints: round trip, validation of bad files, atomic writes."""

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from imagegen.common.errors import UserError
from imagegen.models.dcgan import DCGAN, DCGANConfig
from imagegen.storage import checkpoint
from imagegen.training.config import TrainConfig
from imagegen.training.ema import EMA


def tiny_model() -> DCGAN:
    torch.manual_seed(0)
    return DCGAN(DCGANConfig(resolution=32, channels=1, latent_dim=8, g_width=4, d_width=4))


def save(path: Path, model: DCGAN, **kw) -> None:
    opts = model.configure_optimizers(TrainConfig())
    ema = EMA(model.generator, 0.9)
    model.training_step(torch.rand(4, 1, 32, 32), opts, torch.Generator().manual_seed(0))
    ema.update(model.generator)  # the EMA now lags the raw weights
    checkpoint.save_checkpoint(
        path,
        model=model,
        model_name="dcgan",
        train_config=TrainConfig(),
        step=7,
        data_shape=(1, 32, 32),
        dataset="synthetic",
        ema=ema.module,
        optimizers=opts,
        rng={"noise": torch.Generator().manual_seed(3).get_state()},
        **kw,
    )


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "ck.safetensors"
    save(path, model)
    ck = checkpoint.read_checkpoint(path, expect_model="dcgan")
    assert ck.step == 7 and ck.data_shape == (1, 32, 32) and ck.config == model.config
    raw = checkpoint.build_model(ck, use_ema=False)
    z = torch.randn(3, 8)
    model.eval()
    assert torch.equal(raw.generate(z), model.generate(z))
    assert torch.equal(raw.discriminator(raw.generator(z)), model.discriminator(model.generator(z)))
    ema = checkpoint.build_model(ck, use_ema=True)
    assert not torch.equal(ema.generate(z), raw.generate(z))


def test_restored_adam_state_has_the_parameters_layout(tmp_path: Path) -> None:
    """Adam's moments are saved contiguous; a channels_last model's parameters are not. The
    fused optimizer pairs a parameter and its state in memory order, so a restored state must
    take its parameter's layout, or the next steps update with another element's moments."""
    model = tiny_model().to(memory_format=torch.channels_last)
    path = tmp_path / "ck.safetensors"
    save(path, model)
    again = tiny_model().to(memory_format=torch.channels_last)
    opts = again.configure_optimizers(TrainConfig())
    ck = checkpoint.read_checkpoint(path, expect_model="dcgan")
    checkpoint.restore_training_state(ck, again, EMA(again.generator, 0.9).module, opts)
    w = again.generator.main[0].weight
    assert w.dim() == 4 and not w.is_contiguous()  # a conv weight in channels_last
    for opt in opts.values():
        for group in opt.param_groups:
            for param in group["params"]:
                for key in ("exp_avg", "exp_avg_sq"):
                    assert opt.state[param][key].stride() == param.stride(), key


def test_metadata_is_complete_and_nothing_is_pickled(tmp_path: Path) -> None:
    path = tmp_path / "ck.safetensors"
    save(path, tiny_model())
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + n])
    meta = header["__metadata__"]
    for key in (
        "format",
        "format_version",
        "imagegen_version",
        "model",
        "config",
        "step",
        "data_shape",
        "normalisation",
        "train_config",
        "optim",
    ):
        assert key in meta
    assert json.loads(meta["config"])["latent_dim"] == 8
    names = [k for k in header if k != "__metadata__"]
    assert any(k.startswith("optim/generator/") for k in names)
    assert any(k.startswith("ema/") for k in names) and "rng/noise" in names
    assert b"\x80\x04" not in path.read_bytes()[: 8 + n]  # no pickle opcode in the header


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a safetensors file"),
        (b"hello world, not a checkpoint at all", "not a safetensors file"),
        (struct.pack("<Q", 5) + b"{oops", "bad header"),
    ],
)
def test_garbage_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        checkpoint.read_checkpoint(path)


def test_truncated_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ck.safetensors"
    save(path, tiny_model())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="truncated"):
        checkpoint.read_checkpoint(path)


def test_foreign_safetensors_and_versions_and_models(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UserError, match="not an imagegen checkpoint"):
        checkpoint.read_checkpoint(foreign)
    future = tmp_path / "future.safetensors"
    save_file(
        {"w": torch.zeros(2)},
        str(future),
        metadata={"format": checkpoint.FORMAT, "format_version": "99"},
    )
    with pytest.raises(UserError, match="format version 99"):
        checkpoint.read_checkpoint(future)
    path = tmp_path / "ck.safetensors"
    save(path, tiny_model())
    with pytest.raises(UserError, match="holds a dcgan model, not vae"):
        checkpoint.read_checkpoint(path, expect_model="vae")
    with pytest.raises(UserError, match="not found"):
        checkpoint.read_checkpoint(tmp_path / "missing.safetensors")


def test_killed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck.safetensors"
    save(path, tiny_model())
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save(path, tiny_model())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left
    checkpoint.read_checkpoint(path)
