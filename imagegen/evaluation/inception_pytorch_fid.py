"""pytorch-fid's variant of Inception v3, for its `pt_inception-2015-12-05-6726825d.pth` weights.

The TF graph behind published FIDs differs from torchvision's Inception v3 in its pooling
branches: average pooling does not count padding, and the last block max-pools. Blocks here are
torchvision's with the pool branch recomputed that way. The network keeps its 1008-way logits,
so these weights also serve the Inception Score.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv

URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"


class _AvgPoolNoPad:
    """Pool branch: 3x3 average pooling that ignores the padding, then the branch's conv."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = super()._forward(x)  # type: ignore[misc]
        pool = self.branch_pool  # type: ignore[attr-defined]  # the Inception block mixed in
        outputs[-1] = pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return outputs


class FIDInceptionA(_AvgPoolNoPad, tv.InceptionA):
    pass


class FIDInceptionC(_AvgPoolNoPad, tv.InceptionC):
    pass


class FIDInceptionE1(_AvgPoolNoPad, tv.InceptionE):
    pass


class FIDInceptionE2(tv.InceptionE):
    """The last block max-pools in its pool branch."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = super()._forward(x)
        outputs[-1] = self.branch_pool(F.max_pool2d(x, 3, 1, 1))
        return outputs


class PytorchFIDInception(nn.Module):
    """x (B, 3, 299, 299) in [-1, 1] -> pool3 features (B, 2048); `logits` gives (B, 1008)."""

    def __init__(self) -> None:
        super().__init__()
        net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = FIDInceptionE1(1280)
        net.Mixed_7c = FIDInceptionE2(2048)
        self.net = net

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool1(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))))  # (B, 64, 73, 73)
        x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))  # (B, 192, 35, 35)
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c,
                      n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):  # fmt: skip
            x = block(x)  # ends (B, 2048, 8, 8)
        return n.avgpool(x).flatten(1)  # (B, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool3(x)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.fc(features)  # (B, 1008)


def load(path: str, device: torch.device) -> PytorchFIDInception:
    """Build the network and load a pytorch-fid state dict (weights only, no code)."""
    model = PytorchFIDInception()
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = model.net.load_state_dict(state, strict=False)
    # Files saved before BatchNorm counted its batches lack num_batches_tracked: harmless.
    problems = [
        k
        for k in [*result.missing_keys, *result.unexpected_keys]
        if not k.endswith("num_batches_tracked")
    ]
    if problems:
        raise ValueError(f"not pytorch-fid's Inception: {', '.join(problems[:3])}")
    return model.to(device).to(memory_format=torch.channels_last).eval()
