"""The report's sections of their own: small data, class-conditional against
unconditional, quality per training minute."""

from pathlib import Path

from quality.budget import REBUDGET, minutes, speed_row
from quality.datasets import Dataset
from quality.recipes import default_recipe, ramp_text, recipe, unconditional
from quality.record import Results, cpu, curve_points
from quality.settings import Settings
from quality.tables import pair


def small_data(
    results: Results, dss: list[Dataset], names: list[str], settings: Settings
) -> list[str]:
    """The small-data section: each recipe on a subset, its FID against the subset and against
    the whole training set, and the copying check beside it."""
    out = []
    for ds in (d for d in dss if d.whole):
        rows = []
        for name in (*names, "floor"):
            key = f"{ds.key}/{name}"
            fin = results.get(key if name == "floor" else f"{key}/final")
            whole = results.get(f"{key}-whole" if name == "floor" else f"{key}/final-whole")
            tr = results.get(f"{key}/train")
            if not (fin and whole and "nn_ratio" in fin):
                continue
            what = "test images (the floor)" if name == "floor" else recipe(name).label
            seen = f"{tr['images']:,}" if tr else "–"
            alarm = " (alarm)" if fin.get("alarms") else ""
            rows.append(
                f"| {what} | {seen} | {fin['fid']:.2f} | {whole['fid']:.2f} "
                f"| {fin['precision']:.3f} | {fin['recall']:.3f} | {fin['nn_ratio']:.2f} "
                f"| {fin['nearer_than_nn']:.3f} | {fin['copies']:.3f}{alarm} |"
            )
        if not rows:
            continue
        subset = results.get(f"{ds.key}/subset") or {}
        out += [
            f"## Small data: {ds.label}",
            "",
            f"{ds.subset:,} training images drawn once from {Path(ds.whole).name} (seed 0; the "
            f"names' SHA-256 begins {subset.get('names_sha256', '?')}), copied unchanged into "
            "class subfolders as a user's folder would hold them, and trained on for as many "
            "images as the other rows. FID against the subset: its "
            f"{ds.subset:,} images are the whole reference; against the whole set: the "
            f"{settings.ref_n:,}-image reference of the full dataset's rows. Precision and recall "
            "against the subset. Copying (`imagegen eval --metrics copy`, against the subset): "
            "the median over samples of the distance to the nearest training image over that "
            "image's distance to its own nearest neighbour, the share of samples below 1, and "
            "the share below 0.5 (an alarm from 5%); the floor row is the test images, which "
            "copy nothing.",
            "",
            "| recipe | images seen | FID vs the subset | FID vs the whole set | precision "
            "| recall | median NN ratio | nearer than NN | copies |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
        a, b = pair(results, ds, default_recipe("dcgan"), "dcgan-classic")
        wa = results.get(f"{ds.key}/{default_recipe('dcgan')}/final-whole")
        wb = results.get(f"{ds.key}/dcgan-classic/final-whole")
        if a and b and wa and wb:
            out += [
                f"- DCGAN default / classic FID, {a['images']:,} images each: against the "
                f"subset {a['fid']:.2f} / {b['fid']:.2f} = **{a['fid'] / b['fid']:.2f}**; "
                f"against the whole set {wa['fid']:.2f} / {wb['fid']:.2f} = "
                f"**{wa['fid'] / wb['fid']:.2f}**",
                "",
            ]
    return out


def conditional(results: Results, dss: list[Dataset], names: list[str]) -> list[str]:
    """Each conditional recipe beside the same recipe unconditional, at equal images: overall
    FID (samples in the data's class proportions), their ratio, and the intra-class FID."""
    rows, grids = [], []
    for ds in dss:
        for name in names:
            if not name.endswith("+conditional"):
                continue
            base = unconditional(name)
            a, b = pair(results, ds, name, base)
            fin = results.get(f"{ds.key}/{name}/final")
            if not (a and b and fin):
                continue
            classes = sorted(k.split("/", 1)[1] for k in fin if k.startswith("intra_fid/"))
            per_class = {c: fin[f"intra_fid/{c}"] for c in classes}
            best, worst = min(per_class, key=per_class.get), max(per_class, key=per_class.get)
            pr = " | ".join(
                f"{row.get(m, float('nan')):.3f}" for m in ("precision", "recall") for row in (b, a)
            )
            rows.append(
                f"| {ds.label} | {recipe(name.removesuffix('+conditional')).label} | "
                f"{a['images']:,} | {b['fid']:.2f} "
                f"| {a['fid']:.2f} | **{a['fid'] / b['fid']:.2f}** | {pr} | "
                f"{fin['intra_fid']:.2f} | {best} {per_class[best]:.1f}, {worst} "
                f"{per_class[worst]:.1f} |"
            )
            grids.append(f"| {ds.label} | ![{ds.key} {name}](quality/{ds.key}-{name}.png) |")
    if not rows:
        return []
    return [
        "## Class-conditional against unconditional",
        "",
        "The same recipe trained with `--conditional` on the data's classes (the DCGAN: "
        "conditional BatchNorm in G, a projection discriminator), at the same training images. "
        f"A conditional DCGAN ramps its conditioning in from {ramp_text()} of its run "
        "(transitional training) unless the recipe sets `cond_end` (0: conditional from the "
        "start). Overall FID as above, the conditional model's samples drawn in the training "
        "data's class proportions. Intra-class FID: each class's samples against that class's "
        "reference images (about a tenth of each side here, under 2,048 images a class, so "
        "biased upwards: compare at the same n only), their mean; the best and the worst class. "
        "Precision and recall (k = 3) of each: how much of the data's spread the samples cover.",
        "",
        "| dataset | recipe | images seen | FID unconditional | FID conditional | ratio "
        "| precision uncond. | precision cond. | recall uncond. | recall cond. "
        "| intra-class FID (mean) | best, worst class |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "| dataset | a row of 8 samples per class (seed 0) |",
        "| --- | --- |",
        *grids,
        "",
    ]


def time_table(results: Results, dss: list[Dataset], names: list[str]) -> list[str]:
    """Each recipe's speed measured alone, and the training minutes by which its curve first
    reached the classic recipe's final curve FID (the same 2,000-sample protocol)."""
    rows = []
    for ds in dss:
        target = curve_points(results, f"{ds.key}/dcgan-classic")
        if not target:
            continue
        goal = target[-1]["fid"]
        for name in names:
            key = f"{ds.key}/{name}"
            sp, curve = speed_row(results, ds, name), curve_points(results, key)
            if sp is None or not curve:
                continue
            hit = next((r for r in curve if r["fid"] <= goal), None)
            reached = (
                f"{minutes(results, ds, name, hit['images']):.1f} min ({hit['images']:,} images)"
                if hit
                else f"not within {curve[-1]['images']:,} images"
            )
            last, where = curve[-1], cpu(sp.get("machine", "–"))
            rows.append(
                f"| {ds.label} | {recipe(name).label} | {sp['images_per_s']:.0f} "
                f"| {minutes(results, ds, name, last['images']):.1f} min | {last['fid']:.2f} "
                f"| {goal:.2f} | {reached} | {where} |"
            )
    if not rows:
        return []
    return [
        "## Quality per training minute",
        "",
        "Images/s: each recipe trained alone on the machine named in its row, with its run's "
        "options and precision (`--speed-steps` steps, the median of its log's images/s after "
        "warm-up). Training minutes = images seen / that speed, so runs that shared the machine "
        "while they trained still compare at their own speeds. A recipe reaches the classic "
        "recipe's final curve FID at its first curve point at or below it: the curve has few "
        "points, so this is an upper bound at their resolution. An equal-time row's images/s "
        "is its budget: on a later day than the classic recipe's budget, its speed times the "
        "classic recipe's then over now, both measured side by side (the machine's drift); "
        "set again, and the run trained to it, when a later side-by-side speed moves it by "
        f"more than {REBUDGET:.0%} (the recipe's step got faster or slower).",
        "",
        "| dataset | recipe | images/s alone | minutes for its run | its last curve FID "
        "| classic's last curve FID | reached it by | speed measured on |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "![FID against training minutes](quality/fid-curves-time.png)",
        "",
    ]
