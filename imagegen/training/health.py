"""Alarms for training that fails without stopping: a discriminator that wins outright,
losses that explode, an FID that climbs well above its best.

Each alarm is raised once per run (the first time its condition holds): what happened and, apart,
what to try; shown as one line of both. Training goes on. Non-finite losses are not an alarm but
an error (loop.py).
"""

import math
import statistics
from dataclasses import asdict, dataclass, field

# The discriminator "wins outright" when, over a window of log lines covering at least
# WINDOW_STEPS steps, it tells real from generated at these levels in every line.
WINDOW_STEPS = 1000
WINS_REAL, WINS_FAKE = 0.98, 0.02  # D(x) above, D(G(z)) below, on the sigmoid scale
WINS_LOSS = 0.02  # or its loss below this (the hinge loss is 0 once every margin holds)
EXPLODE_FACTOR = 1000.0  # a loss this many times its early level explodes
EARLY_LINES = 5  # the log lines that set a loss's early level
# GAN losses are O(1) in healthy training (BCE or hinge on D's logits): above this they have
# exploded even when they did so from the first line (a BCE loss of 1000 is D = e^-1000).
ADVERSARIAL = {"d_loss": 1000.0, "g_loss": 1000.0}
# Logged values that are measurements, not losses: R1's unweighted E||grad D(x)||^2 grows a
# thousandfold in a healthy run when its weight is small (without R1 it does, docs/models.md);
# a large value means a sharp D, not a learning rate to lower.
NOT_LOSSES = frozenset({"r1"})
FID_RISE = 1.2  # an FID 20% above the best so far
# What to try when D wins or the FID climbs: measured (docs/models.md: MNIST, the DCGAN's
# default preset); a test checks every flag named against both GAN models' --help.
AUGMENT_ADVICE = (
    "for the DCGAN, DiffAugment of what D sees (its preset augmented, or --set "
    "augment=translation,cutout over another) prevented it on MNIST"
)


@dataclass(frozen=True)
class Alarm:
    """One alarm: its kind, the step it was raised at, what happened and what to try."""

    kind: str  # discriminator-wins | losses-explode | fid-rises
    step: int
    message: str
    advice: str

    @property
    def text(self) -> str:
        """The one line the progress, the log's "warnings" and the result show."""
        return f"{self.message}. {self.advice}"

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)  # kind, step, message, advice


@dataclass
class HealthMonitor:
    """Watches the log lines (and FIDs) of one run; `check` returns new alarms."""

    window_steps: int = WINDOW_STEPS
    raised: set[str] = field(default_factory=set)
    _wins_since: int | None = None
    _early: dict[str, list[float]] = field(default_factory=dict)
    _best_fid: tuple[float, int] | None = None

    def check(self, step: int, losses: dict[str, float]) -> list[Alarm]:
        """New alarms from one log line's mean losses at `step`."""
        return [a for a in (self._wins(step, losses), self._explodes(step, losses)) if a]

    def _raise(self, kind: str, step: int, message: str, advice: str) -> Alarm | None:
        if kind in self.raised:
            return None
        self.raised.add(kind)
        return Alarm(kind, step, message, advice)

    def _wins(self, step: int, losses: dict[str, float]) -> Alarm | None:
        if "d_loss" not in losses:
            return None
        by_output = losses.get("d_real", 0.0) > WINS_REAL and losses.get("d_fake", 1.0) < WINS_FAKE
        if not (by_output or losses["d_loss"] < WINS_LOSS):
            self._wins_since = None
            return None
        if self._wins_since is None:
            self._wins_since = step
        if step - self._wins_since < self.window_steps:
            return None
        return self._raise(
            "discriminator-wins",
            step,
            f"the discriminator wins outright since step {self._wins_since} (d_loss "
            f"{losses['d_loss']:.3g}, d_real {losses.get('d_real', float('nan')):.3f}, d_fake "
            f"{losses.get('d_fake', float('nan')):.3f}): the generator gets no useful gradient "
            "and its samples stop improving",
            "Keep the best checkpoint with --fid-every (checkpoints/best.safetensors); "
            + AUGMENT_ADVICE,
        )

    def _explodes(self, step: int, losses: dict[str, float]) -> Alarm | None:
        for name, value in losses.items():
            if name in NOT_LOSSES:
                continue
            early = self._early.setdefault(name, [])
            if len(early) < EARLY_LINES:
                early.append(abs(value))
            level = max(statistics.median(early), 1.0)
            if len(early) == EARLY_LINES and abs(value) > EXPLODE_FACTOR * level:
                why = f"{abs(value) / level:.0f}x its early level {level:.3g}"
            elif abs(value) > ADVERSARIAL.get(name, math.inf):
                why = "far above the O(1) of a healthy GAN loss"
            else:
                continue
            return self._raise(
                "losses-explode",
                step,
                f"losses explode at step {step}: {name} {value:.3g}, {why}",
                "The learning rate is likely too high: resume an earlier checkpoint with a "
                "lower --lr (and --lr-d)",
            )
        return None

    def check_fid(self, step: int, fid: float) -> list[Alarm]:
        """New alarms from an FID measured at `step` (with --fid-every)."""
        if self._best_fid is None or fid < self._best_fid[0]:
            self._best_fid = (fid, step)
            return []
        best, at = self._best_fid
        if fid <= FID_RISE * best:
            return []
        alarm = self._raise(
            "fid-rises",
            step,
            f"FID {fid:.2f} at step {step} is {fid / best:.2f}x its best {best:.2f} (step "
            f"{at}): training may be collapsing",
            "checkpoints/best.safetensors keeps the best model; consider stopping; "
            + AUGMENT_ADVICE,
        )
        return [alarm] if alarm else []
