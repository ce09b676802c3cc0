"""Training throughput: imagegen's loop beside a reference loop written as pytorch/examples does.

Both train the same DCGAN on the same images (MNIST from the data root, else the synthetic
set), written once as PNG files. The reference decodes and transforms each image with PIL in
DataLoader workers (pytorch/examples' default of 2), reads losses with .item() every step;
imagegen decodes once into a uint8 tensor (timed separately) and draws batches from memory.
Prints images/s, the ratio, and the share of step time spent waiting for data.

    python benchmarks/bench_train.py [--steps 30] [--batch-size 64] [--resolutions 32 64]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from imagegen.common.progress import ProgressEvent
from imagegen.data import datasets as data
from imagegen.data import decode
from imagegen.models.blocks import Discriminator
from imagegen.models.dcgan import DCGANConfig, Generator
from imagegen.training.config import TrainConfig
from imagegen.training.loop import run_training
from imagegen.training.plan import TrainPlan


def write_images(folder: Path, count: int) -> int:
    """Write `count` source images as PNG files; returns their channel count."""
    root = os.environ.get("IMAGEGEN_DATA")
    raw = Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte" if root else None
    if raw is not None and raw.is_file():
        arrays, channels = decode.read_idx_images(raw)[:count], 1
    else:
        synth = data.synthetic_images(32, 3)[:count]
        arrays, channels = synth.permute(0, 2, 3, 1).numpy(), 3
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(np.ascontiguousarray(a)).save(folder / f"{i:06d}.png")
    return channels


class PngFolder(Dataset):
    """pytorch/examples-style dataset: open, convert, resize, crop, to tensor, normalise."""

    def __init__(self, folder: Path, resolution: int, channels: int) -> None:
        import torchvision.transforms as T

        self.files = sorted(folder.glob("*.png"))
        self.mode = "L" if channels == 1 else "RGB"
        norm = (0.5,) * channels
        self.transform = T.Compose(
            [T.Resize(resolution), T.CenterCrop(resolution), T.ToTensor(), T.Normalize(norm, norm)]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert(self.mode))


def reference_loop(folder: Path, cfg: DCGANConfig, batch: int, steps: int, warmup: int) -> dict:
    """The training loop of pytorch/examples' dcgan/main.py, on the same architecture."""
    torch.manual_seed(0)
    net_g, net_d = Generator(cfg), Discriminator(cfg.channels, cfg.d_width, cfg.resolution)
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(
        PngFolder(folder, cfg.resolution, cfg.channels),
        batch_size=batch,
        shuffle=True,
        num_workers=2,
        drop_last=True,
    )
    wait = total = 0.0
    done = 0
    it = iter(loader)
    start = None
    while done < steps:
        t0 = time.perf_counter()
        try:
            real = next(it)
        except StopIteration:
            it = iter(loader)
            real = next(it)
        t1 = time.perf_counter()
        # (1) Update D: maximise log(D(x)) + log(1 - D(G(z)))
        net_d.zero_grad()
        label = torch.full((batch,), 1.0)
        err_real = criterion(net_d(real), label)
        err_real.backward()
        noise = torch.randn(batch, cfg.latent_dim)
        fake = net_g(noise)
        label.fill_(0.0)
        err_fake = criterion(net_d(fake.detach()), label)
        err_fake.backward()
        opt_d.step()
        # (2) Update G: maximise log(D(G(z)))
        net_g.zero_grad()
        label.fill_(1.0)
        err_g = criterion(net_d(fake), label)
        err_g.backward()
        opt_g.step()
        _ = (err_real + err_fake).item(), err_g.item()  # the example prints these every step
        t2 = time.perf_counter()
        done += 1
        if done == warmup:
            start = t2
        elif done > warmup:
            wait += t1 - t0
            total += t2 - t0
    assert start is not None
    elapsed = time.perf_counter() - start
    return {"images_per_s": (steps - warmup) * batch / elapsed, "data_wait": wait / total}


def imagegen_loop(folder: Path, cfg: DCGANConfig, batch: int, steps: int, warmup: int) -> dict:
    """imagegen's own training loop (run_training), timed from step `warmup` on."""
    t0 = time.perf_counter()
    images = data.load_images(str(folder), resolution=cfg.resolution)
    decode_s = time.perf_counter() - t0
    marks: dict[int, float] = {}

    def on_event(event: ProgressEvent) -> None:
        if event.kind in ("step", "log"):
            marks[event.done] = time.perf_counter()

    with tempfile.TemporaryDirectory() as runs:
        plan = TrainPlan(
            model="dcgan",
            model_config={"resolution": cfg.resolution, "channels": cfg.channels},
            train=TrainConfig(
                dataset=str(folder),
                batch_size=batch,
                steps=steps,
                sample_every=10**9,
                checkpoint_every=10**9,
                log_every=10**9,
                precision="fp32",  # as the reference loop: auto would pick bf16 on some CPUs
            ),
            dataset=str(folder),
            run_dir=Path(runs) / "run",
            device="cpu",
            data_root=None,
            total_steps=steps,
        )
        result = run_training(plan, on_event)
    assert images.images.shape[0] > 0
    elapsed = marks[steps] - marks[warmup]
    return {
        "images_per_s": (steps - warmup) * batch / elapsed,
        "data_wait": result.data_wait,
        "decode_once_s": decode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=6400)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMAGEGEN_CACHE"] = str(Path(tmp) / "cache")
        folder = Path(tmp) / "images"
        channels = write_images(folder, args.images)
        for res in args.resolutions:
            cfg = DCGANConfig(resolution=res, channels=channels)
            ours = imagegen_loop(folder, cfg, args.batch_size, args.steps, args.warmup)
            ref = reference_loop(folder, cfg, args.batch_size, args.steps, args.warmup)
            rows.append(
                {
                    "resolution": res,
                    "imagegen_images_per_s": round(ours["images_per_s"], 1),
                    "reference_images_per_s": round(ref["images_per_s"], 1),
                    "speedup": round(ours["images_per_s"] / ref["images_per_s"], 3),
                    "imagegen_data_wait": round(ours["data_wait"], 4),
                    "reference_data_wait": round(ref["data_wait"], 4),
                    "imagegen_decode_once_s": round(ours["decode_once_s"], 2),
                }
            )
    meta = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "timed_steps": args.steps - args.warmup,
        "images": args.images,
        "source": "MNIST" if channels == 1 else "synthetic",
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
        return
    print(
        f"DCGAN training on {meta['device']} ({meta['threads']} threads), batch "
        f"{meta['batch_size']}, {meta['timed_steps']} timed steps, {meta['source']} images"
    )
    print(
        f"{'res':>4} {'imagegen img/s':>15} {'reference img/s':>16} {'speedup':>8} "
        f"{'data wait (ours / ref)':>23} {'decode once':>12}"
    )
    for r in rows:
        print(
            f"{r['resolution']:>4} {r['imagegen_images_per_s']:>15.1f} "
            f"{r['reference_images_per_s']:>16.1f} {r['speedup']:>7.2f}x "
            f"{r['imagegen_data_wait']:>10.1%} / {r['reference_data_wait']:<10.1%} "
            f"{r['imagegen_decode_once_s']:>10.2f} s"
        )


if __name__ == "__main__":
    main()
