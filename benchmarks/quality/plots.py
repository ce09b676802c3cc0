"""The report's plots: FID against training images, and against training minutes."""

from pathlib import Path

from quality.budget import minutes, speed_row
from quality.datasets import Dataset
from quality.recipes import recipe
from quality.record import Results
from quality.settings import Settings


def plot(
    results: Results,
    dss: list[Dataset],
    names: list[str],
    out: Path,
    settings: Settings,
    by_time: bool = False,
) -> None:
    """FID against training images (or, `by_time`, against training minutes at each
    recipe's speed measured alone), one panel per dataset, one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(dss), figsize=(6 * len(dss), 4.2), squeeze=False, layout="constrained"
    )
    colours = plt.get_cmap("tab20")  # one colour per recipe, the same in every panel
    for ax, ds in zip(axes[0], dss, strict=True):
        for i, name in enumerate(names):
            rows = sorted(
                (r for k, r in results.rows.items() if k.startswith(f"{ds.key}/{name}/curve/")),
                key=lambda r: r["step"],
            )
            if by_time and speed_row(results, ds, name) is None:
                continue
            if rows:
                xs = [
                    minutes(results, ds, name, r["images"]) if by_time else r["images"] / 1000
                    for r in rows
                ]
                fids = [r["fid"] for r in rows]
                ax.plot(xs, fids, marker="o", color=colours(i % 20), label=recipe(name).label)
        fl = results.get(f"{ds.key}/floor")
        if fl:
            ax.axhline(fl["fid"], color="gray", linestyle=":", label="test images (floor, 5k)")
        ax.set_title(ds.label)
        ax.set_xlabel(
            "training minutes (at the speed measured alone)"
            if by_time
            else "training images (thousands)"
        )
        ref_n = min(settings.ref_n, ds.subset or settings.ref_n)
        ax.set_ylabel(f"FID ({settings.curve_n:,} generated vs {ref_n:,} train)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    handles = {}  # one legend for all panels, below them, where it covers no curve
    for ax in axes[0]:
        lines, labels = ax.get_legend_handles_labels()
        handles |= dict(zip(labels, lines, strict=True))
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize=8)
    fig.set_figheight(4.2 + 0.2 * -(-len(handles) // 3))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
