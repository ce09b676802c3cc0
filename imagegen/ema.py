"""Exponential moving average of a module's weights, used for sampling."""

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of `module` whose parameters track an exponential moving average.

    The decay warms up as min(decay, (1 + t) / (10 + t)) so that short runs are not dominated
    by the initial weights. Buffers (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.module.parameters())
        src_params = [p.detach() for p in source.parameters()]
        torch._foreach_lerp_(ema_params, src_params, 1.0 - d)
        for b_ema, b_src in zip(self.module.buffers(), source.buffers(), strict=True):
            b_ema.copy_(b_src)
        self.updates += 1
