"""What one invocation of bench_quality measures with: a frozen Settings from its command line,
the error that stops it, and its log line."""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from imagegen.common import locations

ROOT = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    """What stops the benchmark: said in one line, exit status 1 (nothing measured is lost)."""


@dataclass(frozen=True)
class Settings:
    """The protocol and the budgets of one invocation: what every run and measurement reads."""

    work: Path = ROOT / "checkpoints" / "bench-quality"  # run folders, caches
    docs: Path = ROOT / "docs"  # the report, its grids and plots
    results: Path = ROOT / "docs" / "quality" / "results.jsonl"  # the record
    data_root: Path = Path(".")
    images: int = 384_000  # training images per run
    mnist_images: int | None = None  # MNIST's, where it differs
    ae_images: int = 192_000  # the VAE's and the VAE-GAN's
    points: int = 2  # curve points per run
    curve_n: int = 2000  # generated images of a curve point
    final_n: int = 5000  # of the final figure
    ref_n: int = 10_000  # training images of the reference
    recon_n: int = 2000  # test images reconstructed
    precision: str = "bf16"  # extractor precision of the final figures
    curve_precision: str = "bf16"  # and of the curve points
    train_precision: str = "auto"
    speed_steps: int = 300  # steps of a speed run

    def images_for(self, dataset: str) -> int:
        """Training images per run on `dataset` (a DCGAN's; the VAE and VAE-GAN: ae_images)."""
        return self.mnist_images if dataset == "mnist" and self.mnist_images else self.images


@dataclass(frozen=True)
class Actions:
    """What to do: which datasets and recipes, and whether to train, time or only report."""

    datasets: tuple[str, ...]
    recipes: str | None  # as given (split by recipes.split_recipes); None: all
    report_only: bool
    speed_only: bool
    retrain_carried: bool
    json: bool


def parse(argv: list[str] | None, description: str) -> tuple[Settings, Actions]:
    """The command line as Settings and Actions."""
    p = argparse.ArgumentParser(description=description)
    d = Settings()
    p.add_argument("--work", type=Path, default=d.work)
    p.add_argument("--docs", type=Path, default=d.docs)
    p.add_argument("--results", type=Path, help="the record [DOCS/quality/results.jsonl]")
    p.add_argument("--data-root", type=Path, default=locations.data_root())
    p.add_argument("--datasets", default="cifar10-jpeg,mnist")
    p.add_argument(
        "--recipes",
        default=None,
        help="MODEL-PRESET, comma-separated [all; with --speed-only, all the record has]",
    )
    p.add_argument("--images", type=int, default=d.images, help="training images per run")
    p.add_argument("--mnist-images", type=int, default=None, help="[default: --images]")
    p.add_argument(
        "--ae-images", type=int, default=d.ae_images, help="training images of the VAE and VAE-GAN"
    )
    p.add_argument("--points", type=int, default=d.points, help="curve points per run")
    p.add_argument("--curve-n", type=int, default=d.curve_n)
    p.add_argument("--final-n", type=int, default=d.final_n)
    p.add_argument("--ref-n", type=int, default=d.ref_n)
    p.add_argument("--recon-n", type=int, default=d.recon_n, help="test images reconstructed")
    p.add_argument("--precision", default=d.precision, help="extractor precision, final figures")
    p.add_argument(
        "--curve-precision",
        default=d.curve_precision,
        help="extractor precision of the curve points",
    )
    p.add_argument("--train-precision", default=d.train_precision, help="auto, bf16 or fp32")
    p.add_argument("--report-only", action="store_true", help="write the report and stop")
    p.add_argument(
        "--speed-only",
        action="store_true",
        help="measure the recorded runs' speeds alone again, side by side in this one run "
        "(idle machine), write the report, stop",
    )
    p.add_argument("--speed-steps", type=int, default=d.speed_steps, help="steps of a speed run")
    p.add_argument(
        "--retrain-carried",
        action="store_true",
        help="the recipes' runs carried over from an earlier report (figures, no curve) move "
        "aside as NAME.carried and train anew",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    a = p.parse_args(argv)
    settings = Settings(
        work=a.work, docs=a.docs, results=a.results or a.docs / "quality" / "results.jsonl",
        data_root=a.data_root, images=a.images, mnist_images=a.mnist_images,
        ae_images=a.ae_images, points=a.points, curve_n=a.curve_n, final_n=a.final_n,
        ref_n=a.ref_n, recon_n=a.recon_n, precision=a.precision,
        curve_precision=a.curve_precision, train_precision=a.train_precision,
        speed_steps=a.speed_steps,
    )  # fmt: skip
    actions = Actions(
        tuple(a.datasets.split(",")), a.recipes, a.report_only, a.speed_only,
        a.retrain_carried, a.json,
    )  # fmt: skip
    return settings, actions


def log(message: str) -> None:
    print(f"[bench_quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
