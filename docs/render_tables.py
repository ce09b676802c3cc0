"""Write the tables of docs/*.md that are made from the code, between their markers.

- docs/cli.md, the options of `imagegen train`, `sample`, `encode`, `decode`, `interpolate`,
  `reconstruct` and `convert`: from each command, whose options are derived from their
  declarations (TrainConfig, SampleRequest, the autoencoder requests, ConvertRequest);
- docs/models.md, every model's presets: from the registry (imagegen/models/registry.py);
- docs/evaluation.md, the options of `imagegen eval`: from the command, whose options are
  derived from their declarations (EvalRequest fields, imagegen/evaluation/request.py), and its
  metrics: from their registry (imagegen/evaluation/registry.py).

tests/test_options.py checks that the docs hold the tables this script would write.

    python docs/render_tables.py
"""

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def options_table(name: str) -> str:
    """The Markdown table of a command's arguments and options."""
    import typer

    from imagegen.cli import app

    command = typer.main.get_command(app).commands[name]
    if hasattr(command, "refresh_help"):  # help that lists the model registry
        command.refresh_help()
    rows = ["| option | meaning | default |", "| --- | --- | --- |"]
    for param in command.params:
        if param.param_type_name == "argument":
            names, default = f"`{param.name.upper()}`", "required"
        else:
            names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            default = "" if param.default in (None, False, [], ()) else str(param.default)
        text = (param.help or "").strip()
        shown = re.search(r"\s*\[default: (.*)\]\.?$", text)
        if shown:
            text, default = text[: shown.start()], shown.group(1)
        rows.append(f"| {names} | {text.replace('|', '/')} | {default} |")
    return "\n".join(rows)


def metrics_table() -> str:
    """The Markdown table of the eval command's metrics."""
    from imagegen.evaluation.registry import METRICS

    rows = ["| name | what | notes |", "| --- | --- | --- |"]
    for name, m in METRICS.items():
        notes = "; ".join(x for x in ("computed by default" if m.default else "", m.notes) if x)
        rows.append(f"| `{name}` | {m.summary} | {notes} |")
    return "\n".join(rows)


def presets_table() -> str:
    """Every model's presets: what each is and the options it sets (the registry's)."""
    from imagegen.models.registry import MODELS

    rows = ["| model | preset | what | options |", "| --- | --- | --- | --- |"]
    for spec in MODELS.values():
        for name, p in spec.presets.items():
            options = ", ".join(f"`{k}={v}`" for k, v in {**p.model, **p.train}.items())
            default = " (default)" if name == spec.default_preset else ""
            rows.append(
                f"| `{spec.name}` | `{name}`{default} | {p.summary} | "
                f"{options or 'the config defaults'} |"
            )
    return "\n".join(rows)


# file -> each table's name in its markers, and the function that makes it
TABLES: dict[str, dict[str, Callable[[], str]]] = {
    "cli.md": {
        "train options": lambda: options_table("train"),
        "sample options": lambda: options_table("sample"),
        **{
            f"{name} options": (lambda name=name: options_table(name))
            for name in ("encode", "decode", "interpolate", "reconstruct", "convert")
        },
    },
    "models.md": {"presets": presets_table},
    "evaluation.md": {
        "eval options": lambda: options_table("eval"),
        "metrics": metrics_table,
    },
}


def render(name: str) -> str:
    """docs/NAME's text with its tables made anew between their markers."""
    text = (ROOT / "docs" / name).read_text()
    for what, make in TABLES[name].items():
        begin, end = f"<!-- {what}: made by docs/render_tables.py -->", f"<!-- end of {what} -->"
        start, stop = text.index(begin) + len(begin), text.index(end)
        text = text[:start] + "\n" + make() + "\n" + text[stop:]
    return text


if __name__ == "__main__":
    for name in TABLES:
        (ROOT / "docs" / name).write_text(render(name))
        print(f"docs/{name}: {', '.join(TABLES[name])} written", file=sys.stderr)
