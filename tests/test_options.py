"""Training options are declared once (TrainConfig fields, training/config.py): the train command's
flags, their help defaults, the resume check and docs/cli.md's table all come from there; the
options of eval are declared once (EvalRequest fields in eval_request.py), and its metrics
registered once (eval_metrics.py): docs/evaluation.md's tables come from them too."""

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import typer
from conftest import train_tiny

from imagegen import cli
from imagegen.common.errors import UsageError
from imagegen.common.options import check_options, flag_of, option
from imagegen.evaluation.request import EvalRequest
from imagegen.sampling.autoencode_request import InterpolateRequest, ReconstructRequest
from imagegen.sampling.request import SampleRequest
from imagegen.training.config import RESUMABLE_CHANGES, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _train_params() -> dict[str, object]:
    command = typer.main.get_command(cli.app).commands["train"]
    return {p.name: p for p in command.params}


def test_flags_and_fields_match_one_to_one() -> None:
    params = _train_params()
    options = set(params) - set(cli.RUN_OPTIONS)
    assert options == set(FIELDS)  # every field has a flag; every other flag is a run option
    assert set(cli.RUN_OPTIONS) <= set(params)  # and the run options all exist
    for name, f in FIELDS.items():
        flag = f.metadata["flag"] or f"--{name.replace('_', '-')}"
        assert flag in params[name].opts, (name, params[name].opts)


@pytest.mark.parametrize("name", ["eval", "sample"])
def test_eval_and_sample_flags_are_their_declared_options(name: str) -> None:
    """`eval`'s and `sample`'s flags are their request's declared fields (plus the source and
    how the result is shown), each with its declared help and default: one place, as train's
    are TrainConfig's."""
    from imagegen.evaluation.request import EvalRequest
    from imagegen.sampling.request import SampleRequest

    cls = {"eval": EvalRequest, "sample": SampleRequest}[name]
    command = typer.main.get_command(cli.app).commands[name]
    params = {p.name: p for p in command.params}
    declared = {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}
    assert set(params) - {"source", "as_json", "quiet"} == set(declared)
    for key, f in declared.items():
        assert f.metadata["help"] in params[key].help, key
        flag = f.metadata["flag"] or f"--{key.replace('_', '-')}"
        assert flag in params[key].opts, (key, params[key].opts)
    assert ("[default: 10000]" if name == "eval" else "[default: 64]") in params["n"].help
    assert "--no-ema" in params["use_ema"].secondary_opts and "-n" in params["n"].opts
    if name == "eval":
        assert (
            "--dataset" in params["reference"].opts and "[default" not in params["save_stats"].help
        )
    else:
        assert "--class" in params["class_"].opts and "[default: off]" in params["trunc"].help


def test_help_shows_each_declared_default() -> None:
    params = _train_params()
    assert "[default: 50]" in params["log_every"].help
    assert "[default: 3]" in params["keep_checkpoints"].help
    assert "[default: --epochs]" in params["steps"].help  # `shown` replaces None
    assert "[default: off]" in params["flip"].help
    # where the registry sets its own: the VAE's lr and beta1, the presets' batch size
    assert "[default: the preset's, else 0.0002; vae: 0.001]" in params["lr"].help
    assert "[default: 0.5; vae: 0.9]" in params["beta1"].help
    assert "the preset's, else 64" in params["batch_size"].help
    for name, f in FIELDS.items():
        assert f.metadata["help"] in params[name].help, name


def test_resumable_changes_are_the_declared_ones(run_cli, isolated: Path) -> None:
    assert {"lr", "steps", "log_every"} <= RESUMABLE_CHANGES
    assert not {"seed", "batch_size", "beta1", "dataset"} & RESUMABLE_CHANGES
    run = isolated / "run"
    train_tiny(run_cli, run, steps=2)
    ok = run_cli("train", "dcgan", "--resume", run, "--steps", "4", "--lr", "1e-4", "--dry-run")
    assert ok.code == 0, ok
    refused = run_cli("train", "dcgan", "--resume", run, "--steps", "4", "--beta1", "0.1")
    assert refused.code != 0 and "beta1: 0.5 -> 0.1" in refused.err, refused


def test_a_new_flag_reaches_the_config(run_cli, isolated: Path) -> None:
    # --num-samples had no flag before options were declared once: only TOML reached it
    train_tiny(run_cli, isolated / "run", "--num-samples", "4", steps=1)
    from PIL import Image

    grid = Image.open(isolated / "run" / "samples" / "step-0000001.png")
    assert grid.size == (70, 70)  # 2 x 2 images of 32 px (the default 64 would be 8 x 8)


def test_docs_tables_are_made_from_the_declarations() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    import render_tables

    for name in render_tables.TABLES:
        assert (ROOT / "docs" / name).read_text() == render_tables.render(name), (
            f"docs/{name}'s table is stale: run python docs/render_tables.py"
        )


def test_a_metric_is_registered_once(run_cli, isolated: Path, weights: Path, monkeypatch) -> None:
    """A new entry in the registry is parsed, checked and computed by `eval` with no other edit."""
    from PIL import Image

    from imagegen.evaluation import registry as eval_metrics

    def mean_norm(inputs: eval_metrics.Inputs) -> dict[str, float]:
        return {"mean_norm": float(inputs.fake.norm(dim=1).mean())}

    def at_least_5(smallest: int, settings: eval_metrics.Settings) -> None:
        if smallest < 5:
            raise eval_metrics.UsageError(f"norm needs 5 images, got {smallest}")

    metric = eval_metrics.Metric("mean feature norm", "", "features", mean_norm, at_least_5)
    monkeypatch.setitem(eval_metrics.METRICS, "norm", metric)
    folder = isolated / "images"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 0, 255 - 40 * i)).save(folder / f"{i}.png")
    result = run_cli("eval", folder, "--metrics", "norm", "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["metrics"]["mean_norm"] > 0
    refused = run_cli("eval", folder, "--metrics", "norm", "--n", "4")
    assert refused.code == 2 and "norm needs 5 images, got 4" in refused.err, refused
    assert "norm" in run_cli("eval", folder, "--metrics", "nrom").err  # listed as valid


def test_an_option_is_checked_against_its_declared_interval() -> None:
    """Every command's options declare their valid values once (`valid`); check_options refuses
    a value outside, naming the flag; ends open or closed as written; None is not given."""

    @dataclasses.dataclass(frozen=True)
    class Request:
        n: int | None = option(4, "n", valid="[1, 8]")
        rate: float = option(0.5, "rate", flag="--the-rate", valid="(0, 1)")

        def __post_init__(self) -> None:
            check_options(self)

    Request(n=1), Request(n=8), Request(n=None), Request(rate=0.999)
    for bad, message in [
        ({"n": 0}, r"^--n must be in \[1, 8\], got 0$"),
        ({"n": 9}, r"^--n must be in \[1, 8\], got 9$"),
        ({"rate": 0.0}, r"^--the-rate must be in \(0, 1\), got 0.0$"),
        ({"rate": 1.0}, r"^--the-rate must be in \(0, 1\), got 1.0$"),
        ({"rate": math.nan}, r"^--the-rate must be in \(0, 1\), got nan$"),
    ]:
        with pytest.raises(UsageError, match=message):
            Request(**bad)
    with pytest.raises(ValueError, match="not an interval"):  # a typo fails where it is written
        option(1, "x", valid="[1, 8")


@pytest.mark.parametrize(
    "request_cls",
    [TrainConfig, SampleRequest, EvalRequest, ReconstructRequest, InterpolateRequest],
)
def test_every_command_checks_its_declared_ranges(request_cls: type) -> None:
    """Each command's request refuses, when built, a value outside an option's declared range."""
    ranged = [f for f in dataclasses.fields(request_cls) if f.metadata.get("valid")]
    required = {"source": Path("run")} if request_cls is EvalRequest else {}
    assert ranged, request_cls
    for f in ranged:
        with pytest.raises(UsageError, match=f"^{flag_of(f)} must be in "):
            request_cls(**{f.name: math.inf} | required)
