"""Training images/s with one process and with K processes (torchrun, DDP), side by side.

Runs `imagegen train dcgan` on the built-in synthetic set: one plain process, then torchrun
jobs of K processes with the same batch per process (global batch K x B) and with the same
global batch (B / K per process). The machine's cores are split evenly between the processes
(OMP_NUM_THREADS). Each figure is the run's own training-loop images/s over all processes
(start-up excluded), the median of --repeats runs; the ratio is against one process.

    python benchmarks/bench_ddp.py [--steps 300] [--batch-size 64] [--processes 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(args, processes: int, batch: int, run_dir: Path) -> dict:
    """One training run; returns the CLI's JSON result."""
    cli = ["train", "dcgan", "--dataset", "synthetic", "--resolution", str(args.resolution)]
    cli += ["--batch-size", str(batch), "--steps", str(args.steps), "--device", "cpu"]
    cli += ["--log-every", "50", "--sample-every", "1000000", "--checkpoint-every", "1000000"]
    cli += ["--run-dir", str(run_dir), "--force", "--json", "-q"]
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), IMAGEGEN_OFFLINE="1")
    if processes == 1:
        cmd = [sys.executable, "-m", "imagegen", *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc-per-node", str(processes), "-m", "imagegen", *cli]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    k, b = args.processes, args.batch_size
    if b % k:
        raise SystemExit(f"--batch-size {b} must be a multiple of --processes {k}")
    settings = [
        ("1 process", 1, b),
        (f"{k} processes, same batch per process", k, b),
        (f"{k} processes, same global batch", k, b // k),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMAGEGEN_RUNS"] = tmp
        os.environ["IMAGEGEN_CACHE"] = str(Path(tmp) / "cache")
        runs: dict[str, list[float]] = {name: [] for name, _, _ in settings}
        threads: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
            for name, processes, batch in settings:
                result = train(args, processes, batch, Path(tmp) / "run")
                runs[name].append(result["images_per_s"])
                threads[name] = result["threads"]
    base = statistics.median(runs[settings[0][0]])
    for name, processes, batch in settings:
        ips = statistics.median(runs[name])
        rows.append(
            {
                "setting": name,
                "processes": processes,
                "threads_per_process": threads[name],
                "batch_per_process": batch,
                "global_batch": batch * processes,
                "images_per_s": round(ips, 1),
                "vs_1_process": round(ips / base, 3),
                "runs": [round(r, 1) for r in runs[name]],
            }
        )
    result = {
        "benchmark": "ddp",
        "cpus": os.cpu_count(),
        "steps": args.steps,
        "resolution": args.resolution,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"DCGAN {args.resolution} px, {args.steps} steps, CPU, {os.cpu_count()} cores")
    print(f"{'setting':<40} {'threads':>7} {'batch':>9} {'img/s':>9} {'ratio':>6}")
    for r in rows:
        batch = f"{r['batch_per_process']}x{r['processes']}"
        print(
            f"{r['setting']:<40} {r['threads_per_process']:>7} {batch:>9} "
            f"{r['images_per_s']:>9.1f} {r['vs_1_process']:>6.2f}"
        )


if __name__ == "__main__":
    main()
