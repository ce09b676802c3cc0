"""Training images/s of the DCGAN for each preset, precision and compile setting, with FLOP/s.

A preset's model options apply (its training options do not: every row trains at --batch-size
with Adam's defaults), so rows at one precision and compile setting compare the cost of a
recipe's step: `x first` is the images/s relative to the first preset's. FLOPs per step are
counted with torch.utils.flop_counter on one training step. The fraction of the device's peak is
printed when the peak is known: --peak-tflops, or a table of CUDA devices.

    python benchmarks/bench_precision.py [--resolution 32] [--batch-size 64] [--steps 30]
        [--presets classic adaptive-r1 adaptive-r1:r1_every=16] [--precisions bf16] [--no-compile]

A preset may carry model options after a colon (PRESET:key=value,key=value): a candidate
measured beside the preset it changes; `num_classes=10` measures the class-conditional step
(labels drawn with the batch).

`--previous REV` measures the same rows with the code of git revision REV as well, alternately
with this code for `--rounds` rounds on the same machine, and reports each row's median
images/s under both and their ratio: whether a change made a step slower.

    python benchmarks/bench_precision.py --presets classic adaptive-r1 --precisions bf16 \
        --no-compile --previous ef55443 --rounds 3
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from imagegen.models.dcgan import DCGAN, DCGANConfig
from imagegen.models.registry import MODELS
from imagegen.training.config import TrainConfig

# Dense peak TFLOP/s (bf16 tensor cores, fp32 without them) from the vendors' data sheets.
PEAKS = {"H200": {"bf16": 989.0, "fp32": 67.0}, "H100": {"bf16": 989.0, "fp32": 67.0}}


def peak_for(device: torch.device, precision: str, given: float | None) -> float | None:
    if given:
        return given
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAKS.items():
            if key in name:
                return peaks[precision]
    return None


def measure(device: torch.device, preset: str, precision: str, compiled: bool, args) -> dict:
    torch.manual_seed(0)
    name, _, changes = preset.partition(":")
    options = dict(MODELS["dcgan"].preset(name)[1].model)
    for change in filter(None, changes.split(",")):
        key, _, value = change.partition("=")
        options[key] = type(getattr(DCGANConfig(), key))(value)
    cfg = DCGANConfig(**{**options, "resolution": args.resolution, "channels": 3})
    model = DCGAN(cfg).to(device, memory_format=torch.channels_last).train()
    opts = model.configure_optimizers(TrainConfig())
    if compiled:  # as `train --compile` does: R1's double backward keeps D eager
        model.compile_networks()
    noise = torch.Generator(device).manual_seed(0)
    data = torch.rand(args.batch_size, 3, args.resolution, args.resolution, device=device)
    data = data.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    classes = getattr(cfg, "num_classes", 0)
    labels = {"labels": torch.arange(args.batch_size, device=device) % classes} if classes else {}

    def step() -> dict:
        with autocast:
            return model.training_step(data, opts, noise, **labels)

    t = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t
    with FlopCounterMode(display=False) as counter:  # lazy R1: the mean of its cycle
        for _ in range(cfg.r1_every):
            step()
    flops = counter.get_total_flops() / cfg.r1_every
    t = time.perf_counter()
    for _ in range(args.steps):
        losses = step()
    float(losses["g_loss"])  # one host sync at the end
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t
    steps_per_s = args.steps / elapsed
    achieved = flops * steps_per_s / 1e12
    peak = peak_for(device, precision, args.peak_tflops)
    return {
        "preset": preset,
        "precision": precision,
        "compile": compiled,
        "images_per_s": round(args.batch_size * steps_per_s, 1),
        "gflop_per_step": round(flops / 1e9, 3),
        "achieved_tflops": round(achieved, 4),
        "peak_fraction": round(achieved / peak, 4) if peak else None,
        "warmup_s": round(warm_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None)
    spec = MODELS["dcgan"]
    parser.add_argument("--presets", nargs="+", default=["classic", spec.default_preset])
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled settings")
    parser.add_argument("--previous", default=None, help="a git revision measured side by side")
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --previous")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.previous:
        return side_by_side(args)
    for preset in args.presets:
        if preset.partition(":")[0] not in spec.presets:
            parser.error(f"unknown preset {preset} (valid: {', '.join(spec.presets)})")
    device = torch.device(args.device)
    rows = []
    for compiled in (False,) if args.no_compile else (False, True):
        for precision in args.precisions:
            first = None
            for preset in args.presets:
                row = measure(device, preset, precision, compiled, args)
                first = first or row["images_per_s"]
                rows.append({**row, "vs_first": round(row["images_per_s"] / first, 3)})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.json:
        print(json.dumps({"device": name, "rows": rows}))
        return
    print(
        f"DCGAN {args.resolution} px training step, batch {args.batch_size}, on {name} "
        f"({torch.get_num_threads()} threads), {args.steps} timed steps"
    )
    print(
        f"{'preset':>24} {'precision':>9} {'compile':>7} {'img/s':>9} {'x first':>7} "
        f"{'GFLOP/step':>10} {'TFLOP/s':>8} {'of peak':>8} {'warm-up':>8}"
    )
    for r in rows:
        frac = f"{r['peak_fraction']:.1%}" if r["peak_fraction"] is not None else "-"
        print(
            f"{r['preset']:>24} {r['precision']:>9} {r['compile']!s:>7} {r['images_per_s']:>9.1f} "
            f"{r['vs_first']:>7.3f} "
            f"{r['gflop_per_step']:>10.3f} {r['achieved_tflops']:>8.4f} {frac:>8} "
            f"{r['warmup_s']:>7.1f}s"
        )


ROOT = Path(__file__).resolve().parents[1]


def side_by_side(args: argparse.Namespace) -> None:
    """This code and revision `args.previous` (its own bench_precision.py, importing its own
    imagegen), alternately, `args.rounds` times each; the median images/s of every row."""
    same = ["--resolution", str(args.resolution), "--batch-size", str(args.batch_size)]
    same += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    same += ["--presets", *args.presets, "--precisions", *args.precisions, "--json"]
    same += ["--no-compile"] if args.no_compile else []
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.previous], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        runs: dict[str, list[list[dict]]] = {"this": [], "previous": []}
        for _ in range(args.rounds):
            for which, root in (("this", ROOT), ("previous", Path(tmp))):
                env = os.environ | {"PYTHONPATH": str(root)}
                script = root / "benchmarks" / "bench_precision.py"
                out = subprocess.run(
                    [sys.executable, str(script), *same], env=env, capture_output=True, text=True
                )
                if out.returncode != 0:  # e.g. a preset or option the revision lacks
                    raise SystemExit(f"the {which} code failed: {out.stderr.strip()[-800:]}")
                runs[which].append(json.loads(out.stdout.splitlines()[-1])["rows"])
    rows = []
    for i, row in enumerate(runs["this"][0]):
        now = statistics.median(r[i]["images_per_s"] for r in runs["this"])
        before = statistics.median(r[i]["images_per_s"] for r in runs["previous"])
        key = {k: row[k] for k in ("preset", "precision", "compile")}
        rows.append(key | {"this": now, "previous": before, "ratio": round(now / before, 3)})
    if args.json:
        print(json.dumps({"previous": args.previous, "rounds": args.rounds, "rows": rows}))
        return
    print(
        f"DCGAN {args.resolution} px step, batch {args.batch_size}: this code against "
        f"{args.previous}, median of {args.rounds} alternating rounds ({torch.get_num_threads()} "
        "threads)"
    )
    for r in rows:
        print(
            f"{r['preset']:>24} {r['precision']:>5} compile={r['compile']!s:<5} "
            f"{r['this']:>8.1f} vs {r['previous']:>8.1f} img/s  x{r['ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
