"""The learning rate over a run (--lr-decay, --lr-decay-start): constant, or held and then
decayed linearly to 0 at the run's last step, from a fraction of its planned steps on.

The schedule follows the planned length, so a run resumed exactly goes on as it would have;
one resumed with another length or schedule goes on from where the new schedule stands, and
its first line says so (`resumed_note`).
"""

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LRSchedule:
    """The lr scale at each step of a run of `total` steps."""

    decay: str  # "none" or "linear"
    start: float  # the fraction of `total` at which a linear decay begins
    total: int

    @classmethod
    def stored(cls, train_config: dict[str, Any], total: int) -> "LRSchedule":
        """The schedule of a checkpoint's training options (written before --lr-decay-start
        or not) over `total` steps."""
        return cls(
            train_config.get("lr_decay", "none"), train_config.get("lr_decay_start", 0.0), total
        )

    @property
    def decays(self) -> bool:
        return self.decay != "none"

    @property
    def first_decayed(self) -> int:
        """The first step whose lr is below the initial one."""
        return int(self.start * self.total)

    def scale(self, step: int) -> float:
        """The lr at `step` over the initial lr: 1 before the decay, 0 at the end."""
        if not self.decays:
            return 1.0
        begin = self.start * self.total
        return min(1.0, max(0.0, 1.0 - (step - begin) / (self.total - begin)))

    def describe(self) -> str:
        """The schedule in a few words for the run's first line ('' where constant)."""
        if not self.decays:
            return ""
        if self.start == 0:
            return "lr decayed linearly to 0 over the run"
        return f"lr constant to step {self.first_decayed}, then decayed linearly to 0"


def resumed_note(before: LRSchedule, now: LRSchedule, step: int) -> str:
    """What a resumed run's first line says where its schedule moved ('' where it did not)."""
    if before == now or not (before.decays or now.decays):
        return ""
    goes_on = f"the lr goes on at {now.scale(step):.0%} of its initial value"
    if f"{before.scale(step):.0%}" != f"{now.scale(step):.0%}":
        goes_on += f", not {before.scale(step):.0%}"
    if (before.decay, before.start) == (now.decay, now.start):
        return (
            f"the linear lr decay planned to end at step {before.total} now ends at step "
            f"{now.total}: {goes_on}"
        )
    said = before.describe() or "constant lr"
    return f"the lr schedule changed from {said} to {now.describe() or 'constant lr'}: {goes_on}"


def set_lr_scale(optimizers: dict[str, torch.optim.Optimizer], scale: float) -> None:
    """Set every parameter group's lr to `scale` times its initial lr."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * scale
