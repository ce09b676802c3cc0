"""Image quality per training image: each model and recipe trained side by side, FID over training.

For each dataset (CIFAR-10-JPEG and MNIST, 32 px) and each recipe, this trains a run for the
same number of training images, measures FID and KID at several points of the run (the curve)
and once more at the end with more images (the final figure), and writes docs/quality.md with
one table, a plot of the curves and a sample grid per run. Everything is resumable: runs resume
from their checkpoints and finished measurements are kept in docs/quality/results.jsonl, so the
script can be stopped and started again at any moment. That record is committed with the
report, which can be written again from it (--report-only) without the run folders. A larger
--images goes on from a run's last checkpoint, except for a run whose lr decayed to 0 at its
end: that one is set aside (its folder and rows renamed NAME.IMAGES-images) and trained anew.
So is a run whose recipe's preset was retuned after it was measured (NAME.config-HASH): the
record's configs are compared with what the preset sets now. A run folder whose config is not
the recorded run's (another run moved into its place) stops the script before it draws a grid
or extends a run under figures that are not its own. --retrain-carried trains anew the runs
whose figures were carried over from an earlier report (NAME.carried keeps their rows).
Each run records the machine it trained on, and the report names them; a recipe's speed alone
is measured again when it was measured on another machine.

Equal time: the dataset KEY-30min (cifar10-jpeg-30min, mnist-30min) trains each recipe for 30
minutes at the images/s its KEY run measured alone (the run records that budget), so recipes
of different speeds meet at equal training time, where the others meet at equal images.
A recipe budgeted on a later day, when the machine runs faster or slower, keeps the first
day's minutes: its speed is scaled by the classic recipe's then and now, measured side by side
(`--speed-only --recipes dcgan-classic,NAME`; the run records the scale as its drift).
Candidates (NAME+key=value) may change a model option or a training option of RECIPE_OPTIONS
(`+batch_size=64`): each measured at equal images and at equal time beside its preset.

Protocol (printed, and written into the report): TF-Inception pool3 features (the FID
network of pytorch-fid, clean-fid and stylegan), pytorch-fid's resize, generated images
quantised to uint8 as a PNG would hold them, sampled from the EMA weights where a recipe keeps
an EMA; the reference is a fixed random subset of the training images, whose features are
cached once. The floor line compares the dataset's own test images with the same reference.

    make bench-quality                       # everything (hours on a 2-core CPU)
    python benchmarks/bench_quality.py --datasets mnist --recipes dcgan-classic,dcgan --images 64000
    python benchmarks/bench_quality.py --datasets cifar10-jpeg-30min --points 6 \
        --recipes dcgan-classic,dcgan-adaptive-lazy-r1        # after their cifar10-jpeg runs
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its modules: benchmarks/quality/

from quality.datasets import datasets
from quality.measure import floor
from quality.recipes import RECIPES, recipe, split_recipes
from quality.record import Results, machine
from quality.report import recorded, report
from quality.runner import retrain_carried, run_one, speed
from quality.settings import Actions, BenchError, Settings, log, parse


def bench(settings: Settings, actions: Actions) -> Results:
    """Train and measure what `actions` asks (or only time, or only report); returns the
    record. Resumable: what the record holds is not measured again."""
    settings.work.mkdir(parents=True, exist_ok=True)
    known = datasets(settings.data_root, settings.work)
    unknown = [k for k in actions.datasets if k not in known]
    if unknown:
        raise BenchError(f"unknown dataset {unknown[0]} (valid: {', '.join(known)})")
    dss = [known[k] for k in actions.datasets]
    names = split_recipes(actions.recipes) if actions.recipes else list(RECIPES)
    for name in names:
        recipe(name)  # unknown names stop here, before anything runs
    settings.results.parent.mkdir(parents=True, exist_ok=True)
    results = Results(settings.results)
    log(f"machine: {machine()}; work folder {settings.work}, record {settings.results} (resumable)")
    if actions.speed_only:  # the recipes asked, else every recipe the record has
        for ds in dss:
            for name in names if actions.recipes else recorded(results, known)[1]:
                speed(ds, name, results, settings, again=True)
    elif not actions.report_only:
        for ds in dss:
            floor(ds, results, settings)
            for name in names:
                if actions.retrain_carried:
                    retrain_carried(ds, name, results, settings)
                run_one(ds, name, results, settings)
                report(results, *recorded(results, known), settings)
            for name in names:  # after its runs, so that nothing else shares the machine
                speed(ds, name, results, settings)
    log(f"report: {report(results, *recorded(results, known), settings)}")
    return results


def main(argv: list[str] | None = None) -> int:
    settings, actions = parse(argv, __doc__.splitlines()[0])
    try:
        results = bench(settings, actions)
    except BenchError as e:
        print(f"bench_quality: {e}", file=sys.stderr)
        return 1
    if actions.json:
        print(json.dumps({"rows": list(results.rows.values())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
