"""Equal time: the images a recipe trains in EQUAL_TIME minutes at its speed measured
alone, kept on the clock recipe's minutes across days (the machine's drift)."""

import time
from pathlib import Path
from typing import Any

from quality.datasets import Dataset
from quality.recipes import recipe, speed_recipe
from quality.record import Results, set_aside
from quality.settings import BenchError, log

# The recipe whose equal-time budget sets the clock: a recipe budgeted later, on a day the
# machine runs faster or slower, trains CLOCK's budget speed x its speed / CLOCK's, both
# measured side by side (one --speed-only run), so that 30 minutes stay the same 30 minutes.
CLOCK = "dcgan-classic"


# This process: the speeds that one --speed-only run measures carry it (side by side).
SESSION = time.strftime("%Y-%m-%d %H:%M:%S")


def speed_row(results: Results, ds: Dataset, name: str) -> dict[str, Any] | None:
    """A recipe's speed measured alone on a dataset; an equal-time dataset's: the one its run's
    budget was set by, else its base's now."""
    done = results.get(f"{ds.key}/{name}/train") if ds.minutes else None
    if done is not None and "budget" in done:
        budget = done["budget"]
        return {"images_per_s": budget["images_per_s"], "machine": budget["speed_on"]}
    return results.get(f"{ds.base or ds.key}/{speed_recipe(name)}/speed")


def equal_time_budget(
    ds: Dataset, name: str, results: Results, sp: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What an equal-time run's images come from: its minutes at the speed measured alone
    (`sp`, else the speed_row's), scaled by the machine's drift since CLOCK's budget was set
    (see CLOCK). A candidate at its base's speed (speed_recipe) has its base's budget, where
    the base's equal-time run has one."""
    own = speed_recipe(name)
    base = results.get(f"{ds.key}/{own}/train") if own != name and sp is None else None
    if base is not None and "budget" in base:
        return base["budget"] | {"as": own}
    sp = sp or speed_row(results, ds, name)
    if sp is None:
        raise BenchError(
            f"{ds.key}/{name}: an equal-time run needs the recipe's speed alone on {ds.base}: "
            f"run --datasets {ds.base} --recipes {name} first"
        )
    budget = {"minutes": ds.minutes, "images_per_s": sp["images_per_s"]}
    drift = _drift(ds, name, results, sp)
    if drift != 1.0:
        budget["measured_images_per_s"] = sp["images_per_s"]
        budget["images_per_s"] = round(sp["images_per_s"] * drift, 1)
        budget["drift"] = round(drift, 4)
    return budget | {"speed_on": sp.get("machine")}


def _drift(ds: Dataset, name: str, results: Results, sp: dict[str, Any]) -> float:
    """CLOCK's budget speed over its speed measured side by side with `sp`: 1 where CLOCK has
    no budget yet, or its speed was not measured again since. Where it was, a speed not
    measured beside CLOCK's stops the script (a day's drift of the machine would become the
    recipe's advantage or loss)."""
    clock = results.get(f"{ds.key}/{CLOCK}/train")
    if name == CLOCK or clock is None or "budget" not in clock:
        return 1.0
    now = results.get(f"{ds.base}/{CLOCK}/speed") or {}
    if now.get("images_per_s") == clock["budget"]["images_per_s"]:
        return 1.0
    if not _beside_clock(results, ds, sp):
        raise BenchError(
            f"{ds.key}/{name}: its speed was not measured side by side with {CLOCK}'s, whose "
            f"budget sets the clock: run --speed-only --datasets {ds.base} "
            f"--recipes {CLOCK},{name} first"
        )
    return clock["budget"]["images_per_s"] / now["images_per_s"]


def _beside_clock(results: Results, ds: Dataset, sp: dict[str, Any]) -> bool:
    """Whether speed row `sp` was measured side by side with CLOCK's latest speed on ds.base."""
    now = results.get(f"{ds.base}/{CLOCK}/speed") or {}
    return sp.get("side_by_side") is not None and sp["side_by_side"] == now.get("side_by_side")


def equal_time_images(ds: Dataset, name: str, results: Results) -> int:
    """Images an equal-time run trains: ds.minutes at the recipe's images/s alone, in whole
    batches. A run recorded already keeps the images its budget gave it (a speed measured
    again later moves no finished run, except through rebudget)."""
    done = results.get(f"{ds.key}/{name}/train")
    if done is not None and "budget" in done:
        return done["images"]
    return _budget_images(ds, name, equal_time_budget(ds, name, results))


def _budget_images(ds: Dataset, name: str, budget: dict[str, Any]) -> int:
    """A budget's images: its minutes at its images/s, in whole batches of the recipe."""
    batch = recipe(name).batch
    return int(budget["images_per_s"] * 60 * ds.minutes) // batch * batch


# An equal-time run's budget is set again when its recipe's speed, measured again side by side
# with CLOCK's, moves its images by more than this share: the recipe's step got faster or
# slower (its code changed; the machine's drift is what CLOCK's speed beside it cancels).
# Side-by-side ratios to CLOCK measured hours apart agreed within 2% (the Xeon, 2026-12-03).
REBUDGET = 0.05


def rebudget(results: Results, ds: Dataset, name: str, run_dir: Path) -> int | None:
    """The images of an equal-time run whose recipe's speed on its base, measured again side
    by side with CLOCK's, gives it more than REBUDGET more images than it trained (it goes on
    from its last checkpoint: extend); one given that many fewer is set aside
    (NAME.IMAGES-images) to train anew at its new budget. None where the budget stands.
    CLOCK's budget is the clock: never set again."""
    key = f"{ds.key}/{name}"
    done = results.get(f"{key}/train")
    if name == CLOCK or done is None or "budget" not in done:
        return None
    sp = results.get(f"{ds.base}/{speed_recipe(name)}/speed") or {}
    if not _beside_clock(results, ds, sp):
        return None
    images = _budget_images(ds, name, equal_time_budget(ds, name, results, sp))
    if abs(images - done["images"]) <= REBUDGET * done["images"]:
        return None
    why = (
        f"its speed measured again beside {CLOCK}'s gives {images:,} images in "
        f"{ds.minutes} minutes, not the {done['images']:,} it trained"
    )
    if images < done["images"]:
        set_aside(results, key, run_dir, f"{done['images']}-images", why)
        return None
    log(f"{key}: {why}; going on to {images:,}")
    return images


def minutes(results: Results, ds: Dataset, name: str, images: int) -> float | None:
    """Training minutes for `images` at the recipe's speed measured alone (None: unmeasured)."""
    sp = speed_row(results, ds, name)
    return images / sp["images_per_s"] / 60 if sp else None
