"""FID feature extraction: imagegen's extractor beside a naive reference in the same script.

The reference resizes each image with PIL (bilinear, on the float image, one channel at a time)
and feeds contiguous (NCHW) batches to the TorchScript network as loaded; imagegen resizes whole
batches as float tensors and feeds channels_last batches to its folded copy of the network.
Both compute FID(set A, set B) on the same images, which must agree within 0.5%. Sets: MNIST
test vs train images when MNIST is in $IMAGEGEN_DATA, else the synthetic set's two splits.

    python benchmarks/bench_fid.py [--n 200] [--batch-size 100]
"""

import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image

from imagegen import data, inception, metrics


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
    original = torch.jit.load(str(ours.path), map_location="cpu").eval()
    ours.features(a[:4])  # warm-up
    t = time.perf_counter()
    fa, fb = ours.features(a, args.batch_size), ours.features(b, args.batch_size)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    na, nb = (
        naive_features(original, a, args.batch_size),
        naive_features(original, b, args.batch_size),
    )
    naive_s = time.perf_counter() - t
    images = a.shape[0] + b.shape[0]
    row = {
        "source": source,
        "images": images,
        "threads": torch.get_num_threads(),
        "imagegen_images_per_s": round(images / ours_s, 2),
        "reference_images_per_s": round(images / naive_s, 2),
        "speedup": round(naive_s / ours_s, 3),
        "imagegen_fid": round(fid(fa, fb), 4),
        "reference_fid": round(fid(na, nb), 4),
    }
    row["fid_rel_diff"] = round(
        abs(row["imagegen_fid"] - row["reference_fid"]) / row["reference_fid"], 5
    )
    if args.json:
        print(json.dumps(row))
        return
    print(
        f"FID feature extraction on the CPU ({row['threads']} threads), {source}, {images} images"
    )
    print(f"{'':>10} {'images/s':>9} {'FID':>9}")
    print(f"{'imagegen':>10} {row['imagegen_images_per_s']:>9.2f} {row['imagegen_fid']:>9.3f}")
    print(f"{'reference':>10} {row['reference_images_per_s']:>9.2f} {row['reference_fid']:>9.3f}")
    print(f"speedup {row['speedup']:.2f}x; FID differs by {row['fid_rel_diff']:.3%}")


if __name__ == "__main__":
    main()
