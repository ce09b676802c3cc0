"""Image quality per training image: each model and recipe trained side by side, FID over training.

For each dataset (CIFAR-10-JPEG and MNIST, 32 px) and each recipe, this trains a run for the
same number of training images, measures FID and KID at several points of the run (the curve)
and once more at the end with more images (the final figure), and writes docs/quality.md with
one table, a plot of the curves and a sample grid per run. Everything is resumable: runs resume
from their checkpoints and finished measurements are kept in docs/quality/results.jsonl, so the
script can be stopped and started again at any moment. That record is committed with the
report, which can be written again from it (--report-only) without the run folders. A larger
--images goes on from a run's last checkpoint, except for a run whose lr decayed to 0 at its
end: that one is set aside (its folder and rows renamed NAME.IMAGES-images) and trained anew.
So is a run whose recipe's preset was retuned after it was measured (NAME.config-HASH): the
record's configs are compared with what the preset sets now. A run folder whose config is not
the recorded run's (another run moved into its place) stops the script before it draws a grid
or extends a run under figures that are not its own. --retrain-carried trains anew the runs
whose figures were carried over from an earlier report (NAME.carried keeps their rows).
Each run records the machine it trained on, and the report names them; a recipe's speed alone
is measured again when it was measured on another machine.

Equal time: the dataset KEY-30min (cifar10-jpeg-30min, mnist-30min) trains each recipe for 30
minutes at the images/s its KEY run measured alone (the run records that budget), so recipes
of different speeds meet at equal training time, where the others meet at equal images.
A recipe budgeted on a later day, when the machine runs faster or slower, keeps the first
day's minutes: its speed is scaled by the classic recipe's then and now, measured side by side
(`--speed-only --recipes dcgan-classic,NAME`; the run records the scale as its drift).
Candidates (NAME+key=value) may change a model option or a training option of RECIPE_OPTIONS
(`+batch_size=64`): each measured at equal images and at equal time beside its preset.

Protocol (printed, and written into the report): TF-Inception pool3 features (the FID
network of pytorch-fid, clean-fid and stylegan), pytorch-fid's resize, generated images
quantised to uint8 as a PNG would hold them, sampled from the EMA weights where a recipe keeps
an EMA; the reference is a fixed random subset of the training images, whose features are
cached once. The floor line compares the dataset's own test images with the same reference.

    make bench-quality                       # everything (hours on a 2-core CPU)
    python benchmarks/bench_quality.py --datasets mnist --recipes dcgan-classic,dcgan --images 64000
    python benchmarks/bench_quality.py --datasets cifar10-jpeg-30min --points 6 \
        --recipes dcgan-classic,dcgan-adaptive-lazy-r1        # after their cifar10-jpeg runs
"""

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from imagegen.common import files, locations
from imagegen.common.options import build_dataclass, flag_of, to_dict
from imagegen.data import datasets as data
from imagegen.evaluation.evaluate import EvalRequest, evaluate
from imagegen.models.registry import MODELS
from imagegen.sampling.generation import class_grid, generate_uint8, latents
from imagegen.sampling.images import make_grid, write_png
from imagegen.storage import checkpoint, runs
from imagegen.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BATCH = TrainConfig.batch_size  # where a recipe's preset does not set its own


@dataclass(frozen=True)
class Recipe:
    """A model and the `imagegen train` options that make the recipe."""

    model: str
    args: tuple[str, ...]
    label: str
    batch: int  # images per step: the preset's, else TrainConfig's
    changes: tuple[tuple[str, str], ...] = ()  # model options over the preset's (a candidate)
    train_changes: tuple[tuple[str, str], ...] = ()  # and training options (RECIPE_OPTIONS)


def _recipes() -> dict[str, Recipe]:
    """Every preset of every model, named MODEL-PRESET; the default ones say so."""
    out = {}
    for spec in MODELS.values():
        for name in spec.presets:
            default = " (the default)" if name == spec.default_preset else ""
            train = spec.train_defaults | spec.presets[name].train
            out[f"{spec.name}-{name}"] = Recipe(
                spec.name,
                ("--preset", name),
                f"{spec.name} {name}{default}",
                train.get("batch_size", BATCH),
            )
    return out


RECIPES = _recipes()


FLAGS = ("conditional",)  # training flags a recipe may add: NAME+conditional
# The training options a recipe's preset may set (the rest say how long, where and how often).
# seed: a second run of a recipe (NAME+seed=1), to see one run's spread beside a difference.
RECIPE_OPTIONS = (
    "batch_size",
    "lr",
    "lr_d",
    "lr_decay",
    "beta1",
    "beta2",
    "ema_decay",
    "flip",
    "seed",
)


def recipe(name: str) -> Recipe:
    """A recipe by name; `NAME@bf16` trains NAME under bf16 autocast (the precision check);
    `NAME+key=value` changes a model option of NAME's preset, or a training option of
    RECIPE_OPTIONS (`+batch_size=64`): a candidate measured beside it; `NAME+conditional` trains
    it class-conditional on the data's classes."""
    name, _, precision = name.partition("@")
    base, *changed = name.split("+")
    flags = [c for c in changed if c in FLAGS]
    every = tuple(tuple(c.split("=", 1)) for c in changed if c not in FLAGS)
    if (
        base not in RECIPES
        or precision not in ("", "bf16", "fp32")
        or any(len(c) != 2 for c in every)
    ):
        valid = ", ".join(RECIPES)
        raise SystemExit(
            f"unknown recipe {name} (valid: {valid}, each optionally +key=value..., "
            f"+{', +'.join(FLAGS)} and @bf16)"
        )
    changes = tuple(c for c in every if c[0] not in RECIPE_OPTIONS)
    train_changes = tuple(c for c in every if c[0] in RECIPE_OPTIONS)
    r = RECIPES[base]
    args, label, batch = r.args, r.label, r.batch
    for key, value in changes:
        args, label = (*args, "--set", f"{key}={value}"), f"{label}, {key}={value}"
    for key, value in train_changes:  # batch_size goes in as the recipe's batch
        if key == "batch_size":
            batch = int(value)
        else:
            args = (*args, *_train_flag(key, value))
        label = f"{label}, {key}={value}"
    for flag in flags:
        args, label = (*args, f"--{flag}"), f"{label}, {flag}"
    if precision:
        args, label = (*args, "--precision", precision), f"{label}, {precision}"
    return Recipe(r.model, args, label, batch, changes, train_changes)


def _train_flag(key: str, value: str) -> tuple[str, ...]:
    """`imagegen train`'s flag for a training option (as TrainConfig declares it)."""
    field = TrainConfig.__dataclass_fields__[key]
    flag = flag_of(field)
    if field.type is bool:
        return (flag if value.lower() in ("1", "true", "yes") else f"--no-{flag[2:]}",)
    return (flag, value)


def split_recipes(text: str) -> list[str]:
    """`a,b+augment=color,cutout` -> [a, b+augment=color,cutout]: a comma starts a recipe only
    before a recipe's name (an option's value may hold commas)."""
    names: list[str] = []
    for part in text.split(","):
        if names and part.split("+")[0].split("@")[0] not in RECIPES:
            names[-1] += f",{part}"
        else:
            names.append(part)
    return names


def default_recipe(model: str) -> str:
    return f"{model}-{MODELS[model].default_preset}"


@dataclass(frozen=True)
class Dataset:
    """A dataset as `imagegen train --dataset` takes it, its test split for the floor."""

    key: str
    train: str
    test: str
    test_split: str
    label: str
    whole: str = ""  # a subset's whole training set: final FIDs are measured against both
    subset: int = 0  # images of the fixed subset of `whole` that `train` is made of
    minutes: int = 0  # > 0: each recipe trains this long at its speed alone on `base`
    base: str = ""  # the dataset key whose runs' speeds set an equal-time run's images


SMALL = 1000  # images in the small-data row's subset (issue: the user's few hundred images)
EQUAL_TIME = 30  # minutes of training of the equal-time rows
# The recipe whose equal-time budget sets the clock: a recipe budgeted later, on a day the
# machine runs faster or slower, trains CLOCK's budget speed x its speed / CLOCK's, both
# measured side by side (one --speed-only run), so that 30 minutes stay the same 30 minutes.
CLOCK = "dcgan-classic"
# This process: the speeds that one --speed-only run measures carry it (side by side).
SESSION = time.strftime("%Y-%m-%d %H:%M:%S")


def datasets(root: Path, work: Path) -> dict[str, Dataset]:
    """The datasets by key; each full one also as KEY-30min: every recipe trained for
    EQUAL_TIME minutes at its own speed alone on KEY (equal time, where the others are equal
    images)."""
    zips = root / "cifar10-jpeg"
    out = {
        "cifar10-jpeg": Dataset(
            "cifar10-jpeg",
            str(zips / "train.zip"),
            str(zips / "test.zip"),
            "train",  # a zip has no splits: test.zip is read as it is
            "CIFAR-10-JPEG (32 px)",
        ),
        "cifar10-jpeg-1k": Dataset(
            "cifar10-jpeg-1k",
            str(work / f"cifar10-jpeg-{SMALL}"),  # a folder of class subfolders, made once
            str(zips / "test.zip"),
            "train",
            f"CIFAR-10-JPEG, {SMALL:,} images (32 px)",
            whole=str(zips / "train.zip"),
            subset=SMALL,
        ),
        "mnist": Dataset("mnist", "mnist", "mnist", "test", "MNIST (32 px)"),
        "synthetic": Dataset("synthetic", "synthetic", "synthetic", "test", "synthetic blobs"),
    }
    for key, ds in list(out.items()):
        if not ds.subset:
            label = f"{ds.label}, {EQUAL_TIME} min of training"
            timed = replace(ds, key=f"{key}-{EQUAL_TIME}min", label=label, minutes=EQUAL_TIME)
            out[timed.key] = replace(timed, base=key)
    return out


def log(message: str) -> None:
    print(f"[bench_quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Results:
    """Measurements kept in a JSON-lines file, looked up by key: what is done stays done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line torn by a kill
                self.rows[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {"key": key, **row}
        self.rows[key] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def rename(self, prefix: str, new_prefix: str) -> None:
        """Every row under `prefix/` moves to `new_prefix/`; the file is rewritten atomically."""
        old = f"{prefix}/"
        renamed = {
            k: f"{new_prefix}/{k[len(old) :]}" if k.startswith(old) else k for k in self.rows
        }
        self.rows = {renamed[k]: {**r, "key": renamed[k]} for k, r in self.rows.items()}
        text = "".join(json.dumps(r) + "\n" for r in self.rows.values())
        files.atomic_write_bytes(self.path, text.encode())


def train(run_dir: Path, ds: Dataset, recipe: Recipe, steps: int, every: int, args: Any) -> dict:
    """Train (or resume) one run as a user would, through the command line."""
    cmd = [sys.executable, "-m", "imagegen", "train", recipe.model, "--json"]
    if (run_dir / "checkpoints" / runs.LATEST).is_file():  # on, to `steps` (a longer budget)
        cmd += ["--resume", str(run_dir), "--steps", str(steps)]
    else:
        cmd += ["--dataset", ds.train, "--resolution", "32", "--batch-size", str(recipe.batch)]
        cmd += ["--steps", str(steps), "--checkpoint-every", str(every), "--keep", "1000"]
        cmd += ["--sample-every", str(every), "--log-every", "100", "--run-dir", str(run_dir)]
        cmd += ["--fid-every", "0"]  # the benchmark measures its own curve
        cmd += ["--data-root", str(args.data_root), "--precision", args.train_precision]
        cmd += list(recipe.args)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"training {run_dir} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(
    source: Path,
    ds: Dataset,
    n: int,
    args: Any,
    metrics: tuple[str, ...],
    precision: str = "",
    fid_at: tuple[int, ...] = (),
    reference: str = "",
) -> dict[str, Any]:
    """FID and KID of a checkpoint (or, with `test`, of the test images) against the
    reference: `args.ref_n` training images (of `reference`, else of the dataset's own)."""
    request = EvalRequest(
        source=source,
        reference=reference or ds.train,
        split="train",
        n=n,
        n_ref=args.ref_n,
        metrics=metrics,
        precision=precision or args.precision,
        data_root=str(args.data_root),
        log_to_run=False,
        kid_subset_size=min(1000, n // 2),
        resolution=32,
        fid_at=fid_at,
    )
    started = time.perf_counter()
    result = evaluate(request)
    alarms = [w for w in result.warnings if w.startswith("alarm")]
    return {
        **result.metrics,
        "eval_s": round(time.perf_counter() - started, 1),
        **({"alarms": alarms} if alarms else {}),
    }


def subset_folder(ds: Dataset, results: Results) -> None:
    """The small-data row's training images: a fixed random subset (seed 0) of the whole
    training zip's images, their JPEG bytes copied unchanged into class subfolders, made once
    (written aside, then renamed into place). The record keeps a digest of the chosen names."""
    import shutil
    import zipfile

    folder = Path(ds.train)
    if not (folder / "done").is_file():
        with zipfile.ZipFile(ds.whole) as zf:
            names = sorted(n for n in zf.namelist() if n.lower().endswith((".jpg", ".png")))
            pick = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))
            chosen = sorted(names[i] for i in pick[: ds.subset].tolist())
            part = folder.with_name(folder.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            for name in chosen:  # train/<class>/NNNN.jpg -> <class>/NNNN.jpg
                out = part / Path(*Path(name).parts[1:])
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(name))
        (part / "names.txt").write_text("".join(n + "\n" for n in chosen))
        (part / "done").write_text("")
        part.rename(folder)
    names = (folder / "names.txt").read_text()
    digest = hashlib.sha256(names.encode()).hexdigest()[:16]
    row = results.get(f"{ds.key}/subset")
    if row is None:
        results.put(f"{ds.key}/subset", {"images": ds.subset, "names_sha256": digest})
    elif row["names_sha256"] != digest:
        raise SystemExit(f"{folder} holds another subset than the record measured: move it")


def test_folder(ds: Dataset, args: Any) -> Path:
    """The test images as PNG files, for `imagegen eval FOLDER` (the floor), made once."""
    folder = args.work / f"{ds.key}-test-images"
    if (folder / "done").is_file():
        return folder
    images = data.load_images(ds.test, resolution=32, split=ds.test_split, root=args.data_root)
    from imagegen.sampling.images import png_bytes

    folder.mkdir(parents=True, exist_ok=True)
    pick = torch.randperm(images.images.shape[0], generator=torch.Generator().manual_seed(0))
    for i in pick[: args.final_n].tolist():
        (folder / f"{i:05d}.png").write_bytes(png_bytes(images.images[i]))
    (folder / "done").write_text("")
    return folder


def grid(ckpt_path: Path, out: Path) -> None:
    """64 samples (seed 0, EMA weights where kept) as the report's grid; a conditional model's:
    a row of 8 per class."""
    ckpt = checkpoint.read_checkpoint(ckpt_path)
    model = checkpoint.build_model(ckpt)
    k = model.num_classes
    labels = class_grid(8 * k, k)[0] if k else None
    z = latents(64 if labels is None else len(labels), model.latent_dim, 0)
    images = generate_uint8(model, z, torch.device("cpu"), labels=labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, make_grid(images, 8))


def reconstructions(ckpt_path: Path, ds: Dataset, args: Any) -> dict[str, Any]:
    """A VAE's or VAE-GAN's reconstructions of `recon_n` test images: pixel MSE, and the FID
    of the reconstructions against the same reference as the samples (sharpness shows there)."""
    from imagegen.evaluation import inception, metrics
    from imagegen.evaluation.reference import reference_features
    from imagegen.sampling.images import to_uint8

    started = time.perf_counter()
    ckpt = checkpoint.read_checkpoint(ckpt_path)
    model = checkpoint.build_model(ckpt)
    c, res, _ = ckpt.data_shape
    test = data.load_images(ds.test, resolution=res, channels=c, split=ds.test_split,
                            root=args.data_root)  # fmt: skip
    pick = torch.randperm(test.images.shape[0], generator=torch.Generator().manual_seed(0))
    x = test.images[pick[: args.recon_n]].float().div(255)
    with torch.no_grad():
        recon = torch.cat([model.reconstruct(x[i : i + 256]) for i in range(0, len(x), 256)])
    extractor = inception.load_extractor(None)
    fake = extractor.features(to_uint8(recon), precision=args.precision).numpy()
    real, _ = reference_features(
        extractor, ds.train, split="train", resolution=res, channels=c, n=args.ref_n,
        root=str(args.data_root), batch_size=64, precision=args.precision,
    )  # fmt: skip
    fid = metrics.frechet_distance(*metrics.gaussian_stats(fake), *metrics.gaussian_stats(real))
    return {
        "recon_fid": fid,
        "recon_mse": float((recon - x).pow(2).mean()),
        "eval_s": round(time.perf_counter() - started, 1),
    }


def bits_per_dim(ckpt_path: Path, ds: Dataset, args: Any) -> dict[str, Any]:
    """A VAE's negative ELBO on the held-out images, as `imagegen eval --metrics bpd`."""
    request = EvalRequest(
        source=ckpt_path,
        metrics=("bpd",),
        test_data=None if ds.test == ds.train else ds.test,
        data_root=str(args.data_root),
        log_to_run=False,
    )
    return evaluate(request).metrics


def run_one(ds: Dataset, name: str, results: Results, args: Any) -> None:
    """Train one recipe on one dataset, then measure its curve and its final figure."""
    spec = recipe(name)
    images = args.images_for.get(ds.key, args.images)
    if spec.model != "dcgan" and args.ae_images:  # the VAE and VAE-GAN at their own budget
        images = args.ae_images
    run_dir = args.work / ds.key / name
    key = f"{ds.key}/{name}"
    done = results.get(f"{key}/train")
    if done is not None and (diff := retuned(done, name)):
        _set_aside(results, key, run_dir, _config_tag(done), f"its preset changed ({diff})")
    if ds.minutes:
        images = _rebudget(results, ds, name, run_dir) or equal_time_images(ds, name, results)
        _start_from_base(results, ds, name, images, run_dir)
    steps = images // spec.batch
    every = max(1, steps // args.points)
    _same_run(results, key, run_dir)
    _extend(results, key, images, run_dir)
    done = results.get(f"{key}/train")
    if done is not None and "carried_from" in done:  # no run folder: its figures stand
        log(f"{key}: carried over from {done['carried_from']}, nothing to measure")
        return
    if done is None:
        log(f"{key}: training {steps} steps ({images:,} images), run folder {run_dir}")
        out = train(run_dir, ds, spec, steps, every, args)
        config = json.loads((run_dir / "config.json").read_text())
        results.put(
            f"{key}/train",
            {
                "dataset": ds.key,
                "recipe": name,
                "steps": out["step"],
                "images": out["step"] * spec.batch,
                "train_config": config["train_config"],
                "model_config": config["model_config"],
                "trained_in": config["precision"],
                "elapsed_s": _elapsed(run_dir),
                "machine": machine(),
                "alarms": alarms(run_dir),
                **({"budget": equal_time_budget(ds, name, results)} if ds.minutes else {}),
            },
        )
    latest = run_dir / "checkpoints" / runs.LATEST
    last = checkpoint.read_checkpoint(latest, load_tensors=False).step
    for step, path in runs.step_checkpoints(run_dir):
        if results.get(f"{key}/curve/{step}") is None and step != last:
            log(f"{key}: FID at step {step} ({args.curve_n} generated)")
            row = measure(path, ds, args.curve_n, args, ("fid", "kid"), args.curve_precision)
            results.put(f"{key}/curve/{step}", {"step": step, "images": step * spec.batch, **row})
    final = results.get(f"{key}/final")
    if final is None or final.get("step", last) != last:
        log(f"{key}: final FID ({args.final_n} generated vs {args.ref_n} training images)")
        # The curve's last point is the FID of the final figure's first curve_n images (the
        # same latents a curve_n-image evaluation would draw): no second generation.
        wanted = ("fid", "kid", "pr", "copy") if ds.whole else ("fid", "kid", "pr")
        row = measure(latest, ds, args.final_n, args, wanted, fid_at=(args.curve_n,))
        model_cls = checkpoint.build_model(checkpoint.read_checkpoint(latest)).__class__
        if model_cls.can_reconstruct:
            row |= reconstructions(latest, ds, args)
        if model_cls.has_likelihood:
            row |= bits_per_dim(latest, ds, args)
        results.put(f"{key}/final", {"step": last, **row})
        if ds.whole:  # the same samples' FID against the whole training set
            whole = measure(latest, ds, args.final_n, args, ("fid", "kid"), reference=ds.whole)
            results.put(f"{key}/final-whole", {"step": last, **whole})
        fid = row.get(f"fid_at_{args.curve_n}", row["fid"])
        results.put(f"{key}/curve/{last}", {"step": last, "images": last * spec.batch, "fid": fid})
    grid(run_dir / "checkpoints" / runs.LATEST, args.docs / "quality" / f"{ds.key}-{name}.png")


def speed_row(results: Results, ds: Dataset, name: str) -> dict[str, Any] | None:
    """A recipe's speed measured alone on a dataset; an equal-time dataset's: the one its run's
    budget was set by, else its base's now."""
    done = results.get(f"{ds.key}/{name}/train") if ds.minutes else None
    if done is not None and "budget" in done:
        budget = done["budget"]
        return {"images_per_s": budget["images_per_s"], "machine": budget["speed_on"]}
    return results.get(f"{ds.base or ds.key}/{name}/speed")


def equal_time_budget(
    ds: Dataset, name: str, results: Results, sp: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What an equal-time run's images come from: its minutes at the speed measured alone
    (`sp`, else the speed_row's), scaled by the machine's drift since CLOCK's budget was set
    (see CLOCK)."""
    sp = sp or speed_row(results, ds, name)
    if sp is None:
        raise SystemExit(
            f"{ds.key}/{name}: an equal-time run needs the recipe's speed alone on {ds.base}: "
            f"run --datasets {ds.base} --recipes {name} first"
        )
    budget = {"minutes": ds.minutes, "images_per_s": sp["images_per_s"]}
    drift = _drift(ds, name, results, sp)
    if drift != 1.0:
        budget["measured_images_per_s"] = sp["images_per_s"]
        budget["images_per_s"] = round(sp["images_per_s"] * drift, 1)
        budget["drift"] = round(drift, 4)
    return budget | {"speed_on": sp.get("machine")}


def _drift(ds: Dataset, name: str, results: Results, sp: dict[str, Any]) -> float:
    """CLOCK's budget speed over its speed measured side by side with `sp`: 1 where CLOCK has
    no budget yet, or its speed was not measured again since. Where it was, a speed not
    measured beside CLOCK's stops the script (a day's drift of the machine would become the
    recipe's advantage or loss)."""
    clock = results.get(f"{ds.key}/{CLOCK}/train")
    if name == CLOCK or clock is None or "budget" not in clock:
        return 1.0
    now = results.get(f"{ds.base}/{CLOCK}/speed") or {}
    if now.get("images_per_s") == clock["budget"]["images_per_s"]:
        return 1.0
    if not _beside_clock(results, ds, sp):
        raise SystemExit(
            f"{ds.key}/{name}: its speed was not measured side by side with {CLOCK}'s, whose "
            f"budget sets the clock: run --speed-only --datasets {ds.base} "
            f"--recipes {CLOCK},{name} first"
        )
    return clock["budget"]["images_per_s"] / now["images_per_s"]


def _beside_clock(results: Results, ds: Dataset, sp: dict[str, Any]) -> bool:
    """Whether speed row `sp` was measured side by side with CLOCK's latest speed on ds.base."""
    now = results.get(f"{ds.base}/{CLOCK}/speed") or {}
    return sp.get("side_by_side") is not None and sp["side_by_side"] == now.get("side_by_side")


def equal_time_images(ds: Dataset, name: str, results: Results) -> int:
    """Images an equal-time run trains: ds.minutes at the recipe's images/s alone, in whole
    batches. A run recorded already keeps the images its budget gave it (a speed measured
    again later moves no finished run, except through _rebudget)."""
    done = results.get(f"{ds.key}/{name}/train")
    if done is not None and "budget" in done:
        return done["images"]
    return _budget_images(ds, name, equal_time_budget(ds, name, results))


def _budget_images(ds: Dataset, name: str, budget: dict[str, Any]) -> int:
    """A budget's images: its minutes at its images/s, in whole batches of the recipe."""
    batch = recipe(name).batch
    return int(budget["images_per_s"] * 60 * ds.minutes) // batch * batch


# An equal-time run's budget is set again when its recipe's speed, measured again side by side
# with CLOCK's, moves its images by more than this share: the recipe's step got faster or
# slower (its code changed; the machine's drift is what CLOCK's speed beside it cancels).
# Side-by-side ratios to CLOCK measured hours apart agreed within 2% (the Xeon, 2026-12-03).
REBUDGET = 0.05


def _rebudget(results: Results, ds: Dataset, name: str, run_dir: Path) -> int | None:
    """The images of an equal-time run whose recipe's speed on its base, measured again side
    by side with CLOCK's, gives it more than REBUDGET more images than it trained (it goes on
    from its last checkpoint: _extend); one given that many fewer is set aside
    (NAME.IMAGES-images) to train anew at its new budget. None where the budget stands.
    CLOCK's budget is the clock: never set again."""
    key = f"{ds.key}/{name}"
    done = results.get(f"{key}/train")
    if name == CLOCK or done is None or "budget" not in done:
        return None
    sp = results.get(f"{ds.base}/{name}/speed") or {}
    if not _beside_clock(results, ds, sp):
        return None
    images = _budget_images(ds, name, equal_time_budget(ds, name, results, sp))
    if abs(images - done["images"]) <= REBUDGET * done["images"]:
        return None
    why = (
        f"its speed measured again beside {CLOCK}'s gives {images:,} images in "
        f"{ds.minutes} minutes, not the {done['images']:,} it trained"
    )
    if images < done["images"]:
        _set_aside(results, key, run_dir, f"{done['images']}-images", why)
        return None
    log(f"{key}: {why}; going on to {images:,}")
    return images


def speed(ds: Dataset, name: str, results: Results, args: Any, again: bool = False) -> None:
    """A recipe's training images/s on this machine, measured alone: `--speed-steps` steps of
    a fresh run with the recorded run's options and precision (no grids, no checkpoints
    between), the median of its log lines' images/s after the first (warm-up). The time axis
    of the report is images seen / this speed, so runs that shared the machine while they
    trained are still compared at their own speeds. `again`: measured anew even where this
    machine measured it (--speed-only: every speed of the report side by side in one run, as
    a machine's speed drifts over days)."""
    import shutil

    key = f"{ds.key}/{name}"
    tr, sp = results.get(f"{key}/train"), results.get(f"{key}/speed")
    here = sp is not None and sp.get("machine") == machine()
    if ds.minutes or tr is None or (here and not again):
        return  # measured here already; one measured on another machine is measured again
    spec = recipe(name)
    run_dir = args.work / "speed" / ds.key / name  # scratch, the benchmark's own
    shutil.rmtree(run_dir, ignore_errors=True)
    steps, every = args.speed_steps, max(1, args.speed_steps // 6)
    cmd = [sys.executable, "-m", "imagegen", "train", spec.model, "--json", *spec.args]
    cmd += ["--dataset", ds.train, "--resolution", "32", "--data-root", str(args.data_root)]
    cmd += ["--batch-size", str(tr["train_config"]["batch_size"]), "--steps", str(steps)]
    cmd += ["--precision", _trained_in(tr, args.work), "--log-every", str(every)]
    cmd += ["--sample-every", str(10 * steps), "--checkpoint-every", str(10 * steps)]
    cmd += ["--run-dir", str(run_dir)]
    log(f"{key}: speed ({steps} steps alone)")
    if subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        raise SystemExit(f"the speed run {run_dir} failed")
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    rates = sorted(x["images_per_s"] for x in lines[1:] if "images_per_s" in x)
    results.put(
        f"{key}/speed",
        {
            "images_per_s": rates[len(rates) // 2],
            "steps": steps,
            "machine": machine(),
            "measured": time.strftime("%Y-%m-%d %H:%M"),
            **({"side_by_side": SESSION} if again else {}),
        },
    )
    shutil.rmtree(run_dir, ignore_errors=True)


def retrain_carried(ds: Dataset, name: str, results: Results, args: Any) -> None:
    """A run carried over from an earlier report (figures only: no folder, no curve points)
    moves aside as NAME.carried, nothing deleted, so that the recipe trains anew and its
    curve is measured under the present protocol. A run trained here is left as it is, so
    the same command resumes it."""
    key = f"{ds.key}/{name}"
    done = results.get(f"{key}/train")
    if done is not None and "carried_from" in done:
        _set_aside(results, key, args.work / ds.key / name, "carried", "asked to retrain it")


def _start_from_base(results: Results, ds: Dataset, name: str, images: int, run_dir: Path) -> None:
    """An equal-time run not started yet begins as a copy of its base's run where that one is
    shorter and its lr does not decay: resume is exact, so going on from the copy trains the
    run a fresh start would, in the base's part of the time. Its curve is measured again
    from the copied checkpoints."""
    import shutil

    base = results.get(f"{ds.base}/{name}/train")
    source = run_dir.parent.parent / ds.base / name
    if run_dir.exists() or base is None or "model_config" not in base:
        return
    if base["images"] > images or base["train_config"].get("lr_decay", "none") != "none":
        return
    log(f"{ds.key}/{name}: going on from a copy of {source} ({base['images']:,} images)")
    part = run_dir.with_name(run_dir.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    shutil.copytree(source, part)
    part.rename(run_dir)


def _same_run(results: Results, key: str, run_dir: Path) -> None:
    """Stop where the run folder is not the run the record measured (another run moved or
    trained into its place, or the folder removed): its grid, curve points and extension would
    be another run's, under the record's figures."""
    done = results.get(f"{key}/train")
    if done is None or "model_config" not in done:  # nothing recorded, or carried over
        return
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise SystemExit(
            f"{key}: the record {results.path} has this run's figures but {run_dir} holds no "
            "run: put its folder back, or move its rows out of the record to train it anew"
        )
    config = json.loads(config_path.read_text())
    diffs = [
        f"{part}.{k}: {done[part].get(k)} in the record, {config[part].get(k)} in the folder"
        for part in ("model_config", "train_config")
        for k in sorted(set(done[part]) | set(config[part]))
        if done[part].get(k) != config[part].get(k)
    ]
    if diffs:
        raise SystemExit(
            f"{key}: {run_dir} holds another run than the record {results.path} measured "
            f"({'; '.join(diffs)}): move the folder or the record's rows aside"
        )


def _extend(results: Results, key: str, images: int, run_dir: Path) -> None:
    """A run trained for fewer images than asked goes on from its last checkpoint: its train
    record is dropped (its curve points stay true) and its final figure is marked with the
    step it belongs to, so that it is measured again at the new last step."""
    done = results.get(f"{key}/train")
    if done is None or done["images"] >= images:
        return
    if done.get("train_config", {}).get("lr_decay", "none") != "none":
        why = f"its lr decayed over {done['images']:,} images"
        _set_aside(results, key, run_dir, f"{done['images']}-images", why)
        return
    final = results.get(f"{key}/final")
    if final is not None and "step" not in final:  # written before final rows had a step
        results.put(f"{key}/final", {**final, "step": done["steps"]})
    results.rows.pop(f"{key}/train")


# The names _set_aside gives: NAME.config-HASH, NAME.IMAGES-images, NAME.carried.
ASIDE = re.compile(r"\.(config-[0-9a-f]{8}|\d+-images|carried)$")


def _set_aside(results: Results, key: str, run_dir: Path, tag: str, why: str) -> None:
    """A run that cannot stand for its recipe at the asked budget (its lr decayed to 0 at its
    last step, so going on would raise it again; or its preset was retuned since): its folder
    and rows move aside under a name that carries `tag`, nothing deleted, and the recipe
    trains anew."""
    aside = run_dir.with_name(f"{run_dir.name}.{tag}")
    if aside.exists():
        raise SystemExit(f"cannot set {run_dir} aside: {aside} exists (move one of them)")
    log(f"{key}: {why}; kept as {aside.name}, training anew")
    if run_dir.exists():  # its rows may outlive a folder the user removed
        run_dir.rename(aside)
    results.rename(key, f"{key}.{tag}")


# The model options the data sets, not the recipe.
DATA_OPTIONS = ("channels", "resolution", "num_classes")


def retuned(done: dict[str, Any], name: str) -> str:
    """How a recorded run's options differ from what its recipe's preset sets now ('' when
    they agree, or when the record keeps no configs: carried over). An option the record
    lacks (added since) counts as its default."""
    if "model_config" not in done:
        return ""
    spec = recipe(name)
    model = MODELS[spec.model]
    preset = model.presets[spec.args[spec.args.index("--preset") + 1]]
    asked = dict(preset.model) | dict(spec.changes)  # as `--set` gives them: text
    want_model = _plain(build_dataclass(model.config_cls, asked, spec.model))
    asked_train = model.train_defaults | preset.train | dict(spec.train_changes)
    want_train = _plain(build_dataclass(TrainConfig, asked_train, "training"))
    defaults = _plain(build_dataclass(model.config_cls, {}, spec.model))
    # a conditioning ramped by the run's length: the run sets cond_start and cond_end
    by_length = model.conditioning_ramp("--conditional" in spec.args, asked) is not None
    unasked = DATA_OPTIONS + (CONDITIONAL_ONLY if by_length else ())
    diffs = [
        f"{k}: {done['model_config'].get(k, defaults[k])} -> {v}"
        for k, v in want_model.items()
        if k not in unasked and done["model_config"].get(k, defaults[k]) != v
    ]
    if by_length and not done["model_config"].get("cond_end"):
        diffs.append("cond_end: 0 -> ramped by the run's length (conditional_ramp)")
    train_defaults = _plain(TrainConfig())
    diffs += [
        f"{k}: {done['train_config'].get(k, train_defaults[k])} -> {want_train[k]}"
        for k in RECIPE_OPTIONS
        if done["train_config"].get(k, train_defaults[k]) != want_train[k]
    ]
    return ", ".join(diffs)


def _plain(config: Any) -> dict[str, Any]:
    """A config as its JSON record holds it (tuples as lists)."""
    return json.loads(json.dumps(to_dict(config)))


def _config_tag(done: dict[str, Any]) -> str:
    """A short name for a recorded run's options, for the folder it is set aside as."""
    configs = json.dumps([done["model_config"], done["train_config"]], sort_keys=True)
    return "config-" + hashlib.sha256(configs.encode()).hexdigest()[:8]


def alarms(run_dir: Path) -> list[dict[str, Any]]:
    """The alarms a run raised in all its sessions, from its log (the JSON result of a resumed
    run holds only those of its last session); a log line written before alarms had their own
    field gives its warning as the message."""
    out = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        old = [{"step": row.get("step"), "message": w} for w in row.get("warnings", [])]
        out += row.get("alarms", old)
    return out


def _elapsed(run_dir: Path) -> float:
    """Training seconds, from the last log line (it counts across resumes)."""
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["elapsed_s"]) if lines else 0.0


def floor(ds: Dataset, results: Results, args: Any) -> None:
    """The dataset's test images against the same reference: the best a model can hope for."""
    if ds.subset:
        subset_folder(ds, results)
    if ds.minutes:  # the same data as its base: the floor is the base's
        return
    if results.get(f"{ds.key}/floor") is None:
        log(f"{ds.key}: floor (test images vs training images)")
        wanted = ("fid", "kid", "pr", "copy") if ds.whole else ("fid", "kid", "pr")
        row = measure(test_folder(ds, args), ds, args.final_n, args, wanted)
        results.put(f"{ds.key}/floor", row)
    if ds.whole and results.get(f"{ds.key}/floor-whole") is None:
        row = measure(
            test_folder(ds, args), ds, args.final_n, args, ("fid", "kid"), reference=ds.whole
        )
        results.put(f"{ds.key}/floor-whole", row)


def machine() -> str:
    """This machine in words: CPU model, cores and threads used, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def cpu(machine_text: str) -> str:
    """The CPU model of a machine() text."""
    return machine_text.split(",", 1)[0]


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


def minutes(results: Results, ds: Dataset, name: str, images: int) -> float | None:
    """Training minutes for `images` at the recipe's speed measured alone (None: unmeasured)."""
    sp = speed_row(results, ds, name)
    return images / sp["images_per_s"] / 60 if sp else None


def plot(
    results: Results,
    dss: list[Dataset],
    names: list[str],
    out: Path,
    args: Any,
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
        ref_n = min(args.ref_n, ds.subset or args.ref_n)
        ax.set_ylabel(f"FID ({args.curve_n:,} generated vs {ref_n:,} train)")
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


def _curve(results: Results, key: str) -> list[dict[str, Any]]:
    return sorted(
        (r for k, r in results.rows.items() if k.startswith(f"{key}/curve/")),
        key=lambda r: r["step"],
    )


def _best_and_last(results: Results, key: str, tr: dict[str, Any]) -> tuple[dict, float] | None:
    """The curve's best point and its last FID over its best, from the curve points, or from
    the summary that a row carried over from an earlier report holds instead of its points."""
    curve = _curve(results, key)
    if curve:
        best = min(curve, key=lambda r: r["fid"])
        return best, curve[-1]["fid"] / best["fid"]
    summary = tr.get("curve_summary")
    if summary:
        return {"fid": summary["best_fid"], "images": summary["best_images"]}, summary[
            "last_over_best"
        ]
    return None


def _trained_in(tr: dict[str, Any], work: Path) -> str:
    """The precision a run trained at (what `auto` chose), from its record or its folder."""
    if "trained_in" in tr:
        return tr["trained_in"]
    latest = work / tr["dataset"] / tr["recipe"] / "checkpoints" / runs.LATEST
    return runs.recorded_precision(latest) or "?"


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
            summary = _best_and_last(results, key, tr) if tr and fin else None
            if summary is None:
                continue
            (best, last_over_best), mark = summary, " \\*" if "carried_from" in tr else ""
            lines.append(
                f"| {ds.label} | {recipe(name).label}{mark} | {_trained_in(tr, work)} "
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
            a, b = _pair(results, ds, a_name, b_name)
            if a and b and "{}" in what:  # a precision comparison: where they differ
                if a["trained_in"] == b["trained_in"]:
                    continue
                what = what.format(a["trained_in"], b["trained_in"])
            if a and b:
                out.append(
                    f"- {ds.label}, {a['images']:,} images each: {what} = {a['fid']:.2f} / "
                    f"{b['fid']:.2f} = **{a['fid'] / b['fid']:.2f}**"
                )
        a, b = _pair(results, ds, vaegan, vae)
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


def _pair(results: Results, ds: Dataset, a: str, b: str) -> tuple[dict | None, dict | None]:
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


def recorded(results: Results, known: dict[str, Dataset]) -> tuple[list[Dataset], list[str]]:
    """The datasets and recipes the record has figures for (in the order of `datasets()` and
    `RECIPES`, the @precision variants after them): the report covers them all, whichever of
    them this invocation trained."""
    parts = [key.split("/") for key in results.rows]
    seen = {p[1] for p in parts if len(p) > 2}
    variants = sorted(n for n in seen - set(RECIPES) if _valid(n) and not ASIDE.search(n))
    names = [n for n in (*RECIPES, *variants) if n in seen and _valid(n)]
    return [d for key, d in known.items() if key in {p[0] for p in parts}], names


def _valid(name: str) -> bool:
    try:
        recipe(name)
    except SystemExit:
        return False
    return True


def small_data(results: Results, dss: list[Dataset], names: list[str], args: Any) -> list[str]:
    """The small-data section: each recipe on a subset, its FID against the subset and against
    the whole training set, and the copying check beside it."""
    out = []
    for ds in (d for d in dss if d.whole):
        rows = []
        for name in (*names, "floor"):
            key = f"{ds.key}/{name}"
            fin = results.get(key if name == "floor" else f"{key}/final")
            whole = results.get(f"{key}-whole" if name == "floor" else f"{key}/final-whole")
            tr = results.get(f"{key}/train")
            if not (fin and whole and "nn_ratio" in fin):
                continue
            what = "test images (the floor)" if name == "floor" else recipe(name).label
            seen = f"{tr['images']:,}" if tr else "–"
            alarm = " (alarm)" if fin.get("alarms") else ""
            rows.append(
                f"| {what} | {seen} | {fin['fid']:.2f} | {whole['fid']:.2f} "
                f"| {fin['precision']:.3f} | {fin['recall']:.3f} | {fin['nn_ratio']:.2f} "
                f"| {fin['nearer_than_nn']:.3f} | {fin['copies']:.3f}{alarm} |"
            )
        if not rows:
            continue
        subset = results.get(f"{ds.key}/subset") or {}
        out += [
            f"## Small data: {ds.label}",
            "",
            f"{ds.subset:,} training images drawn once from {Path(ds.whole).name} (seed 0; the "
            f"names' SHA-256 begins {subset.get('names_sha256', '?')}), copied unchanged into "
            "class subfolders as a user's folder would hold them, and trained on for as many "
            "images as the other rows. FID against the subset: its "
            f"{ds.subset:,} images are the whole reference; against the whole set: the "
            f"{args.ref_n:,}-image reference of the full dataset's rows. Precision and recall "
            "against the subset. Copying (`imagegen eval --metrics copy`, against the subset): "
            "the median over samples of the distance to the nearest training image over that "
            "image's distance to its own nearest neighbour, the share of samples below 1, and "
            "the share below 0.5 (an alarm from 5%); the floor row is the test images, which "
            "copy nothing.",
            "",
            "| recipe | images seen | FID vs the subset | FID vs the whole set | precision "
            "| recall | median NN ratio | nearer than NN | copies |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
        a, b = _pair(results, ds, default_recipe("dcgan"), "dcgan-classic")
        wa = results.get(f"{ds.key}/{default_recipe('dcgan')}/final-whole")
        wb = results.get(f"{ds.key}/dcgan-classic/final-whole")
        if a and b and wa and wb:
            out += [
                f"- DCGAN default / classic FID, {a['images']:,} images each: against the "
                f"subset {a['fid']:.2f} / {b['fid']:.2f} = **{a['fid'] / b['fid']:.2f}**; "
                f"against the whole set {wa['fid']:.2f} / {wb['fid']:.2f} = "
                f"**{wa['fid'] / wb['fid']:.2f}**",
                "",
            ]
    return out


# Model options of conditional runs alone: the unconditional run beside one is without them.
CONDITIONAL_ONLY = ("cond_start", "cond_end")


def unconditional(name: str) -> str:
    """The unconditional recipe a conditional one (NAME+conditional) is compared with: the
    same recipe without +conditional and without the options of conditional runs alone."""
    parts = name.removesuffix("+conditional").split("+")
    return "+".join(p for p in parts if p.split("=")[0] not in CONDITIONAL_ONLY)


def conditional(results: Results, dss: list[Dataset], names: list[str]) -> list[str]:
    """Each conditional recipe beside the same recipe unconditional, at equal images: overall
    FID (samples in the data's class proportions), their ratio, and the intra-class FID."""
    rows, grids = [], []
    for ds in dss:
        for name in names:
            if not name.endswith("+conditional"):
                continue
            base = unconditional(name)
            a, b = _pair(results, ds, name, base)
            fin = results.get(f"{ds.key}/{name}/final")
            if not (a and b and fin):
                continue
            classes = sorted(k.split("/", 1)[1] for k in fin if k.startswith("intra_fid/"))
            per_class = {c: fin[f"intra_fid/{c}"] for c in classes}
            best, worst = min(per_class, key=per_class.get), max(per_class, key=per_class.get)
            pr = " | ".join(
                f"{row.get(m, float('nan')):.3f}" for m in ("precision", "recall") for row in (b, a)
            )
            rows.append(
                f"| {ds.label} | {recipe(name.removesuffix('+conditional')).label} | "
                f"{a['images']:,} | {b['fid']:.2f} "
                f"| {a['fid']:.2f} | **{a['fid'] / b['fid']:.2f}** | {pr} | "
                f"{fin['intra_fid']:.2f} | {best} {per_class[best]:.1f}, {worst} "
                f"{per_class[worst]:.1f} |"
            )
            grids.append(f"| {ds.label} | ![{ds.key} {name}](quality/{ds.key}-{name}.png) |")
    if not rows:
        return []
    return [
        "## Class-conditional against unconditional",
        "",
        "The same recipe trained with `--conditional` on the data's classes (the DCGAN: "
        "conditional BatchNorm in G, a projection discriminator), at the same training images. "
        f"A conditional DCGAN ramps its conditioning in from {_ramp_text()} of its run "
        "(transitional training) unless the recipe sets `cond_end` (0: conditional from the "
        "start). Overall FID as above, the conditional model's samples drawn in the training "
        "data's class proportions. Intra-class FID: each class's samples against that class's "
        "reference images (about a tenth of each side here, under 2,048 images a class, so "
        "biased upwards: compare at the same n only), their mean; the best and the worst class. "
        "Precision and recall (k = 3) of each: how much of the data's spread the samples cover.",
        "",
        "| dataset | recipe | images seen | FID unconditional | FID conditional | ratio "
        "| precision uncond. | precision cond. | recall uncond. | recall cond. "
        "| intra-class FID (mean) | best, worst class |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "| dataset | a row of 8 samples per class (seed 0) |",
        "| --- | --- |",
        *grids,
        "",
    ]


def _ramp_text() -> str:
    """The DCGAN's default conditioning ramp in words: "1/12 to 1/3"."""
    start, end = (Fraction(f).limit_denominator(100) for f in MODELS["dcgan"].conditional_ramp)
    return f"{start} to {end}"


def time_table(results: Results, dss: list[Dataset], names: list[str]) -> list[str]:
    """Each recipe's speed measured alone, and the training minutes by which its curve first
    reached the classic recipe's final curve FID (the same 2,000-sample protocol)."""
    rows = []
    for ds in dss:
        target = _curve(results, f"{ds.key}/dcgan-classic")
        if not target:
            continue
        goal = target[-1]["fid"]
        for name in names:
            key = f"{ds.key}/{name}"
            sp, curve = speed_row(results, ds, name), _curve(results, key)
            if sp is None or not curve:
                continue
            hit = next((r for r in curve if r["fid"] <= goal), None)
            reached = (
                f"{minutes(results, ds, name, hit['images']):.1f} min ({hit['images']:,} images)"
                if hit
                else f"not within {curve[-1]['images']:,} images"
            )
            last, where = curve[-1], cpu(sp.get("machine", "–"))
            rows.append(
                f"| {ds.label} | {recipe(name).label} | {sp['images_per_s']:.0f} "
                f"| {minutes(results, ds, name, last['images']):.1f} min | {last['fid']:.2f} "
                f"| {goal:.2f} | {reached} | {where} |"
            )
    if not rows:
        return []
    return [
        "## Quality per training minute",
        "",
        "Images/s: each recipe trained alone on the machine named in its row, with its run's "
        "options and precision (`--speed-steps` steps, the median of its log's images/s after "
        "warm-up). Training minutes = images seen / that speed, so runs that shared the machine "
        "while they trained still compare at their own speeds. A recipe reaches the classic "
        "recipe's final curve FID at its first curve point at or below it: the curve has few "
        "points, so this is an upper bound at their resolution. An equal-time row's images/s "
        "is its budget: on a later day than the classic recipe's budget, its speed times the "
        "classic recipe's then over now, both measured side by side (the machine's drift); "
        "set again, and the run trained to it, when a later side-by-side speed moves it by "
        f"more than {REBUDGET:.0%} (the recipe's step got faster or slower).",
        "",
        "| dataset | recipe | images/s alone | minutes for its run | its last curve FID "
        "| classic's last curve FID | reached it by | speed measured on |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "![FID against training minutes](quality/fid-curves-time.png)",
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
                grid = docs / "quality" / f"{d.key}-{name}.png"
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


def report(results: Results, dss: list[Dataset], names: list[str], args: Any) -> Path:
    """Write docs/quality.md from what is measured so far."""
    plot(results, dss, names, args.docs / "quality" / "fid-curves.png", args)
    timed = time_table(results, dss, names)
    if timed:
        measured = [d for d in dss if any(speed_row(results, d, n) for n in names)]
        plot(results, measured, names, args.docs / "quality" / "fid-curves-time.png", args, True)
    grids = [
        f"| {ds.label} | {recipe(n).label} | ![{ds.key} {n}](quality/{ds.key}-{n}.png) |"
        for ds in dss
        for n in names
        if (args.docs / "quality" / f"{ds.key}-{n}.png").is_file()
    ]
    raised = [  # what happened; the advice of the day is in the run's log
        f"- {r['dataset']} / {r['recipe']}: {a['message']}."
        for r in results.rows.values()
        if r["key"].endswith("/train")
        for a in r.get("alarms", [])
    ]
    text = "\n".join(
        [
            "# Image quality per training image",
            "",
            *summary(results, dss, args.docs),
            "Written by `make bench-quality` (`benchmarks/bench_quality.py`) from its record, "
            "[quality/results.jsonl](quality/results.jsonl): every figure below was measured on "
            "the machine named here with the protocol stated, runs resumed across sessions where "
            "they were interrupted or extended.",
            "",
            machines(results, dss, names),
            "",
            "Protocol: TF-Inception (2015-12-05) pool3 features, pytorch-fid's resize (bilinear "
            f"to 299 px), extractor precision {args.precision} for the final figures and "
            f"{args.curve_precision} for the curve points. Generated images are sampled "
            "from the EMA weights where the recipe keeps an EMA (the classic recipe samples its "
            "raw generator, as pytorch/examples does), quantised to uint8 as a PNG holds them. "
            f"Reference: {args.ref_n:,} training images (a fixed random subset). Final figures: "
            f"{args.final_n:,} generated images; curve points: {args.curve_n:,} (FID is biased "
            "upwards at small n: compare figures of the same n only). KID subsets of "
            "min(1000, n/2). Precision and recall: k = 3. Reconstructions: "
            f"{args.recon_n:,} test images. All runs: 32 px, seed 0 (seed=N: a second run of "
            f"its recipe), the batch size "
            f"{BATCH} unless the recipe's preset sets another (the table gives it). Trained in: "
            "the training precision (what `--precision auto` chose on its machine, or the "
            "recipe's @bf16). Train time and img/s are as measured, with other runs sometimes "
            "sharing the machine: speed comparisons are in benchmarks.md.",
            "",
            "CIFAR-10-JPEG is CIFAR-10 re-encoded as JPEG: its FIDs are comparable with each "
            "other and with the floor below, never with published CIFAR-10 FIDs.",
            "",
            *table(results, dss, names, args.work),
            "",
            *carried_note(results),
            *autoencoder_table(results, dss, names),
            "",
            *ratios(results, dss),
            "",
            *small_data(results, dss, names, args),
            *conditional(results, dss, names),
            *timed,
            "![FID against training images](quality/fid-curves.png)",
            "",
            "| dataset | recipe | 64 samples (seed 0) |",
            "| --- | --- | --- |",
            *grids,
            "",
            "## Alarms raised during these runs",
            "",
            "As `imagegen train` raised them (the run's log and `--json` result add advice).",
            "",
            *(raised or ["None."]),
            "",
        ]
    )
    out = args.docs / "quality.md"
    out.write_text(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "checkpoints" / "bench-quality")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--results", type=Path, default=None, help="the record [DOCS/quality/results.jsonl]"
    )
    parser.add_argument("--data-root", type=Path, default=locations.data_root())
    parser.add_argument("--datasets", default="cifar10-jpeg,mnist")
    parser.add_argument(
        "--recipes",
        default=None,
        help="MODEL-PRESET, comma-separated [all; with --speed-only, all the record has]",
    )
    parser.add_argument("--images", type=int, default=384_000, help="training images per run")
    parser.add_argument("--mnist-images", type=int, default=None, help="[default: --images]")
    parser.add_argument(
        "--ae-images", type=int, default=192_000, help="training images of the VAE and VAE-GAN"
    )
    parser.add_argument("--points", type=int, default=2, help="curve points per run")
    parser.add_argument("--curve-n", type=int, default=2000)
    parser.add_argument("--final-n", type=int, default=5000)
    parser.add_argument("--ref-n", type=int, default=10_000)
    parser.add_argument("--recon-n", type=int, default=2000, help="test images reconstructed")
    parser.add_argument("--precision", default="bf16", help="extractor precision, final figures")
    parser.add_argument(
        "--curve-precision", default="bf16", help="extractor precision of the curve points"
    )
    parser.add_argument("--train-precision", default="auto", help="auto, bf16 or fp32")
    parser.add_argument("--report-only", action="store_true", help="write the report and stop")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="measure the recorded runs' speeds alone again, side by side in this one run "
        "(idle machine), write the report, stop",
    )
    parser.add_argument("--speed-steps", type=int, default=300, help="steps of a speed run")
    parser.add_argument(
        "--retrain-carried",
        action="store_true",
        help="the recipes' runs carried over from an earlier report (figures, no curve) move "
        "aside as NAME.carried and train anew",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.images_for = {"mnist": args.mnist_images} if args.mnist_images else {}
    known = datasets(args.data_root, args.work)
    unknown = [k for k in args.datasets.split(",") if k not in known]
    if unknown:
        raise SystemExit(f"unknown dataset {unknown[0]} (valid: {', '.join(known)})")
    dss = [known[k] for k in args.datasets.split(",")]
    names = split_recipes(args.recipes) if args.recipes else list(RECIPES)
    for name in names:
        recipe(name)  # unknown names stop here, before anything runs
    args.results = args.results or args.docs / "quality" / "results.jsonl"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    results = Results(args.results)
    log(f"machine: {machine()}; work folder {args.work}, record {args.results} (resumable)")
    if args.speed_only:  # the recipes asked, else every recipe the record has
        for ds in dss:
            for name in names if args.recipes else recorded(results, known)[1]:
                speed(ds, name, results, args, again=True)
    elif not args.report_only:
        for ds in dss:
            floor(ds, results, args)
            for name in names:
                if args.retrain_carried:
                    retrain_carried(ds, name, results, args)
                run_one(ds, name, results, args)
                report(results, *recorded(results, known), args)
            for name in names:  # after its runs, so that nothing else shares the machine
                speed(ds, name, results, args)
    log(f"report: {report(results, *recorded(results, known), args)}")
    if args.json:
        print(json.dumps({"rows": list(results.rows.values())}))


if __name__ == "__main__":
    main()
