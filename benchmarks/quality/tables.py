"""The report's tables: the defaults at a glance, every run, the reconstructions, the
ratios the targets are about, the machines."""

from pathlib import Path

from imagegen.models.registry import MODELS
from quality.datasets import EQUAL_TIME, Dataset
from quality.recipes import default_recipe, recipe
from quality.record import ASIDE, Results, best_and_last, grid_file, machine, trained_in


def machines(results: Results, dss: list[Dataset], names: list[str]) -> str:
    """Which machine trained the report's runs: the most common one, then any others with
    the runs they trained (a train row records the machine() of its run)."""
    trained: dict[str, list[str]] = {}
    for ds in dss:
        for name in names:
            tr = results.get(f"{ds.key}/{name}/train")
            if tr is not None:
                where = tr.get("machine", "not recorded")
                trained.setdefault(where, []).append(f"{ds.label} / {recipe(name).label}")
    if not trained:
        return f"Machine: {machine()}."
    first, *others = sorted(trained, key=lambda m: -len(trained[m]))
    text = f"Machine: {first}" + (" (the runs not named below)." if others else ".")
    for other in others:
        text += f" {other}: {'; '.join(trained[other])}."
    return text


def table(results: Results, dss: list[Dataset], names: list[str], work: Path) -> list[str]:
    """The report's table: one row per dataset and recipe, the floor per dataset."""
    lines = [
        "| dataset | recipe | trained in | images seen (batch) | FID | KID × 1000 | precision "
        "| recall | best curve FID (at images) | last / best | train time | img/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ds in dss:
        for name in names:
            key = f"{ds.key}/{name}"
            tr, fin = results.get(f"{key}/train"), results.get(f"{key}/final")
            summary = best_and_last(results, key, tr) if tr and fin else None
            if summary is None:
                continue
            (best, last_over_best), mark = summary, " \\*" if "carried_from" in tr else ""
            lines.append(
                f"| {ds.label} | {recipe(name).label}{mark} | {trained_in(tr, work)} "
                f"| {tr['images']:,} ({tr['train_config']['batch_size']}) | {fin['fid']:.2f} "
                f"| {fin['kid_mean'] * 1000:.1f} ± {fin['kid_std'] * 1000:.1f} "
                f"| {fin['precision']:.3f} | {fin['recall']:.3f} "
                f"| {best['fid']:.2f} ({best['images']:,}) | {last_over_best:.2f} "
                f"| {tr['elapsed_s'] / 60:.1f} min | {tr['images'] / max(tr['elapsed_s'], 1):.0f} |"
            )
        fl = results.get(f"{ds.key}/floor")
        if fl:
            lines.append(
                f"| {ds.label} | test images (the floor) | – | – | {fl['fid']:.2f} "
                f"| {fl['kid_mean'] * 1000:.1f} ± {fl['kid_std'] * 1000:.1f} "
                f"| {fl['precision']:.3f} | {fl['recall']:.3f} | – | – | – | – |"
            )
    return lines


def autoencoder_table(results: Results, dss: list[Dataset], names: list[str]) -> list[str]:
    """Reconstructions (and a VAE's bits/dim) of the models that have an encoder."""
    lines = [
        "| dataset | recipe | prior-sample FID | reconstruction FID | reconstruction MSE "
        "| test bits/dim |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for ds in dss:
        for name in names:
            fin = results.get(f"{ds.key}/{name}/final")
            if not fin or "recon_fid" not in fin:
                continue
            bpd = f"{fin['test_bpd']:.3f}" if "test_bpd" in fin else "–"
            lines.append(
                f"| {ds.label} | {recipe(name).label} | {fin['fid']:.2f} | "
                f"{fin['recon_fid']:.2f} | {fin['recon_mse']:.4f} | {bpd} |"
            )
    return lines if len(lines) > 2 else []


def ratios(results: Results, dss: list[Dataset]) -> list[str]:
    """The comparisons the targets are about, as ratios of final FIDs."""
    dcgan, vae, vaegan = (default_recipe(m) for m in ("dcgan", "vae", "vaegan"))
    pairs = [
        (dcgan, "dcgan-classic", "DCGAN default / classic FID"),
        (dcgan, "dcgan-classic@bf16", "DCGAN default / classic FID, the classic trained in bf16"),
        (vaegan, vae, "VAE-GAN / VAE prior-sample FID (default presets)"),
        ("dcgan-classic@bf16", "dcgan-classic", "DCGAN classic recipe trained in {} / in {}"),
    ]
    out = []
    for ds in dss:
        if ds.minutes:
            out += equal_time_ratio(results, ds, dcgan, "dcgan-classic")
            continue
        for a_name, b_name, what in pairs:
            a, b = pair(results, ds, a_name, b_name)
            if a and b and "{}" in what:  # a precision comparison: where they differ
                if a["trained_in"] == b["trained_in"]:
                    continue
                what = what.format(a["trained_in"], b["trained_in"])
            if a and b:
                out.append(
                    f"- {ds.label}, {a['images']:,} images each: {what} = {a['fid']:.2f} / "
                    f"{b['fid']:.2f} = **{a['fid'] / b['fid']:.2f}**"
                )
        a, b = pair(results, ds, vaegan, vae)
        if a and b and "recon_fid" in a and "recon_fid" in b:
            out.append(
                f"- {ds.label}, {a['images']:,} images each: VAE-GAN / VAE reconstruction FID = "
                f"{a['recon_fid']:.2f} / {b['recon_fid']:.2f} = "
                f"**{a['recon_fid'] / b['recon_fid']:.2f}**"
            )
    return out


def equal_time_ratio(results: Results, ds: Dataset, a: str, b: str) -> list[str]:
    """Two recipes' final FIDs after the same training minutes (each at its own speed alone)."""
    rows = [
        (results.get(f"{ds.key}/{n}/final"), results.get(f"{ds.key}/{n}/train")) for n in (a, b)
    ]
    if not all(fin and tr and "budget" in tr for fin, tr in rows):
        return []
    (fa, ta), (fb, tb) = rows
    return [
        f"- {ds.label}: DCGAN default / classic FID at equal training time ({ds.minutes} min "
        f"at each recipe's speed alone: {ta['images']:,} and {tb['images']:,} images) = "
        f"{fa['fid']:.2f} / {fb['fid']:.2f} = **{fa['fid'] / fb['fid']:.2f}**"
    ]


def pair(results: Results, ds: Dataset, a: str, b: str) -> tuple[dict | None, dict | None]:
    """Two recipes' final figures with their images seen, where both trained equally long."""
    rows = []
    for name in (a, b):
        final, done = results.get(f"{ds.key}/{name}/final"), results.get(f"{ds.key}/{name}/train")
        ran = {"images": done["images"], "trained_in": done.get("trained_in")} if done else {}
        rows.append({**final, **ran} if final and done else None)
    if rows[0] and rows[1] and rows[0]["images"] == rows[1]["images"]:
        return rows[0], rows[1]
    return None, None


def carried_note(results: Results) -> list[str]:
    """What the rows marked * are: figures carried over from an earlier report, whose curve
    points were not kept, with a link to the plot that report drew."""
    rows = [
        r
        for k, r in results.rows.items()
        if k.endswith("/train") and "carried_from" in r and not ASIDE.search(k.split("/")[1])
    ]
    if not rows:
        return []
    sources = ", ".join(sorted({r["carried_from"] for r in rows}))
    plots = ", ".join(f"[{p}]({p})" for p in sorted({r["carried_plot"] for r in rows}))
    return [
        f"\\* Carried over from {sources}: measured by an earlier run of this benchmark (the "
        "same protocol) whose curve points were not kept, so these rows are "
        f"not in the plot below; their figures are as that report printed them, their curves "
        f"in the plot it drew ({plots}).",
        "",
    ]


def summary(results: Results, dss: list[Dataset], docs: Path) -> list[str]:
    """The report's first screen: per dataset, each model's default against the classic
    recipe, at equal images and (where measured) at equal time, the floor, a grid; and which
    reached the lowest FID. Every other row is in the appendix below it."""
    picks = ["dcgan-classic", *(default_recipe(m) for m in MODELS)]
    out: list[str] = []
    for ds in [d for d in dss if not d.minutes]:
        timed = next((d for d in dss if d.base == ds.key), None)
        rows, best = [], None
        for name in picks:
            for d, when in ((ds, "equal images"), (timed, f"{EQUAL_TIME} minutes")):
                fin = results.get(f"{d.key}/{name}/final") if d else None
                tr = results.get(f"{d.key}/{name}/train") if d else None
                if not (fin and tr and d):
                    continue
                recon = f"{fin['recon_fid']:.2f}" if "recon_fid" in fin else "–"
                grid = docs / "quality" / grid_file(results, d.key, name)
                shown = f"![{name}](quality/{grid.name})" if grid.is_file() else "–"
                same = tr.get("same_run_as")  # the run of a candidate the preset adopted
                label = recipe(name).label + (f" (the run of {same})" if same else "")
                rows.append(
                    f"| {label} | {when}: {tr['images']:,} | {fin['fid']:.2f} "
                    f"| {fin['recall']:.3f} | {recon} | {shown} |"
                )
                if when == "equal images" and (best is None or fin["fid"] < best[1]):
                    best = (recipe(name).label, fin["fid"])
        if not rows:
            continue
        fl = results.get(f"{ds.key}/floor")
        if fl:
            rows.append(f"| test images (the floor) | – | {fl['fid']:.2f} | {fl['recall']:.3f} "
                        "| – | – |")  # fmt: skip
        out += [
            f"### {ds.label}",
            "",
            "| recipe | images seen | FID | recall | reconstruction FID | 64 samples |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            *([f"Lowest FID at equal images: {best[0]} ({best[1]:.2f})."] if best else []),
            "",
        ]
    if not out:
        return []
    return [
        "## The defaults at a glance",
        "",
        "Each model's default recipe beside the classic DCGAN recipe (pytorch/examples'), "
        "measured as the appendix below says; the appendix holds every other recipe tried.",
        "",
        *out,
        "## Appendix: every run",
        "",
    ]
