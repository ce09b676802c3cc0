"""The model contract, checked once for every registered model: train -> checkpoint -> resume
(exactly) -> sample -> eval -> convert. A new model in the registry is tested here too."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagegen.models.base import GenerativeModel
from imagegen.models.registry import MODELS
from imagegen.storage import checkpoint

SHRINK = {"g_width": 8, "d_width": 8, "width": 8, "latent_dim": 8}


def tiny(name: str) -> list[str]:
    """--set options that make any registered model tiny."""
    fields = {f.name for f in dataclasses.fields(MODELS[name].config_cls)}
    return [a for k, v in SHRINK.items() if k in fields for a in ("--set", f"{k}={v}")]


CASES = [pytest.param(name, 32, id=name) for name in MODELS] + [
    pytest.param(name, 128, id=f"{name}-128px", marks=pytest.mark.integration) for name in MODELS
]


@pytest.mark.parametrize(("name", "resolution"), CASES)
def test_every_model_keeps_the_contract(
    name: str, resolution: int, run_cli, isolated: Path, weights
) -> None:
    spec = MODELS[name]
    assert issubclass(spec.model_cls, GenerativeModel)
    assert dataclasses.is_dataclass(spec.config_cls) and spec.config_cls.__dataclass_params__.frozen
    base = ["train", name, "-d", "synthetic", "--resolution", resolution, "--batch-size", "8"]
    base += ["-q"]
    straight = trains_and_resumes_exactly(run_cli, name, base, isolated)

    ckpt = checkpoint.read_checkpoint(straight / "checkpoints/latest.safetensors")
    model = checkpoint.build_model(ckpt)
    assert isinstance(model, GenerativeModel) and model.latent_dim == 8
    images = model.generate(torch.randn(2, 8))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.min() >= 0 and images.max() <= 1

    assert run_cli("sample", straight, "-n", "4", "--out", isolated / "s.png").code == 0
    if spec.model_cls.can_reconstruct:
        result = run_cli(
            "sample", straight, "--reconstruct", "-n", "4", "--out", isolated / "r.png"
        )
        assert result.code == 0, result
    result = run_cli("eval", straight, "-n", "8", "--metrics", "fid,kid", "--json", "-q")
    assert result.code == 0 and json.loads(result.out)["metrics"]["fid"] > 0, result
    if spec.model_cls.has_likelihood:
        result = run_cli("eval", straight, "-n", "8", "--metrics", "bpd", "--json", "-q")
        assert result.code == 0 and json.loads(result.out)["metrics"]["test_bpd"] > 0

    (isolated / "export").mkdir()
    assert run_cli("convert", straight, isolated / "export" / "m.pt").code == 0
    assert run_cli("convert", isolated / "export" / "m.pt", isolated / "back.safetensors").code == 0
    again = checkpoint.build_model(checkpoint.read_checkpoint(isolated / "back.safetensors"))
    z = torch.randn(3, 8)
    assert torch.equal(model.generate(z), again.generate(z))
    result = run_cli("convert", straight, isolated / "small.safetensors", "--weights-only")
    assert result.code == 0, result
    small = checkpoint.build_model(checkpoint.read_checkpoint(isolated / "small.safetensors"))
    assert torch.equal(model.generate(z), small.generate(z))
    if _has("onnxruntime"):
        result = run_cli("convert", straight, isolated / "m.onnx", "--json", "-q")
        assert (
            result.code == 0 and json.loads(result.out)["check"]["onnxruntime_max_abs_diff"] < 1e-4
        )


def trains_and_resumes_exactly(run_cli, name: str, base: list, isolated: Path) -> Path:
    """`base` (a train command) for 6 steps straight through, and resumed from its step-3
    checkpoint: both end with the same bits (the planned total stays 6, so a default preset's
    lr schedule is resumed mid-way too). Returns the straight run."""
    base = [*base, "--checkpoint-every", "3", "--flip", *tiny(name)]
    straight, resumed = isolated / "straight", isolated / "resumed"
    assert run_cli(*base, "--steps", "6", "--run-dir", straight).code == 0
    middle = straight / "checkpoints" / "step-0000003.safetensors"
    result = run_cli("train", name, "--resume", middle, "--run-dir", resumed, "-q")
    assert result.code == 0, result
    a = load_file(str(straight / "checkpoints/latest.safetensors"))
    b = load_file(str(resumed / "checkpoints/latest.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    return straight


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_a_model_from_outside_imagegen_keeps_the_contract(
    run_cli, isolated: Path, weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop and the commands know no model by name: a model whose file lies outside
    imagegen/ (tests/plugins/toy_model.py), registered with one spec and nothing else,
    trains, resumes, samples, evaluates and converts through the CLI."""
    from imagegen.models.registry import ModelSpec

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    spec = ModelSpec(
        name="toy",
        summary="moment matching (a test's model)",
        module="toy_model",
        config_name="ToyConfig",
        model_name="Toy",
    )
    monkeypatch.setitem(MODELS, "toy", spec)
    for command in ("train", "convert"):  # the help lists it, though imagegen was imported first
        shown = run_cli(command, "--help")
        assert shown.code == 0 and "dcgan, vae, vaegan, toy." in " ".join(shown.out.split())
    test_every_model_keeps_the_contract("toy", 32, run_cli, isolated, weights)
