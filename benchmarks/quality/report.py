"""docs/quality.md, written from the record: the defaults at a glance, then every run."""

from pathlib import Path

from quality.budget import speed_row
from quality.datasets import Dataset
from quality.plots import plot
from quality.recipes import BATCH, RECIPES, is_recipe, recipe
from quality.record import ASIDE, Results, grid_file
from quality.sections import conditional, small_data, time_table
from quality.settings import Settings
from quality.tables import autoencoder_table, carried_note, machines, ratios, summary, table


def report(results: Results, dss: list[Dataset], names: list[str], settings: Settings) -> Path:
    """Write docs/quality.md (and its plots) from what is measured so far."""
    figures = settings.docs / "quality"
    plot(results, dss, names, figures / "fid-curves.png", settings)
    timed = time_table(results, dss, names)
    if timed:
        measured = [d for d in dss if any(speed_row(results, d, n) for n in names)]
        plot(results, measured, names, figures / "fid-curves-time.png", settings, by_time=True)
    lines = [
        "# Image quality per training image",
        "",
        *summary(results, dss, settings.docs),
        "Written by `make bench-quality` (`benchmarks/bench_quality.py`) from its record, "
        "[quality/results.jsonl](quality/results.jsonl): every figure below was measured on "
        "the machine named here with the protocol stated, runs resumed across sessions where "
        "they were interrupted or extended.",
        "",
        machines(results, dss, names),
        "",
        protocol(settings),
        "",
        "CIFAR-10-JPEG is CIFAR-10 re-encoded as JPEG: its FIDs are comparable with each "
        "other and with the floor below, never with published CIFAR-10 FIDs.",
        "",
        *table(results, dss, names, settings.work),
        "",
        *carried_note(results),
        *autoencoder_table(results, dss, names),
        "",
        *ratios(results, dss),
        "",
        *small_data(results, dss, names, settings),
        *conditional(results, dss, names),
        *timed,
        "![FID against training images](quality/fid-curves.png)",
        "",
        *grids(results, dss, names, settings.docs),
        *alarms_raised(results),
    ]
    out = settings.docs / "quality.md"
    out.write_text("\n".join(lines))
    return out


def protocol(settings: Settings) -> str:
    """How every figure of the report was measured, in words."""
    s = settings
    return (
        "Protocol: TF-Inception (2015-12-05) pool3 features, pytorch-fid's resize (bilinear "
        f"to 299 px), extractor precision {s.precision} for the final figures and "
        f"{s.curve_precision} for the curve points. Generated images are sampled "
        "from the EMA weights where the recipe keeps an EMA (the classic recipe samples its "
        "raw generator, as pytorch/examples does), quantised to uint8 as a PNG holds them. "
        f"Reference: {s.ref_n:,} training images (a fixed random subset). Final figures: "
        f"{s.final_n:,} generated images; curve points: {s.curve_n:,} (FID is biased "
        "upwards at small n: compare figures of the same n only). KID subsets of "
        "min(1000, n/2). Precision and recall: k = 3. Reconstructions: "
        f"{s.recon_n:,} test images. All runs: 32 px, seed 0 (seed=N: a second run of "
        f"its recipe), the batch size {BATCH} unless the recipe's preset sets another (the "
        "table gives it). Trained in: the training precision (what `--precision auto` chose "
        "on its machine, or the recipe's @bf16). Train time and img/s are as measured, with "
        "other runs sometimes sharing the machine: speed comparisons are in benchmarks.md."
    )


def grids(results: Results, dss: list[Dataset], names: list[str], docs: Path) -> list[str]:
    """Each run's grid of 64 samples, where it was drawn."""
    files = {(ds.key, n): grid_file(results, ds.key, n) for ds in dss for n in names}
    rows = [
        f"| {ds.label} | {recipe(n).label} | ![{ds.key} {n}](quality/{files[ds.key, n]}) |"
        for ds in dss
        for n in names
        if (docs / "quality" / files[ds.key, n]).is_file()
    ]
    return ["| dataset | recipe | 64 samples (seed 0) |", "| --- | --- | --- |", *rows, ""]


def alarms_raised(results: Results) -> list[str]:
    """The alarms of every run, as `imagegen train` raised them."""
    raised = [  # what happened; the advice of the day is in the run's log
        f"- {r['dataset']} / {r['recipe']}: {a['message']}."
        for r in results.rows.values()
        if r["key"].endswith("/train")
        for a in r.get("alarms", [])
    ]
    return [
        "## Alarms raised during these runs",
        "",
        "As `imagegen train` raised them (the run's log and `--json` result add advice).",
        "",
        *(raised or ["None."]),
        "",
    ]


def recorded(results: Results, known: dict[str, Dataset]) -> tuple[list[Dataset], list[str]]:
    """The datasets and recipes the record has figures for (in the order of `datasets()` and
    `RECIPES`, the @precision variants after them): the report covers them all, whichever of
    them this invocation trained."""
    parts = [key.split("/") for key in results.rows]
    seen = {p[1] for p in parts if len(p) > 2}
    variants = sorted(n for n in seen - set(RECIPES) if is_recipe(n) and not ASIDE.search(n))
    names = [n for n in (*RECIPES, *variants) if n in seen and is_recipe(n)]
    return [d for key, d in known.items() if key in {p[0] for p in parts}], names
