"""The GAN losses the DCGAN and the VAE-GAN share, on D's logits.

    bce    D: -log D(x) - sum over fakes of log(1 - D(fake)), real labelled 1, generated 0.
           G: the non-saturating sum over fakes of -log D(fake), generated labelled 1 (the
           seed tutorial's targets and sign are corrected here).
    hinge  D: max(0, 1 - D(x)) + sum over fakes of max(0, 1 + D(fake)).  G: -D(fake).

`fakes` is one batch of logits or a list of them (the VAE-GAN's reconstructions and prior
samples): each batch's mean term is added.
"""

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def _batches(fakes: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return [fakes] if isinstance(fakes, torch.Tensor) else list(fakes)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(
    logits_real: torch.Tensor, fakes: torch.Tensor | list[torch.Tensor], loss: str = "bce"
) -> torch.Tensor:
    """D's loss: real images labelled real, each batch of `fakes` labelled fake."""
    batches = _batches(fakes)
    if loss == "hinge":
        return F.relu(1 - logits_real).mean() + _total(F.relu(1 + f).mean() for f in batches)
    return _bce(logits_real, 1.0) + _total(_bce(f, 0.0) for f in batches)


def generator_loss(fakes: torch.Tensor | list[torch.Tensor], loss: str = "bce") -> torch.Tensor:
    """The generator's (or decoder's) loss: its images labelled real."""
    batches = _batches(fakes)
    if loss == "hinge":
        return _total(-f.mean() for f in batches)
    return _total(_bce(f, 1.0) for f in batches)


def _total(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of one or more loss terms (a tensor, never the int 0)."""
    first, *rest = terms
    return sum(rest, first)
