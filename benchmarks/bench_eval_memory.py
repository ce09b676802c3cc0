"""Peak memory and time of eval's metrics at 10k and 50k images, on random features.

Each size runs in a fresh process (its peak resident memory is the process's own): FID
statistics, KID, and precision/recall with density/coverage as `imagegen eval --metrics
fid,kid,pr,dc` computes them (distances in blocks). Features are random 2048-d vectors shaped
like pool3 features (non-negative, mean about 0.4), real and generated drawn apart a little.

    python benchmarks/bench_eval_memory.py --sizes 10000 50000
"""

import argparse
import json
import subprocess
import sys
import time


def peak_mb() -> float:
    """This process's own peak resident memory (ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def child(n: int) -> dict:
    import numpy as np

    from imagegen import metrics

    rng = np.random.default_rng(0)
    real = rng.gamma(2.0, 0.2, size=(n, 2048)).astype(np.float32)
    fake = (rng.gamma(2.0, 0.2, size=(n, 2048)) * 1.05).astype(np.float32)
    base = peak_mb()
    timings = {}
    t = time.perf_counter()
    metrics.frechet_distance(*metrics.gaussian_stats(fake), *metrics.gaussian_stats(real))
    timings["fid_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics.kernel_inception_distance(real, fake, 100, min(1000, n // 2))
    timings["kid_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics.manifold_metrics(real, fake, pr_k=3, dc_k=5)
    timings["pr_dc_s"] = time.perf_counter() - t
    peak = peak_mb()
    features_mb = 2 * n * 2048 * 4 / 2**20
    full_matrix_gb = n * n * 8 / 2**30
    return {
        "n": n,
        "peak_mb": round(peak, 1),
        "features_mb": round(features_mb, 1),
        "after_features_mb": round(base, 1),
        "one_full_nxn_float64_gb": round(full_matrix_gb, 1),
        **{k: round(v, 1) for k, v in timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(
        "| images | peak memory | features (real + fake, float32) | one N x N float64 matrix "
        "| FID | KID | P/R + D/C |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['peak_mb'] / 1024:.2f} GB | {r['features_mb'] / 1024:.2f} GB "
            f"| {r['one_full_nxn_float64_gb']:.1f} GB | {r['fid_s']} s | {r['kid_s']} s "
            f"| {r['pr_dc_s']} s |"
        )


if __name__ == "__main__":
    main()
