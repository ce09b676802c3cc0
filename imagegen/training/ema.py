"""Exponential moving average of a module's weights, used for sampling."""

import copy
from collections.abc import Callable

import torch
from torch import nn

STANDING_BATCHES = 32  # batches of 64 latents: statistics from 2,048 samples
STANDING_SEED = 0


class EMA:
    """A frozen copy of `module` whose parameters track an exponential moving average.

    The decay warms up as min(decay, (1 + t) / (10 + t)) so that short runs are not dominated
    by the initial weights. Buffers (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self.standing_at = -1  # the update count the BatchNorm statistics were estimated at

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        src_params = [p.detach() for p in source.parameters()]
        torch._foreach_lerp_(ema_params, src_params, 1.0 - d)
        for b_ema, b_src in zip(self.module.buffers(), source.buffers(), strict=True):
            b_ema.copy_(b_src)
        self.updates += 1

    @torch.no_grad()
    def standing_statistics(
        self,
        generate: Callable[[torch.Tensor, nn.Module], torch.Tensor],
        latent_dim: int,
        device: torch.device,
    ) -> None:
        """Re-estimate the BatchNorm statistics for the averaged weights (Brock et al. 2019).

        The statistics copied from the trained module belong to its weights, not to their
        average, and sampling the average with them measured worse (docs/models.md, the
        DCGAN). Every BatchNorm layer is reset and set to
        the plain mean over STANDING_BATCHES batches of N(0, I) latents (the models that ask
        for this pass all of them in `generate`), from a fixed seed of their own: the training
        noise stream is untouched, so resume stays exact. Done once per update count.
        """
        if self.standing_at == self.updates:
            return
        norms = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:  # models that ask for this pass every BatchNorm of the module in generate
            m.reset_running_stats()
            m.momentum = None  # a cumulative mean over the batches
        self.module.train()
        try:
            g = torch.Generator().manual_seed(STANDING_SEED)
            for _ in range(STANDING_BATCHES):
                generate(torch.randn(64, latent_dim, generator=g).to(device), self.module)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            self.module.eval()
        self.standing_at = self.updates
