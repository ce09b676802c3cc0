"""FID feature extraction: imagegen's extractor beside a naive reference in the same script.

The reference resizes each image with PIL (bilinear, on the float image, one channel at a time)
and feeds contiguous (NCHW) batches to the TorchScript network as loaded; imagegen resizes whole
batches as float tensors and feeds channels_last batches to its folded copy of the network.
Both compute FID(set A, set B) on the same images; imagegen runs in fp32 (its default, the
reference protocol) and in bf16 (`imagegen eval --precision bf16`). The script fails (exit 1)
where imagegen's fp32 FID is more than 0.5% from the reference's (TOLERANCE).
Sets: MNIST test vs train images when MNIST is in $IMAGEGEN_DATA, else the synthetic set's two
splits.

    python benchmarks/bench_fid.py [--n 200] [--batch-size 100]
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
from PIL import Image

from imagegen.data import datasets as data
from imagegen.evaluation import inception, metrics


def naive_features(module: torch.nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            tensors = []
            for im in images[i : i + batch]:
                # One PIL float image per channel ("F" mode): the same bilinear resize of the
                # float image as pytorch-fid, image by image, with no uint8 rounding.
                planes = []
                for channel in im.float().div(255).numpy():
                    pil = Image.fromarray(channel, mode="F")
                    planes.append(np.asarray(pil.resize((299, 299), Image.Resampling.BILINEAR)))
                t = torch.from_numpy(np.stack(planes * (3 if len(planes) == 1 else 1)))
                tensors.append(t * 2 - 1)
            out.append(module(torch.stack(tensors)).reshape(len(tensors), -1))
    return torch.cat(out)


TOLERANCE = {"imagegen fp32": 0.005}  # largest relative FID difference from the reference


def disagreements(rows: list[dict]) -> list[str]:
    """The pipelines whose FID is further from the reference's than TOLERANCE allows."""
    return [
        f"{r['pipeline']}: FID {r['fid']} is {r['fid_rel_diff']:.3%} from the reference's "
        f"(at most {TOLERANCE[r['pipeline']]:.1%})"
        for r in rows
        if r["pipeline"] in TOLERANCE and r["fid_rel_diff"] > TOLERANCE[r["pipeline"]]
    ]


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    return metrics.frechet_distance(
        *metrics.gaussian_stats(a.numpy()), *metrics.gaussian_stats(b.numpy())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    root = os.environ.get("IMAGEGEN_DATA")
    if root and os.path.isdir(os.path.join(root, "MNIST", "raw")):
        a = data.load_images("mnist", resolution=32, root=root, split="test").images[: args.n]
        b = data.load_images("mnist", resolution=32, root=root).images[: args.n]
        source = "MNIST test vs train (32 px)"
    else:
        a = data.load_images("synthetic", resolution=32, split="test").images[: args.n]
        b = data.load_images("synthetic", resolution=32).images[: args.n]
        source = "synthetic test vs train (32 px)"
    ours = inception.load_extractor()
    with warnings.catch_warnings():  # newer torch deprecates torch.jit; it still loads
        warnings.simplefilter("ignore", FutureWarning)
        original = torch.jit.load(str(ours.path), map_location="cpu").eval()
    ours.features(a[:4])  # warm-up
    ours.features(a[:4], precision="bf16")
    timings, fids = {}, {}
    for label, precision in (("imagegen fp32", "fp32"), ("imagegen bf16", "bf16")):
        t = time.perf_counter()
        fa, fb = (
            ours.features(a, args.batch_size, precision),
            ours.features(b, args.batch_size, precision),
        )
        timings[label], fids[label] = time.perf_counter() - t, fid(fa, fb)
    t = time.perf_counter()
    na, nb = (
        naive_features(original, a, args.batch_size),
        naive_features(original, b, args.batch_size),
    )
    timings["reference"], fids["reference"] = time.perf_counter() - t, fid(na, nb)
    images = a.shape[0] + b.shape[0]
    rows = [
        {
            "pipeline": label,
            "images_per_s": round(images / timings[label], 2),
            "speedup": round(timings["reference"] / timings[label], 3),
            "fid": round(fids[label], 4),
            "fid_rel_diff": round(abs(fids[label] - fids["reference"]) / fids["reference"], 5),
        }
        for label in ("imagegen fp32", "imagegen bf16", "reference")
    ]
    meta = {
        "source": source,
        "images": images,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
    }
    failed = disagreements(rows)
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "failed": failed}))
    else:
        _print_table(meta, rows, source, images, args.batch_size)
    for line in failed:
        print(f"bench_fid: {line}", file=sys.stderr)
    if failed:
        sys.exit(1)


def _print_table(meta: dict, rows: list[dict], source: str, images: int, batch: int) -> None:
    print(
        f"FID feature extraction on the CPU ({meta['threads']} threads), {source}, "
        f"{images} images, batch {batch}"
    )
    print(f"{'':>14} {'images/s':>9} {'speedup':>8} {'FID':>9} {'vs reference':>13}")
    for r in rows:
        print(
            f"{r['pipeline']:>14} {r['images_per_s']:>9.2f} {r['speedup']:>7.2f}x "
            f"{r['fid']:>9.3f} {r['fid_rel_diff']:>12.3%}"
        )


if __name__ == "__main__":
    main()
