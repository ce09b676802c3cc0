"""When a run measures its FID: every --fid-every steps, never (0), or, left to its default,
by itself in a long run, as often as costs about BUDGET of its training time.

A long run (LONG_RUN_IMAGES planned training images or more, with the Inception weights
installed) measures its first FID at FIRST of its planned steps; how long that took against the
training steps' time sets the gap to the next, so that each costs at most BUDGET of the training
between them (and at least MIN_GAP of the run apart); the last step is measured too, so the run
ends by saying how far it is from its best. The next step is kept in the checkpoint, so a
resumed run measures where the uninterrupted one would have.
"""

import math
from dataclasses import dataclass

LONG_RUN_IMAGES = 1_000_000  # the runs whose curve is worth watching by default
BUDGET = 0.05  # of the training time, for FID
FIRST = 0.02  # of the planned steps: the first auto FID
MIN_GAP = 0.02  # of the planned steps: at most about 50 auto FIDs


@dataclass
class FIDSchedule:
    """The steps a run measures its FID at."""

    every: int  # > 0: every this many steps; 0: never; -1: auto (see above)
    total: int  # the run's planned steps
    next_step: int = 0  # auto: the next step to measure at

    @classmethod
    def plan(
        cls,
        fid_every: int | None,
        total: int,
        planned_images: int,
        weights: bool,
        start: int,
        recorded_next: int | None = None,
    ) -> "FIDSchedule":
        """--fid-every as given; None: auto where the run is long and the weights are
        installed, else never. `recorded_next`: a resumed run's next auto step."""
        if fid_every is not None:
            return cls(fid_every, total)
        if planned_images < LONG_RUN_IMAGES or not weights:
            return cls(0, total)
        first = max(1, round(FIRST * total))
        return cls(-1, total, recorded_next if recorded_next is not None else max(first, start + 1))

    @property
    def auto(self) -> bool:
        return self.every < 0

    @property
    def on(self) -> bool:
        return self.every != 0

    def due(self, step: int) -> bool:
        if self.every > 0:
            return step % self.every == 0 or step == self.total
        return self.auto and (step >= self.next_step or step == self.total)

    def measured(self, step: int, fid_s: float, step_s: float) -> None:
        """After an FID at `step` that took `fid_s` seconds, training at `step_s` seconds a
        step: the next auto FID where this one costs BUDGET of the steps between."""
        if not self.auto:
            return
        gap = max(math.ceil(MIN_GAP * self.total), math.ceil(fid_s / (BUDGET * max(step_s, 1e-9))))
        self.next_step = step + gap

    def describe(self) -> str:
        """For the run's first line: an auto schedule ("" otherwise)."""
        if not self.auto:
            return ""
        return (
            f"FID of the EMA model from step {self.next_step}, then as often as costs about "
            f"{BUDGET:.0%} of the training time, the best kept as RUN:best (a long run; "
            "--fid-every 0: off)"
        )
