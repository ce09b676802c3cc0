"""Training a recipe as a user would (the command line, resumable), measuring its curve
and final figure, its speed alone; a longer budget goes on, a run that cannot is set aside."""

import json
import subprocess
import sys
import time
from pathlib import Path

from imagegen.models.registry import MODELS
from imagegen.storage import checkpoint, runs
from quality.budget import SESSION, equal_time_budget, equal_time_images, rebudget
from quality.datasets import Dataset
from quality.measure import bits_per_dim, grid, measure, reconstructions
from quality.recipes import Recipe, config_tag, recipe, retuned, speed_recipe
from quality.record import Results, alarms, elapsed, machine, set_aside, trained_in
from quality.settings import BenchError, Settings, log


def train(
    run_dir: Path, ds: Dataset, recipe: Recipe, steps: int, every: int, settings: Settings
) -> dict:
    """Train (or resume) one run as a user would, through the command line."""
    cmd = [sys.executable, "-m", "imagegen", "train", recipe.model, "--json"]
    if (run_dir / "checkpoints" / runs.LATEST).is_file():  # on, to `steps` (a longer budget)
        cmd += ["--resume", str(run_dir), "--steps", str(steps)]
    else:
        cmd += ["--dataset", ds.train, "--resolution", "32", "--batch-size", str(recipe.batch)]
        cmd += ["--steps", str(steps), "--checkpoint-every", str(every), "--keep", "1000"]
        cmd += ["--sample-every", str(every), "--log-every", "100", "--run-dir", str(run_dir)]
        cmd += ["--fid-every", "0"]  # the benchmark measures its own curve
        cmd += ["--data-root", str(settings.data_root), "--precision", settings.train_precision]
        cmd += list(recipe.args)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"training {run_dir} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_one(ds: Dataset, name: str, results: Results, settings: Settings) -> None:
    """Train one recipe on one dataset, then measure its curve and its final figure."""
    spec = recipe(name)
    images = settings.images_for(ds.key)
    if MODELS[spec.model].model_cls.can_reconstruct and settings.ae_images:
        images = settings.ae_images  # the models with an encoder at their own budget
    run_dir = settings.work / ds.key / name
    key = f"{ds.key}/{name}"
    done = results.get(f"{key}/train")
    if done is not None and (diff := retuned(done, name)):
        set_aside(results, key, run_dir, config_tag(done), f"its preset changed ({diff})")
    if ds.minutes:
        images = rebudget(results, ds, name, run_dir) or equal_time_images(ds, name, results)
        start_from_base(results, ds, name, images, run_dir)
    same_run(results, key, run_dir)
    extend(results, key, images, run_dir)
    done = results.get(f"{key}/train")
    if done is not None and "carried_from" in done:  # no run folder: its figures stand
        log(f"{key}: carried over from {done['carried_from']}, nothing to measure")
        return
    if done is None:
        _train_and_record(ds, name, images, run_dir, results, settings)
    latest = run_dir / "checkpoints" / runs.LATEST
    last = checkpoint.read_checkpoint(latest, load_tensors=False).step
    for step, path in runs.step_checkpoints(run_dir):
        if results.get(f"{key}/curve/{step}") is None and step != last:
            log(f"{key}: FID at step {step} ({settings.curve_n} generated)")
            wanted = ("fid", "kid")
            row = measure(path, ds, settings.curve_n, settings, wanted, settings.curve_precision)
            results.put(f"{key}/curve/{step}", {"step": step, "images": step * spec.batch, **row})
    final = results.get(f"{key}/final")
    if final is None or final.get("step", last) != last:
        _measure_final(ds, key, latest, last * spec.batch, results, settings)
    grid(latest, settings.docs / "quality" / f"{ds.key}-{name}.png")


def _train_and_record(
    ds: Dataset, name: str, images: int, run_dir: Path, results: Results, settings: Settings
) -> None:
    """Train the recipe's run for `images` (or go on with it) and record what trained."""
    spec, key = recipe(name), f"{ds.key}/{name}"
    steps = images // spec.batch
    log(f"{key}: training {steps} steps ({images:,} images), run folder {run_dir}")
    out = train(run_dir, ds, spec, steps, max(1, steps // settings.points), settings)
    config = json.loads((run_dir / "config.json").read_text())
    row = {
        "dataset": ds.key,
        "recipe": name,
        "steps": out["step"],
        "images": out["step"] * spec.batch,
        "train_config": config["train_config"],
        "model_config": config["model_config"],
        "trained_in": config["precision"],
        "elapsed_s": elapsed(run_dir),
        "machine": machine(),
        "alarms": alarms(run_dir),
    }
    results.put(
        f"{key}/train",
        row | ({"budget": equal_time_budget(ds, name, results)} if ds.minutes else {}),
    )


def _measure_final(
    ds: Dataset, key: str, latest: Path, images: int, results: Results, settings: Settings
) -> None:
    """The final figure of a run's last checkpoint (and the curve's last point from it)."""
    last = checkpoint.read_checkpoint(latest, load_tensors=False).step
    log(f"{key}: final FID ({settings.final_n} generated vs {settings.ref_n} training images)")
    # The curve's last point is the FID of the final figure's first curve_n images (the
    # same latents a curve_n-image evaluation would draw): no second generation.
    wanted = ("fid", "kid", "pr", "copy") if ds.whole else ("fid", "kid", "pr")
    row = measure(latest, ds, settings.final_n, settings, wanted, fid_at=(settings.curve_n,))
    model_cls = checkpoint.build_model(checkpoint.read_checkpoint(latest)).__class__
    if model_cls.can_reconstruct:
        row |= reconstructions(latest, ds, settings)
    if model_cls.has_likelihood:
        row |= bits_per_dim(latest, ds, settings)
    results.put(f"{key}/final", {"step": last, **row})
    if ds.whole:  # the same samples' FID against the whole training set
        whole = measure(latest, ds, settings.final_n, settings, ("fid", "kid"), reference=ds.whole)
        results.put(f"{key}/final-whole", {"step": last, **whole})
    fid = row.get(f"fid_at_{settings.curve_n}", row["fid"])
    results.put(f"{key}/curve/{last}", {"step": last, "images": images, "fid": fid})


def speed(
    ds: Dataset, name: str, results: Results, settings: Settings, again: bool = False
) -> None:
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
    if ds.minutes or tr is None or (here and not again) or speed_recipe(name) != name:
        return  # measured here already (one measured on another machine is measured again),
        # or its base's speed is its own
    spec = recipe(name)
    run_dir = settings.work / "speed" / ds.key / name  # scratch, the benchmark's own
    shutil.rmtree(run_dir, ignore_errors=True)
    steps, every = settings.speed_steps, max(1, settings.speed_steps // 6)
    cmd = [sys.executable, "-m", "imagegen", "train", spec.model, "--json", *spec.args]
    cmd += ["--dataset", ds.train, "--resolution", "32", "--data-root", str(settings.data_root)]
    cmd += ["--batch-size", str(tr["train_config"]["batch_size"]), "--steps", str(steps)]
    cmd += ["--precision", trained_in(tr, settings.work), "--log-every", str(every)]
    cmd += ["--sample-every", str(10 * steps), "--checkpoint-every", str(10 * steps)]
    cmd += ["--run-dir", str(run_dir)]
    log(f"{key}: speed ({steps} steps alone)")
    if subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        raise BenchError(f"the speed run {run_dir} failed")
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


def retrain_carried(ds: Dataset, name: str, results: Results, settings: Settings) -> None:
    """A run carried over from an earlier report (figures only: no folder, no curve points)
    moves aside as NAME.carried, nothing deleted, so that the recipe trains anew and its
    curve is measured under the present protocol. A run trained here is left as it is, so
    the same command resumes it."""
    key = f"{ds.key}/{name}"
    done = results.get(f"{key}/train")
    if done is not None and "carried_from" in done:
        set_aside(results, key, settings.work / ds.key / name, "carried", "asked to retrain it")


def start_from_base(results: Results, ds: Dataset, name: str, images: int, run_dir: Path) -> None:
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


def same_run(results: Results, key: str, run_dir: Path) -> None:
    """Stop where the run folder is not the run the record measured (another run moved or
    trained into its place, or the folder removed): its grid, curve points and extension would
    be another run's, under the record's figures."""
    done = results.get(f"{key}/train")
    if done is None or "model_config" not in done:  # nothing recorded, or carried over
        return
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise BenchError(
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
        raise BenchError(
            f"{key}: {run_dir} holds another run than the record {results.path} measured "
            f"({'; '.join(diffs)}): move the folder or the record's rows aside"
        )


def extend(results: Results, key: str, images: int, run_dir: Path) -> None:
    """A run trained for fewer images than asked goes on from its last checkpoint: its train
    record is dropped (its curve points stay true) and its final figure is marked with the
    step it belongs to, so that it is measured again at the new last step."""
    done = results.get(f"{key}/train")
    if done is None or done["images"] >= images:
        return
    if done.get("train_config", {}).get("lr_decay", "none") != "none":
        why = f"its lr decayed over {done['images']:,} images"
        set_aside(results, key, run_dir, f"{done['images']}-images", why)
        return
    final = results.get(f"{key}/final")
    if final is not None and "step" not in final:  # written before final rows had a step
        results.put(f"{key}/final", {**final, "step": done["steps"]})
    results.rows.pop(f"{key}/train")
