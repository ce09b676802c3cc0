"""Peak memory and time of eval's metrics at 10k and 50k images, on random features.

Each size runs in a fresh process (its peak resident memory is the process's own): FID
statistics, KID, and precision/recall with density/coverage as `imagegen eval --metrics
fid,kid,pr,dc` computes them (float32 matrix products, doubtful decisions in float64). At the
`--previous-at` sizes the previous code (whole float64 distances, block by block) runs too,
side by side in the same process, and the four values are compared. Features are random
2048-d vectors shaped like pool3 features (non-negative, mean about 0.4), real and generated
drawn apart a little. With `--revision REV` the k-NN metrics also run with git revision REV's
imagegen, each size in its own fresh process after this code's: time and values side by side.

    python benchmarks/bench_eval_memory.py --sizes 10000 50000 --previous-at 10000
    python benchmarks/bench_eval_memory.py --sizes 50000 --previous-at --revision a008f94
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_mb() -> float:
    """This process's own peak resident memory (ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def previous_manifold_metrics(real, fake, pr_k: int = 3, dc_k: int = 5) -> dict[str, float]:
    """The code this replaced (imagegen before neighbours.py): float64 cdist, blocks of rows."""
    import torch

    r, f = torch.as_tensor(real).double(), torch.as_tensor(fake).double()
    rows_of = lambda n: max(1, (1 << 24) // n)  # noqa: E731

    def blocks(a, b):
        for i in range(0, a.shape[0], rows_of(b.shape[0])):
            yield i, torch.cdist(a[i : i + rows_of(b.shape[0])], b)

    def radii(x, ks):
        out = {k: [] for k in ks}
        for _, d in blocks(x, x):
            nearest = d.topk(max(ks) + 1, dim=1, largest=False).values
            for k in ks:
                out[k].append(nearest[:, k])
        return {k: torch.cat(v) for k, v in out.items()}

    rr, fr = radii(r, (pr_k, dc_k)), radii(f, (pr_k,))[pr_k]
    precise = torch.zeros(f.shape[0], dtype=torch.bool)
    recalled, covered, inside_count = [], [], 0
    for i, d in blocks(r, f):
        rows = slice(i, i + d.shape[0])
        precise |= (d <= rr[pr_k][rows, None]).any(dim=0)
        recalled.append((d <= fr[None, :]).any(dim=1))
        inside = d <= rr[dc_k][rows, None]
        inside_count += int(inside.sum())
        covered.append(inside.any(dim=1))
    return {
        "precision": float(precise.double().mean()),
        "recall": float(torch.cat(recalled).double().mean()),
        "density": inside_count / (dc_k * f.shape[0]),
        "coverage": float(torch.cat(covered).double().mean()),
    }


def features(n: int):
    """Random pool3-like features, real and generated (N, 2048) float32 each."""
    import numpy as np

    rng = np.random.default_rng(0)
    real = rng.gamma(2.0, 0.2, size=(n, 2048)).astype(np.float32)
    fake = (rng.gamma(2.0, 0.2, size=(n, 2048)) * 1.05).astype(np.float32)
    return real, fake


def child_knn(n: int) -> dict:
    """The k-NN metrics alone, with whichever imagegen this process imports."""
    from imagegen.evaluation import metrics

    real, fake = features(n)
    t = time.perf_counter()
    values = metrics.manifold_metrics(real, fake, pr_k=3, dc_k=5)
    return {"pr_dc_s": round(time.perf_counter() - t, 1), "values": values, "peak_mb": peak_mb()}


def child(n: int, previous: bool) -> dict:
    from imagegen.evaluation import metrics

    real, fake = features(n)
    base = peak_mb()
    timings = {}
    t = time.perf_counter()
    metrics.frechet_distance(*metrics.gaussian_stats(fake), *metrics.gaussian_stats(real))
    timings["fid_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics.kernel_inception_distance(real, fake, 100, min(1000, n // 2))
    timings["kid_s"] = time.perf_counter() - t
    t = time.perf_counter()
    values = metrics.manifold_metrics(real, fake, pr_k=3, dc_k=5)
    timings["pr_dc_s"] = time.perf_counter() - t
    peak = peak_mb()
    compared = {}
    if previous:
        t = time.perf_counter()
        before = previous_manifold_metrics(real, fake)
        timings["pr_dc_previous_s"] = time.perf_counter() - t
        compared = {
            "previous": before,
            "largest_difference": max(abs(values[k] - before[k]) for k in values),
        }
    features_mb = 2 * n * 2048 * 4 / 2**20
    full_matrix_gb = n * n * 8 / 2**30
    return {
        "n": n,
        "peak_mb": round(peak, 1),
        "features_mb": round(features_mb, 1),
        "after_features_mb": round(base, 1),
        "one_full_nxn_float64_gb": round(full_matrix_gb, 1),
        **{k: round(v, 1) for k, v in timings.items()},
        "values": values,
        **compared,
    }


def checkout(revision: str, into: Path) -> None:
    """Revision REV's files (its imagegen) into a folder."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def run_child(flags: list[str], root: Path) -> dict:
    """This script in a fresh process, importing the imagegen found under `root`."""
    env = os.environ | {"PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, __file__, *flags], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument(
        "--previous-at", type=int, nargs="*", default=[10_000],
        help="sizes at which the previous float64 code runs too (20 minutes at 50,000)",
    )  # fmt: skip
    parser.add_argument("--revision", help="a git revision whose k-NN metrics run side by side")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-previous", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-knn", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.child_previous)))
        return
    if args.child_knn:
        print(json.dumps(child_knn(args.child_knn)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.revision:
            checkout(args.revision, Path(tmp))
        rows = []
        for n in args.sizes:
            flags = ["--child", str(n)] + (["--child-previous"] if n in args.previous_at else [])
            rows.append(run_child(flags, ROOT))
            if args.revision:
                rows[-1]["revision"] = run_child(["--child-knn", str(n)], Path(tmp))
    if args.json:
        print(json.dumps({"revision": args.revision, "rows": rows}))
        return
    if args.revision:
        print(f"k-NN metrics, this code vs {args.revision} (each in a fresh process):")
        for r in rows:
            other = r["revision"]
            same = "the same values" if other["values"] == r["values"] else "VALUES DIFFER"
            print(
                f"  {r['n']:,}: {r['pr_dc_s']} s vs {other['pr_dc_s']} s "
                f"(x{other['pr_dc_s'] / r['pr_dc_s']:.2f} faster), peak "
                f"{r['peak_mb'] / 1024:.2f} vs {other['peak_mb'] / 1024:.2f} GB, {same}"
            )
    print(
        "| images | peak memory | features (real + fake, float32) | one N x N float64 matrix "
        "| FID | KID | P/R + D/C | P/R + D/C, previous code | largest difference |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        before = f"{r['pr_dc_previous_s']} s" if "previous" in r else "–"
        diff = f"{r['largest_difference']:.1e}" if "previous" in r else "–"
        print(
            f"| {r['n']:,} | {r['peak_mb'] / 1024:.2f} GB | {r['features_mb'] / 1024:.2f} GB "
            f"| {r['one_full_nxn_float64_gb']:.1f} GB | {r['fid_s']} s | {r['kid_s']} s "
            f"| {r['pr_dc_s']} s | {before} | {diff} |"
        )


if __name__ == "__main__":
    main()
