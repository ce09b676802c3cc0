"""End to end: imagegen's FID of two image folders equals each reference tool's own FID of the
same folders, under that tool's protocol: pytorch-fid's `calculate_fid_given_paths`,
torch-fidelity's `calculate_metrics` and clean-fid's `compute_fid`. Each tool reads the folders,
resizes, extracts and computes the Fréchet distance itself; only its weights are ours (the TF
Inception pool3 network, offline): clean-fid gets the TorchScript file it would download, the
two others the same network converted to their state-dict layout, checked equal first."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.integration  # each tool runs Inception on every image: a minute

N = 64  # images a folder; below 2048 every tool's covariance is rank-deficient alike


def _folders(root: Path) -> tuple[Path, Path]:
    """Two folders of different 32-px RGB images: noisy blobs, and smooth gradients."""
    rng = np.random.default_rng(0)
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    for i in range(N):
        blob = rng.integers(0, 256, (32, 32, 3)) * (rng.random() > 0.5)
        blob[8:24, 8:24] = rng.integers(0, 256, 3)
        Image.fromarray(blob.astype(np.uint8)).save(a / f"{i:03d}.png")
        tint = rng.random(3)
        smooth = (np.stack([xx, yy, (xx + yy) / 2], -1) * tint * 255).astype(np.uint8)
        Image.fromarray(smooth).save(b / f"{i:03d}.png")
    return a, b


def _torchscript(weights: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, not gone
        return torch.jit.load(str(weights), map_location="cpu").eval()


def _as_state_dict(weights: Path, layout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The TorchScript network's convolutions (weight, beta, mean, var) in order, written
    into a pytorch-fid-style state dict `layout` (BasicConv2d: conv, then BatchNorm with unit
    scale); its classifier stays as it is (pool3 features do not use it)."""
    script = _torchscript(weights).state_dict()
    convs = [k.removesuffix(".weight") for k in script if k.endswith(".weight")]
    out = dict(layout)
    targets = [k.removesuffix(".conv.weight") for k in layout if k.endswith(".conv.weight")]
    assert len(targets) == len(convs) == 94
    for target, conv in zip(targets, convs, strict=True):
        assert layout[f"{target}.conv.weight"].shape == script[f"{conv}.weight"].shape
        out[f"{target}.conv.weight"] = script[f"{conv}.weight"]
        out[f"{target}.bn.weight"] = torch.ones_like(script[f"{conv}.beta"])
        out[f"{target}.bn.bias"] = script[f"{conv}.beta"]
        out[f"{target}.bn.running_mean"] = script[f"{conv}.mean"]
        out[f"{target}.bn.running_var"] = script[f"{conv}.var"]
    return out


def _imagegen_fid(run_cli, a: Path, b: Path, protocol: str) -> float:
    result = run_cli(
        "eval", a, "--dataset", b, "--metrics", "fid", "--protocol", protocol, "--n", N, "--json"
    )
    assert result.code == 0, result
    return json.loads(result.out)["metrics"]["fid"]


def test_fid_equals_pytorch_fid(run_cli, isolated: Path, weights: Path, monkeypatch) -> None:
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    import pytorch_fid.inception as pf

    from imagegen.evaluation.inception_pytorch_fid import PytorchFIDInception

    state = _as_state_dict(weights, PytorchFIDInception().net.state_dict())
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: state)
    net = pf.InceptionV3([3]).eval()  # pytorch-fid's own network, with these weights
    x = torch.rand(2, 3, 299, 299)
    with torch.no_grad():
        torch.testing.assert_close(
            net(x)[0].flatten(1), _torchscript(weights)(x * 2 - 1), atol=1e-4, rtol=1e-4
        )
    a, b = _folders(isolated)
    theirs = fid_score.calculate_fid_given_paths([str(a), str(b)], 16, "cpu", 2048, 0)
    assert _imagegen_fid(run_cli, a, b, "pytorch-fid") == pytest.approx(theirs, rel=1e-3)


def test_fid_equals_torch_fidelity(run_cli, isolated: Path, weights: Path, monkeypatch) -> None:
    fidelity = pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = isolated / "weights-inception-2015-12-05.pth"
    torch.save(_as_state_dict(weights, _layout_of_torch_fidelity(monkeypatch)), path)
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(path)).eval()
    x = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():  # its own network, with these weights, is the TorchScript one
        theirs = net(x)[0]
        ours = _torchscript(weights)((x.float() - 128) / 128)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    a, b = _folders(isolated)
    theirs = fidelity.calculate_metrics(
        input1=str(a), input2=str(b), fid=True, cuda=False, verbose=False, cache=False,
        feature_extractor_weights_path=str(path), batch_size=16,
    )["frechet_inception_distance"]  # fmt: skip
    assert _imagegen_fid(run_cli, a, b, "tf") == pytest.approx(theirs, rel=1e-3)


def _layout_of_torch_fidelity(monkeypatch) -> dict[str, torch.Tensor]:
    """torch-fidelity's extractor's state dict keys and shapes, built without its download."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:
        m.setattr(fe, "load_state_dict_from_url", lambda *args, **kwargs: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda *args, **kw: None)
        return fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()


def test_fid_equals_clean_fid(run_cli, isolated: Path, weights: Path, monkeypatch) -> None:
    cleanfid = pytest.importorskip("cleanfid.fid")
    from cleanfid import features
    from cleanfid.inception_torchscript import InceptionV3W

    class Ours(InceptionV3W):  # the file clean-fid would download, read from ours
        def __init__(self, path: str, download: bool = True, resize_inside: bool = False):
            torch.nn.Module.__init__(self)
            self.base = self.layers = _torchscript(weights)
            self.resize_inside = resize_inside

    monkeypatch.setattr(features, "InceptionV3W", Ours)
    a, b = _folders(isolated)
    theirs = cleanfid.compute_fid(
        str(a), str(b), mode="clean", num_workers=0, batch_size=16,
        device=torch.device("cpu"), use_dataparallel=False, verbose=False,
    )  # fmt: skip
    assert _imagegen_fid(run_cli, a, b, "clean-fid") == pytest.approx(theirs, rel=1e-3)
