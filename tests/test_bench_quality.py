"""benchmarks/bench_quality.py (its modules under benchmarks/quality/): what it trains and
measures again, what it sets aside, its equal-time budget, and what the report's tables say,
read as tables (by column), not as rows of text."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_benchmarks import ROOT, run

sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import budget, datasets, recipes, record, report, runner, sections, tables
from quality.settings import BenchError, Settings

pytestmark = pytest.mark.integration  # the benchmark, run small


def table_rows(lines: list[str]) -> list[dict[str, str]]:
    """A Markdown table's rows as {column: cell}: its first table in `lines`."""
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = list(itertools.takewhile(lambda line: line.startswith("| "), lines[start:]))
    header = [c.strip() for c in rows[0].strip("|").split(" | ")]
    return [
        dict(zip(header, (c.strip() for c in row.strip("|").split(" | ")), strict=True))
        for row in rows[2:]
    ]


def test_bench_quality(tmp_path: Path) -> None:
    from imagegen.common.errors import UserError
    from imagegen.evaluation import inception
    from imagegen.models.registry import MODELS

    try:
        inception.find_weights()
    except UserError:
        pytest.skip("no Inception weights installed")
    dcgan = f"dcgan-{MODELS['dcgan'].default_preset}"
    recipes = f"dcgan-classic,{dcgan},vae-{MODELS['vae'].default_preset}"
    args = [
        "--datasets",
        "synthetic",
        "--recipes",
        recipes,
        "--images",
        "256",
        "--ae-images",
        "256",
    ]
    args += [
        "--points",
        "2",
        "--curve-n",
        "8",
        "--final-n",
        "16",
        "--ref-n",
        "16",
        "--recon-n",
        "16",
        "--speed-steps",
        "12",
    ]
    args += ["--work", str(tmp_path / "work"), "--docs", str(tmp_path / "docs")]
    result = run("bench_quality.py", *args)
    keys = {r["key"] for r in result["rows"]}
    assert {"synthetic/floor", f"synthetic/{dcgan}/final", "synthetic/dcgan-classic/final"} <= keys
    # Each recipe trains at its preset's batch size for the same images: steps differ.
    steps = 256 // 16  # the default preset's batch of 16 (the classic recipe's: 64)
    assert {f"synthetic/{dcgan}/curve/{steps // 2}", f"synthetic/{dcgan}/curve/{steps}"} <= keys
    trained = [r for r in result["rows"] if r["key"].endswith("/train")]
    assert len(trained) == 3 and all(r["images"] == 256 for r in trained)
    assert next(r for r in trained if r["recipe"] == dcgan)["steps"] == steps
    report = (tmp_path / "docs" / "quality.md").read_text()
    assert "default / classic FID" in report and "| synthetic blobs |" in report
    # The first screen: each model's default beside the classic recipe, then the appendix.
    glance = report.split("## Appendix: every run")[0]
    assert glance.index("## The defaults at a glance") < glance.index("### synthetic blobs")
    shown = table_rows(glance.split("### synthetic blobs")[1].splitlines())
    assert [r["recipe"] for r in shown] == [
        "dcgan classic",
        f"dcgan {MODELS['dcgan'].default_preset} (the default)",
        f"vae {MODELS['vae'].default_preset} (the default)",
        "test images (the floor)",
    ], glance
    finals = {r["key"]: r for r in result["rows"] if r["key"].endswith("/final")}
    picks = ["dcgan-classic", dcgan, f"vae-{MODELS['vae'].default_preset}"]
    for row, name in zip(shown[:3], picks, strict=True):
        assert row["FID"] == f"{finals[f'synthetic/{name}/final']['fid']:.2f}"  # the record's
        assert row["images seen"] == "equal images: 256"
    vae = next(
        r
        for r in result["rows"]
        if r["key"] == f"synthetic/vae-{MODELS['vae'].default_preset}/final"
    )
    assert vae["recon_fid"] > 0 and vae["test_bpd"] > 0 and "reconstruction FID" in report
    assert (tmp_path / "docs" / "quality" / "fid-curves.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "quality" / f"synthetic-{dcgan}.png").is_file()
    # Each recipe's speed alone, and the time axis built on it.
    speeds = {k: r for k, r in ((r["key"], r) for r in result["rows"]) if k.endswith("/speed")}
    assert len(speeds) == 3 and all(r["images_per_s"] > 0 for r in speeds.values())
    assert "## Quality per training minute" in report
    assert (tmp_path / "docs" / "quality" / "fid-curves-time.png").stat().st_size > 1000
    assert not (tmp_path / "work" / "speed" / "synthetic" / "dcgan-classic").exists()
    # Resumable: a second call finds everything done and only rewrites the report.
    again = run("bench_quality.py", *args)
    assert len(again["rows"]) == len(result["rows"])
    # A longer budget: the run goes on from its last checkpoint, its final figure is measured
    # again at the new last step, and the ratio compares only runs of equal length.
    longer = [*args]
    longer[longer.index("--images") + 1] = "512"
    longer[longer.index("--recipes") + 1] = "dcgan-classic"
    rows = {r["key"]: r for r in run("bench_quality.py", *longer)["rows"]}
    assert rows["synthetic/dcgan-classic/train"]["steps"] == 8
    assert rows["synthetic/dcgan-classic/final"]["step"] == 8
    assert "synthetic/dcgan-classic/curve/4" in rows and "synthetic/dcgan-classic/curve/6" in rows
    assert "default / classic FID" not in (tmp_path / "docs" / "quality.md").read_text()


def test_bench_quality_longer_budget_of_a_decayed_run(tmp_path: Path) -> None:
    """A run whose lr decayed to 0 is set aside (folder and rows renamed, nothing deleted) and
    trains anew; an undecayed run goes on from its checkpoint (its train row is dropped)."""
    results = record.Results(tmp_path / "results.jsonl")
    decayed, plain = "mnist/vaegan-balanced-decay", "mnist/vaegan-balanced"
    for key, decay in ((decayed, "linear"), (plain, "none")):
        (tmp_path / key / "checkpoints").mkdir(parents=True)
        results.put(f"{key}/train", {"images": 64, "steps": 1, "train_config": {"lr_decay": decay}})
        results.put(f"{key}/curve/1", {"step": 1, "fid": 9.0})
    runner.extend(results, decayed, 64, tmp_path / decayed)  # budget met: nothing moves
    assert (tmp_path / decayed).is_dir() and results.get(f"{decayed}/train") is not None
    for key in (decayed, plain):
        runner.extend(results, key, 128, tmp_path / key)
    aside = f"{decayed}.64-images"
    assert not (tmp_path / decayed).exists() and (tmp_path / aside / "checkpoints").is_dir()
    on_disk = record.Results(tmp_path / "results.jsonl").rows
    assert set(on_disk) == {
        f"{aside}/train",
        f"{aside}/curve/1",
        f"{plain}/train",
        f"{plain}/curve/1",
    }
    assert on_disk[f"{aside}/curve/1"] == {"key": f"{aside}/curve/1", "step": 1, "fid": 9.0}
    assert results.get(f"{decayed}/train") is None and results.get(f"{plain}/train") is None
    assert (tmp_path / plain).is_dir()  # goes on from its checkpoint
    # A second set-aside of the same budget would overwrite the first: refused.
    (tmp_path / decayed).mkdir()
    results.put(
        f"{decayed}/train", {"images": 64, "steps": 1, "train_config": {"lr_decay": "linear"}}
    )
    with pytest.raises(BenchError, match="exists"):
        runner.extend(results, decayed, 128, tmp_path / decayed)


def test_bench_quality_rows_carried_over_from_an_earlier_report(tmp_path: Path) -> None:
    """A row whose record holds a curve summary instead of curve points (figures carried
    over from an earlier report) is printed as it was, marked, explained, and not measured."""

    results = record.Results(tmp_path / "results.jsonl")
    src = "the report of commit abc1234"
    train = {"dataset": "mnist", "recipe": "dcgan-classic", "steps": 6000, "images": 384_000}
    train |= {"train_config": {"batch_size": 64}, "trained_in": "bf16", "elapsed_s": 1026.0}
    summary = {"best_fid": 47.92, "best_images": 192_000, "last_over_best": 1.98}
    train |= {"curve_summary": summary, "carried_from": src, "carried_plot": "quality/old.png"}
    results.put("mnist/dcgan-classic/train", train)
    final = {"step": 6000, "fid": 93.02, "kid_mean": 0.1034, "kid_std": 0.0019}
    results.put("mnist/dcgan-classic/final", final | {"precision": 0.003, "recall": 0.042})
    mnist = datasets.datasets(tmp_path, tmp_path)["mnist"]
    (row,) = table_rows(tables.table(results, [mnist], ["dcgan-classic"], tmp_path))
    assert row["recipe"] == "dcgan classic \\*"  # marked: see the note
    assert (row["FID"], row["KID × 1000"], row["recall"]) == ("93.02", "103.4 ± 1.9", "0.042")
    assert (row["best curve FID (at images)"], row["last / best"]) == ("47.92 (192,000)", "1.98")
    assert (row["train time"], row["images seen (batch)"]) == ("17.1 min", "384,000 (64)")
    note = " ".join(tables.carried_note(results))
    assert src in note and "(quality/old.png)" in note
    # There is no run folder to measure: run_one leaves the row as it is.
    settings = Settings(images=384_000, ae_images=0, points=4, work=tmp_path)
    runner.run_one(mnist, "dcgan-classic", results, settings)
    assert results.get("mnist/dcgan-classic/final")["fid"] == 93.02
    assert not (tmp_path / "mnist").exists()


def test_bench_quality_sets_aside_a_run_whose_preset_was_retuned(
    tmp_path: Path, monkeypatch
) -> None:
    """Figures measured under a preset's old options are not the recipe's any more: the run
    and its rows move aside (nothing deleted) and the recipe trains anew. A record that
    lacks an option added since (its default) still stands."""

    from imagegen.models.registry import MODELS

    target = MODELS["dcgan"].presets["adaptive"].model["augment_target"]
    model = {"augment": "translation,cutout", "augment_target": target / 2}
    train = {"batch_size": 16, "lr": 4e-4}
    done = {"images": 64, "steps": 4, "model_config": model, "train_config": train}
    assert recipes.retuned(done, "dcgan-adaptive") == f"augment_target: {target / 2} -> {target}"
    assert (
        recipes.retuned(
            done | {"model_config": model | {"augment_target": target}}, "dcgan-adaptive"
        )
        == ""
    )
    older = {"images": 64, "model_config": {"loss": "bce"}, "train_config": train}
    assert recipes.retuned(older, "dcgan-small-batch") == ""  # no augment_target yet: its default
    assert recipes.retuned(older | {"train_config": {"lr": 2e-4}}, "dcgan-small-batch") == (
        "batch_size: 64 -> 16, lr: 0.0002 -> 0.0004"
    )
    results = record.Results(tmp_path / "results.jsonl")
    key = "synthetic/dcgan-adaptive"
    (tmp_path / key / "checkpoints").mkdir(parents=True)
    results.put(f"{key}/train", done)
    results.put(f"{key}/final", {"step": 4, "fid": 9.0})

    def trains_anew(*args: object) -> dict:
        raise RuntimeError("trains anew")

    monkeypatch.setattr(runner, "train", trains_anew)
    settings = Settings(images=64, ae_images=0, points=1, work=tmp_path)
    with pytest.raises(RuntimeError, match="trains anew"):
        runner.run_one(
            datasets.datasets(tmp_path, tmp_path)["synthetic"], "dcgan-adaptive", results, settings
        )
    aside = f"{key}.{recipes.config_tag(done)}"
    assert (tmp_path / aside / "checkpoints").is_dir() and not (tmp_path / key).exists()
    assert set(record.Results(tmp_path / "results.jsonl").rows) == {
        f"{aside}/train",
        f"{aside}/final",
    }


def test_bench_quality_takes_the_alarms_of_every_session_from_the_log(tmp_path: Path) -> None:
    """A resumed run's JSON result holds only its last session's alarms: the log has them all
    (a line from before alarms had their own field gives its warning as the message)."""
    fid = {"kind": "fid-rises", "step": 300, "message": "FID rises", "advice": "stop"}
    lines = [
        json.dumps({"step": 100, "d_loss": 0.5}),
        json.dumps({"step": 200, "warnings": ["D wins. Try this"]}),
        '{"step": 250, "d_lo',  # torn by a kill
        json.dumps({"step": 300, "warnings": ["FID rises. stop"], "alarms": [fid]}),
    ]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    assert record.alarms(tmp_path) == [{"step": 200, "message": "D wins. Try this"}, fid]


def test_bench_quality_stops_where_the_folder_is_another_run(tmp_path: Path) -> None:
    """A run folder that is not the run the record measured (another run trained or moved into
    its place, or the folder gone) stops the benchmark before it draws that run's grid or
    extends it under the record's figures; carried-over rows have no folder to check."""
    results = record.Results(tmp_path / "results.jsonl")
    key = "mnist/dcgan-adaptive"
    model = {"augment": "translation,cutout", "augment_target": 0.9}
    train = {"batch_size": 16, "lr": 4e-4}
    results.put(f"{key}/train", {"images": 64, "model_config": model, "train_config": train})
    run_dir = tmp_path / key
    with pytest.raises(BenchError, match="holds no run"):
        runner.same_run(results, key, run_dir)
    run_dir.mkdir(parents=True)
    config = {"model_config": model, "train_config": train, "run_dir": "/elsewhere"}
    (run_dir / "config.json").write_text(json.dumps(config))
    runner.same_run(results, key, run_dir)  # the same run, wherever it was trained
    config["model_config"] = model | {"augment_target": 0.6}
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(BenchError, match=r"augment_target: 0\.9 in the record, 0\.6 in the"):
        runner.same_run(results, key, run_dir)
    carried = {"images": 64, "carried_from": "the report of commit abc1234"}
    results.put("mnist/dcgan-classic/train", carried)
    runner.same_run(results, "mnist/dcgan-classic", tmp_path / "absent")


def test_bench_quality_time_table_and_small_data_section(tmp_path: Path) -> None:
    """Minutes come from images / the speed measured alone; a recipe reaches the classic
    recipe's last curve FID at its first curve point at or below it. The small-data section
    puts both references and the copying figures side by side."""

    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["cifar10-jpeg-1k"]
    curves = {
        "dcgan-classic": [(100, 60.0), (200, 50.0)],
        recipes.default_recipe("dcgan"): [(60, 55.0), (120, 40.0)],  # batch 16
    }
    for name, points in curves.items():
        batch = 64 if name == "dcgan-classic" else 16
        for step, fid in points:
            row = {"step": step, "images": step * batch, "fid": fid}
            results.put(f"{ds.key}/{name}/curve/{step}", row)
        results.put(f"{ds.key}/{name}/train", {"images": 12_800})  # equal budgets
        results.put(f"{ds.key}/{name}/speed", {"images_per_s": 32.0 if batch == 64 else 16.0})
    fast = "Intel(R) Xeon(R) Processor, 2 cores, 2 threads, torch 2.14.1, Python 3.11.7"
    results.put(f"{ds.key}/dcgan-classic/speed", {"images_per_s": 32.0, "machine": fast})
    timed = {r["recipe"]: r for r in table_rows(sections.time_table(results, [ds], list(curves)))}
    classic, default = (
        timed["dcgan classic"],
        timed[recipes.recipe(recipes.default_recipe("dcgan")).label],
    )
    # classic: 12,800 images at 32/s = 6.7 min; the default reaches 50.0 at 1,920 images / 16
    assert classic["minutes for its run"] == "6.7 min" and classic["images/s alone"] == "32"
    assert classic["reached it by"] == "6.7 min (12,800 images)"
    assert classic["speed measured on"] == "Intel(R) Xeon(R) Processor"
    assert default["minutes for its run"] == "2.0 min" and default["its last curve FID"] == "40.00"
    assert default["reached it by"] == "2.0 min (1,920 images)"
    assert default["classic's last curve FID"] == "50.00" and default["speed measured on"] == "–"
    for name, fid in (("dcgan-classic", 50.0), (recipes.default_recipe("dcgan"), 30.0)):
        copy = {"nn_ratio": 1.1, "nearer_than_nn": 0.2, "copies": 0.0}
        results.put(f"{ds.key}/{name}/final", {"fid": fid, "precision": 0.5, "recall": 0.4, **copy})
        results.put(f"{ds.key}/{name}/final-whole", {"fid": fid + 10})
    settings = Settings(ref_n=10_000)
    section = "\n".join(sections.small_data(results, [ds], list(curves), settings))
    assert "against the subset 30.00 / 50.00 = **0.60**" in section
    assert "against the whole set 40.00 / 60.00 = **0.67**" in section


def test_bench_quality_candidate_recipes(tmp_path: Path) -> None:
    """NAME+key=value is NAME's preset with a model option changed (its record is checked
    against that, not against the preset alone); the report lists it, not runs set aside."""
    name = "dcgan-adaptive-r1+augment_target=0.6"
    r = recipes.recipe(f"{name}@bf16")
    assert r.args[-4:] == ("--set", "augment_target=0.6", "--precision", "bf16")
    assert r.label.endswith("augment_target=0.6, bf16") and r.batch == 16
    model = {"augment": "translation,cutout", "augment_target": 0.6, "r1_gamma": 0.01}
    done = {"model_config": model, "train_config": {"batch_size": 16, "lr": 4e-4}}
    assert recipes.retuned(done, name) == ""
    assert recipes.retuned(done, "dcgan-adaptive-r1") == "augment_target: 0.6 -> 0.9"
    with pytest.raises(BenchError, match="unknown recipe"):
        recipes.recipe("dcgan-adaptive-r1+augment_target")
    results = record.Results(tmp_path / "results.jsonl")
    for key in (name, "dcgan-classic", "dcgan-classic.config-0123abcd", "dcgan-classic.9-images"):
        results.put(f"mnist/{key}/train", {"images": 1})
    dss, names = report.recorded(results, datasets.datasets(tmp_path, tmp_path))
    assert [d.key for d in dss] == ["mnist"] and names == ["dcgan-classic", name]


def test_bench_quality_conditional_recipes_and_their_section(tmp_path: Path) -> None:
    """NAME+conditional trains NAME with --conditional; its record's num_classes is the data's,
    not a retuning; the report sets it beside NAME at equal images, with the intra-class FID."""
    name = "dcgan-adaptive-r1+conditional"
    r = recipes.recipe(name)
    assert r.args[-1] == "--conditional" and r.label.endswith(", conditional")
    model = {"augment": "translation,cutout", "augment_target": 0.9, "r1_gamma": 0.01}
    ramped = {"num_classes": 10, "cond_start": 2000, "cond_end": 8000}  # by the run's length
    done = {"model_config": model | ramped, "train_config": {"batch_size": 16}}
    assert recipes.retuned(done | {"train_config": {"batch_size": 16, "lr": 4e-4}}, name) == ""
    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["mnist"]
    for key, fid in ((name, 8.0), ("dcgan-adaptive-r1", 10.0)):
        results.put(f"mnist/{key}/train", {"images": 384_000})
        results.put(f"mnist/{key}/final", {"fid": fid, "precision": 0.3, "recall": 0.7})
    per_class = {"intra_fid/0": 20.0, "intra_fid/1": 12.0, "intra_fid/7": 31.5}
    pr = {"precision": 0.25, "recall": 0.45}
    results.put(f"mnist/{name}/final", {"fid": 8.0, "intra_fid": 21.17, **per_class, **pr})
    section = "\n".join(sections.conditional(results, [ds], ["dcgan-adaptive-r1", name]))
    (row,) = table_rows(section.splitlines())
    assert (row["FID unconditional"], row["FID conditional"], row["ratio"]) == (
        "10.00",
        "8.00",
        "**0.80**",
    )
    assert (row["precision uncond."], row["precision cond."]) == ("0.300", "0.250")
    assert (row["recall uncond."], row["recall cond."]) == ("0.700", "0.450")
    assert row["intra-class FID (mean)"] == "21.17" and row["best, worst class"] == "1 12.0, 7 31.5"
    assert f"quality/mnist-{name}.png" in section
    # A conditional recipe with options of conditional runs alone (the ramp) is compared with
    # the recipe without them, and its row names them.
    ramped = "dcgan-adaptive-r1+cond_start=20+cond_end=80+conditional"
    assert recipes.unconditional(ramped) == "dcgan-adaptive-r1"
    results.put(f"mnist/{ramped}/train", {"images": 384_000})
    results.put(f"mnist/{ramped}/final", {"fid": 5.0, "intra_fid": 9.0, **per_class, **pr})
    section = "\n".join(sections.conditional(results, [ds], ["dcgan-adaptive-r1", ramped]))
    (row,) = table_rows(section.splitlines())
    assert row["recipe"].endswith("cond_start=20, cond_end=80") and row["ratio"] == "**0.50**"


def test_bench_quality_recipes_whose_values_hold_commas() -> None:
    got = recipes.split_recipes(
        "dcgan-classic,dcgan-adaptive-r1+augment=color,translation@bf16,vae-sigma"
    )
    assert got == ["dcgan-classic", "dcgan-adaptive-r1+augment=color,translation@bf16", "vae-sigma"]
    assert recipes.split_recipes("dcgan-classic,nonsense") == ["dcgan-classic,nonsense"]
    with pytest.raises(BenchError, match="unknown recipe"):
        recipes.recipe("dcgan-classic,nonsense")


def test_bench_quality_names_each_runs_machine_and_measures_speed_again_elsewhere(
    tmp_path: Path, monkeypatch
) -> None:
    """The report names the machine most runs trained on and lists the runs of any other; a
    speed measured on another machine is measured again (one measured here is kept)."""
    from types import SimpleNamespace

    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["cifar10-jpeg-1k"]
    old = "AMD EPYC, 2 cores, 2 threads, torch 2.14.1, Python 3.11.7"
    train = {"dataset": ds.key, "images": 64, "train_config": {"batch_size": 16}}
    for name, where in (("dcgan-classic", old), ("dcgan-adaptive", old)):
        results.put(f"{ds.key}/{name}/train", train | {"recipe": name, "machine": where})
    results.put(f"{ds.key}/dcgan-adaptive-r1/train", train | {"recipe": "dcgan-adaptive-r1"})
    names = ["dcgan-classic", "dcgan-adaptive", "dcgan-adaptive-r1"]
    assert tables.machines(results, [ds], names) == (
        f"Machine: {old} (the runs not named below). not recorded: "
        "CIFAR-10-JPEG, 1,000 images (32 px) / dcgan adaptive-r1."
    )
    assert tables.machines(results, [ds], names[:2]) == f"Machine: {old}."
    calls, real_run = [], subprocess.run

    def fake_run(cmd, **kwargs):  # a speed run that logs 120 images/s
        if "imagegen" not in cmd:  # platform's own uname call
            return real_run(cmd, **kwargs)
        calls.append(cmd)
        run_dir = Path(cmd[cmd.index("--run-dir") + 1])
        run_dir.mkdir(parents=True)
        lines = [{"images_per_s": v} for v in (5.0, 120.0, 120.0, 130.0)]
        (run_dir / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    settings = Settings(work=tmp_path, speed_steps=12, data_root=tmp_path)
    here = record.machine()
    results.put(f"{ds.key}/dcgan-classic/speed", {"images_per_s": 99.0, "machine": here})
    results.put(f"{ds.key}/dcgan-adaptive/speed", {"images_per_s": 99.0, "machine": old})
    for name in names[:2]:
        runner.speed(ds, name, results, settings)
    assert len(calls) == 1 and "adaptive" in calls[0][calls[0].index("--preset") + 1]
    assert results.get(f"{ds.key}/dcgan-classic/speed")["images_per_s"] == 99.0
    again = results.get(f"{ds.key}/dcgan-adaptive/speed")
    assert again["images_per_s"] == 120.0 and again["machine"] == here
    # --speed-only measures every speed again, side by side (a machine drifts over days).
    runner.speed(ds, "dcgan-classic", results, settings, again=True)
    assert len(calls) == 2 and results.get(f"{ds.key}/dcgan-classic/speed")["images_per_s"] == 120


def test_bench_quality_retrains_a_carried_run_and_keeps_its_rows(tmp_path: Path) -> None:
    """--retrain-carried moves a run carried over from an earlier report aside (NAME.carried,
    out of the report's recipes and its carried note) and leaves a run trained here alone, so
    that the same command resumes it."""

    results = record.Results(tmp_path / "results.jsonl")
    known = datasets.datasets(tmp_path, tmp_path)
    src = {"carried_from": "the report of commit abc1234", "carried_plot": "quality/old.png"}
    results.put("mnist/dcgan-classic/train", {"images": 64, **src})
    results.put("mnist/dcgan-classic/final", {"fid": 93.0, "carried_from": src["carried_from"]})
    results.put("mnist/dcgan-adaptive/train", {"images": 64, "model_config": {}})
    settings = Settings(work=tmp_path)
    assert tables.carried_note(results)
    for name in ("dcgan-classic", "dcgan-adaptive"):
        runner.retrain_carried(known["mnist"], name, results, settings)
    on_disk = record.Results(tmp_path / "results.jsonl").rows
    assert set(on_disk) == {
        "mnist/dcgan-classic.carried/train",
        "mnist/dcgan-classic.carried/final",
        "mnist/dcgan-adaptive/train",
    }
    assert report.recorded(results, known)[1] == ["dcgan-adaptive"]
    assert tables.carried_note(results) == []


def test_bench_quality_precision_ratio_only_where_the_precisions_differ(tmp_path: Path) -> None:
    """The bf16 / fp32 line of the ratios names the precisions the two runs trained in, and is
    left out where both trained in the same one (the classic recipe retrained where `auto`
    chose bf16)."""
    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["mnist"]
    for name, fid, precision in (
        ("dcgan-classic@bf16", 60.0, "bf16"),
        ("dcgan-classic", 50.0, "fp32"),
    ):
        results.put(f"{ds.key}/{name}/train", {"images": 64, "trained_in": precision})
        results.put(f"{ds.key}/{name}/final", {"fid": fid})
    line = "DCGAN classic recipe trained in bf16 / in fp32 = 60.00 / 50.00 = **1.20**"
    assert any(line in x for x in tables.ratios(results, [ds]))
    results.put(f"{ds.key}/dcgan-classic/train", {"images": 64, "trained_in": "bf16"})
    assert not any("classic recipe trained in" in x for x in tables.ratios(results, [ds]))


def test_bench_quality_candidates_change_training_options_too() -> None:
    """NAME+batch_size=64+lr=2e-4: training options of RECIPE_OPTIONS go to their flags (the
    batch as the recipe's batch), and the record is checked against them."""
    name = "dcgan-adaptive-lazy-r1+batch_size=64+lr=2e-4"
    r = recipes.recipe(name)
    assert r.batch == 64 and r.args[-2:] == ("--lr", "2e-4") and "--batch-size" not in r.args
    assert r.label.endswith("batch_size=64, lr=2e-4")
    model = {"augment": "translation,cutout", "augment_target": 0.9, "r1_gamma": 0.01}
    done = {"model_config": model | {"r1_every": 16}, "train_config": {"batch_size": 64}}
    assert recipes.retuned(done, name) == ""
    assert (
        recipes.retuned(done, "dcgan-adaptive-lazy-r1")
        == "batch_size: 64 -> 16, lr: 0.0002 -> 0.0004"
    )
    assert recipes.recipe("dcgan-classic+flip=false").args[-1] == "--no-flip"
    # A second seed of a recipe is a run of its own, checked against its record too.
    assert recipes.recipe("dcgan-classic+seed=1").args[-2:] == ("--seed", "1")
    assert recipes.retuned(done, f"{name}+seed=1") == "seed: 0 -> 1"


def test_bench_quality_knows_a_conditional_dcgan_ramps_by_default() -> None:
    """A conditional DCGAN that sets no cond_ option ramps its conditioning in over its run:
    a record of one trained conditional from the start is retuned; one ramped, or one that
    asks for cond_end=0, is not."""
    model = {"augment": "translation,cutout", "augment_target": 0.9, "r1_gamma": 0.01}
    model |= {"r1_every": 16, "num_classes": 10}
    done = {"model_config": model, "train_config": {"batch_size": 16, "lr": 4e-4}}
    name = "dcgan-adaptive-lazy-r1+conditional"
    assert (
        recipes.retuned(done, name)
        == "cond_end: 0 -> ramped by the run's length (conditional_ramp)"
    )
    ramped = done | {"model_config": model | {"cond_start": 2000, "cond_end": 8000}}
    assert recipes.retuned(ramped, name) == ""
    assert recipes.retuned(done, "dcgan-adaptive-lazy-r1+cond_end=0+conditional") == ""
    assert recipes.retuned(done, "dcgan-adaptive-lazy-r1") == ""
    assert recipes.unconditional("dcgan-adaptive-lazy-r1+cond_end=0+conditional") == (
        "dcgan-adaptive-lazy-r1"
    )


def test_bench_quality_equal_time_runs(tmp_path: Path) -> None:
    """KEY-30min trains each recipe for 30 minutes at its speed alone on KEY (recorded as the
    run's budget), measures no floor and no speed of its own, and the report sets the default
    beside the classic recipe at equal time."""
    from imagegen.common.errors import UserError
    from imagegen.evaluation import inception

    try:
        inception.find_weights()
    except UserError:
        pytest.skip("no Inception weights installed")
    dcgan = recipes.default_recipe("dcgan")
    results = record.Results(tmp_path / "docs" / "quality" / "results.jsonl")
    (tmp_path / "docs" / "quality").mkdir(parents=True)
    # 30 min at 0.2 images/s: 360 images, 5 steps of 64; at 0.1: 180 images, 11 steps of 16
    results.put("synthetic/dcgan-classic/speed", {"images_per_s": 0.2, "machine": "m"})
    results.put(f"synthetic/{dcgan}/speed", {"images_per_s": 0.1, "machine": "m"})
    args = ["--datasets", "synthetic-30min", "--recipes", f"dcgan-classic,{dcgan}"]
    args += ["--points", "1", "--curve-n", "8", "--final-n", "16", "--ref-n", "16"]
    args += ["--work", str(tmp_path / "work"), "--docs", str(tmp_path / "docs")]
    rows = {r["key"]: r for r in run("bench_quality.py", *args)["rows"]}
    classic, default = (
        rows["synthetic-30min/dcgan-classic/train"],
        rows[f"synthetic-30min/{dcgan}/train"],
    )
    assert (classic["images"], classic["steps"]) == (320, 5)
    assert (default["images"], default["steps"]) == (176, 11)
    assert classic["budget"] == {"minutes": 30, "images_per_s": 0.2, "speed_on": "m"}
    # A speed measured again later moves neither the run nor its minutes.
    results = record.Results(tmp_path / "docs" / "quality" / "results.jsonl")
    results.put("synthetic/dcgan-classic/speed", {"images_per_s": 0.4, "machine": "m"})
    ds = datasets.datasets(tmp_path, tmp_path)["synthetic-30min"]
    assert budget.equal_time_images(ds, "dcgan-classic", results) == 320
    assert budget.minutes(results, ds, "dcgan-classic", 320) == pytest.approx(320 / 0.2 / 60)
    assert not any(
        k.startswith("synthetic-30min/floor") or k.endswith("30min/dcgan-classic/speed")
        for k in rows
    )
    report = (tmp_path / "docs" / "quality.md").read_text()
    fa, fb = (
        rows[f"synthetic-30min/{dcgan}/final"]["fid"],
        rows["synthetic-30min/dcgan-classic/final"]["fid"],
    )
    assert (
        f"- synthetic blobs, 30 min of training: DCGAN default / classic FID at equal training "
        f"time (30 min at each recipe's speed alone: 176 and 320 images) = {fa:.2f} / {fb:.2f}"
    ) in report
    # Without the base's speed, an equal-time run says what to run first.
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_quality.py"),
            *args[:2],
            "--recipes",
            "dcgan-small-batch",
            *args[4:],
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"IMAGEGEN_DATA": ""},
        timeout=600,
    )
    assert (
        out.returncode != 0
        and "run --datasets synthetic --recipes dcgan-small-batch first" in out.stderr
    )


def test_bench_quality_equal_time_run_goes_on_from_a_copy_of_its_base(tmp_path: Path) -> None:
    """An equal-time run begins as a copy of its base's shorter run (resume is exact), never
    of a longer one, of one whose lr decays, or over a folder already there."""
    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["mnist-30min"]
    base = tmp_path / "mnist" / "dcgan-classic"
    (base / "checkpoints").mkdir(parents=True)
    (base / "checkpoints" / "latest.safetensors").write_bytes(b"weights")
    row = {"images": 640, "model_config": {}, "train_config": {"lr_decay": "none"}}
    results.put("mnist/dcgan-classic/train", row)
    run_dir = tmp_path / ds.key / "dcgan-classic"
    runner.start_from_base(results, ds, "dcgan-classic", 320, run_dir)  # the base is longer
    assert not run_dir.exists()
    results.put("mnist/dcgan-classic/train", row | {"train_config": {"lr_decay": "linear"}})
    runner.start_from_base(results, ds, "dcgan-classic", 1280, run_dir)  # its lr decayed
    assert not run_dir.exists()
    results.put("mnist/dcgan-classic/train", row)
    runner.start_from_base(results, ds, "dcgan-classic", 1280, run_dir)
    assert (run_dir / "checkpoints" / "latest.safetensors").read_bytes() == b"weights"
    assert not run_dir.with_name("dcgan-classic.part").exists()
    (base / "checkpoints" / "latest.safetensors").write_bytes(b"other")
    runner.start_from_base(results, ds, "dcgan-classic", 1280, run_dir)  # started: left alone
    assert (run_dir / "checkpoints" / "latest.safetensors").read_bytes() == b"weights"


def test_bench_quality_equal_time_budget_keeps_the_clocks_minutes(tmp_path: Path) -> None:
    """A recipe budgeted after the clock recipe (on a day the machine runs faster) trains the
    clock's budget speed x its speed / the clock's, both measured side by side; a speed not
    measured beside the clock's stops the script."""
    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["mnist-30min"]
    clock = {"minutes": 30, "images_per_s": 2.0, "speed_on": "m"}
    results.put(f"mnist-30min/{budget.CLOCK}/train", {"images": 320, "budget": clock})
    results.put("mnist/dcgan-small-batch/speed", {"images_per_s": 1.5, "machine": "m"})
    results.put(f"mnist/{budget.CLOCK}/speed", {"images_per_s": 2.0})  # the speed that set it
    assert budget.equal_time_budget(ds, "dcgan-small-batch", results)["images_per_s"] == 1.5
    results.put(f"mnist/{budget.CLOCK}/speed", {"images_per_s": 3.0})  # measured again since
    with pytest.raises(
        BenchError, match=f"--speed-only --datasets mnist --recipes {budget.CLOCK},"
    ):
        budget.equal_time_budget(ds, "dcgan-small-batch", results)
    # Side by side, the machine now 1.5x faster: 1.5 counts as 1.0 on the clock's day.
    results.put(f"mnist/{budget.CLOCK}/speed", {"images_per_s": 3.0, "side_by_side": "s"})
    results.put("mnist/dcgan-small-batch/speed", {"images_per_s": 1.5, "side_by_side": "s"})
    got = budget.equal_time_budget(ds, "dcgan-small-batch", results)
    assert got["images_per_s"] == pytest.approx(1.0) and got["drift"] == pytest.approx(
        2 / 3, abs=1e-4
    )
    assert got["measured_images_per_s"] == 1.5
    assert (
        budget.equal_time_images(ds, "dcgan-small-batch", results) == 1792
    )  # 1,800 in batches of 16
    # The clock's own budget is its speed, whatever the day.
    results.put(f"mnist-30min/{budget.CLOCK}/train", {"images": 320})
    assert budget.equal_time_budget(ds, budget.CLOCK, results)["images_per_s"] == 3.0


def test_bench_quality_equal_time_budget_set_again_by_a_side_by_side_speed(
    tmp_path: Path,
) -> None:
    """A recipe whose speed, measured again beside the clock's, moves its equal-time budget by
    more than REBUDGET trains to the new budget: a longer one goes on (its train record
    dropped by _extend), a shorter one is set aside to train anew; within REBUDGET, without a
    side-by-side speed, or for the clock itself, the budget stands."""
    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["mnist-30min"]
    name, key = "dcgan-small-batch", "mnist-30min/dcgan-small-batch"
    run_dir = tmp_path / ds.key / name
    run_dir.mkdir(parents=True)
    clock = {"minutes": 30, "images_per_s": 2.0, "speed_on": "m"}
    results.put(f"mnist-30min/{budget.CLOCK}/train", {"images": 3584, "budget": clock})
    results.put(f"mnist/{budget.CLOCK}/speed", {"images_per_s": 3.0, "side_by_side": "s"})
    results.put(f"mnist/{name}/speed", {"images_per_s": 1.5, "side_by_side": "s"})
    # Today's side-by-side speeds give 1.0 images/s on the clock's day: 1,792 images.
    old = {"minutes": 30, "images_per_s": 0.8, "speed_on": "m"}
    results.put(f"{key}/train", {"images": 1440, "steps": 90, "budget": old})
    assert budget.rebudget(results, ds, name, run_dir) == 1792
    runner.extend(results, key, 1792, run_dir)
    assert results.get(f"{key}/train") is None  # trained on to the new budget
    for images in (1760, 1824):  # within 5%: the budget stands
        results.put(f"{key}/train", {"images": images, "steps": images // 16, "budget": old})
        assert budget.rebudget(results, ds, name, run_dir) is None
        assert results.get(f"{key}/train")["images"] == images
    results.put(f"mnist/{name}/speed", {"images_per_s": 1.5, "side_by_side": "t"})
    results.put(f"{key}/train", {"images": 1440, "steps": 90, "budget": old})
    assert budget.rebudget(results, ds, name, run_dir) is None  # not measured beside the clock
    assert budget.rebudget(results, ds, budget.CLOCK, run_dir) is None  # the clock is the clock
    # A slower step: fewer images than it trained; the run is set aside and trains anew.
    results.put(f"mnist/{name}/speed", {"images_per_s": 1.5, "side_by_side": "s"})
    results.put(f"{key}/train", {"images": 2400, "steps": 150, "budget": old})
    assert budget.rebudget(results, ds, name, run_dir) is None
    assert results.get(f"{key}/train") is None and not run_dir.exists()
    assert results.get(f"{key}.2400-images/train")["images"] == 2400
    assert run_dir.with_name(f"{name}.2400-images").is_dir()
    assert budget.equal_time_images(ds, name, results) == 1792


def test_bench_quality_a_schedule_candidate_trains_at_its_base_recipes_speed(
    tmp_path: Path,
) -> None:
    """A candidate that changes only the lr, its schedule, Adam's betas or the seed does the
    same work a step: its speed is its base's (not measured again), so its equal-time run
    trains the base's images; one that changes the model or the batch has its own."""
    assert recipes.speed_recipe("dcgan-classic+seed=1") == "dcgan-classic"
    tail = "dcgan-adaptive-lazy-r1+lr_decay=linear+lr_decay_start=0.75"
    assert recipes.speed_recipe(tail) == "dcgan-adaptive-lazy-r1"
    assert recipes.speed_recipe("dcgan-classic+lr=1e-3@bf16") == "dcgan-classic@bf16"
    for own in ("dcgan-classic+batch_size=16", "dcgan-classic+g_width=128", "dcgan-classic"):
        assert recipes.speed_recipe(own) == own
    results = record.Results(tmp_path / "results.jsonl")
    ds = datasets.datasets(tmp_path, tmp_path)["mnist-30min"]
    results.put("mnist/dcgan-adaptive-lazy-r1/speed", {"images_per_s": 2.0, "machine": "m"})
    assert budget.equal_time_images(ds, tail, results) == 3600
    # The base's equal-time run has its budget (another day's, drift and all): so has the tail.
    based = {"minutes": 30, "images_per_s": 1.0, "drift": 0.5, "speed_on": "m"}
    results.put("mnist-30min/dcgan-adaptive-lazy-r1/train", {"images": 1792, "budget": based})
    assert budget.equal_time_images(ds, tail, results) == 1792
    with pytest.raises(BenchError, match="needs the recipe's speed"):
        budget.equal_time_images(ds, "dcgan-adaptive-lazy-r1+g_width=128", results)
    settings = Settings(work=tmp_path, data_root=tmp_path)
    results.put(f"mnist/{tail}/train", {"images": 64, "train_config": {"batch_size": 16}})
    runner.speed(datasets.datasets(tmp_path, tmp_path)["mnist"], tail, results, settings)
    assert results.get(f"mnist/{tail}/speed") is None  # nothing trained to measure it
