"""The console examples in README.md and docs/*.md are run, and their output must keep its
shape: the same lines, with numbers, paths and timings masked.

Each ```console block's `$ imagegen ...` commands run in order in one folder per file, through
the CLI, with two changes for speed that leave the output's shape alone: `train` gets tiny
network widths, and `eval` at most 64 images. A block preceded by `<!-- not run: REASON -->`
is skipped (commands that need files a test cannot make, or other programs). In expected
output, a line `...` stands for any number of lines.
"""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from imagegen import cli
from imagegen.models.registry import MODELS

pytestmark = pytest.mark.integration  # every console example of the docs, run

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHRINK = {"g_width": 8, "d_width": 8, "width": 8, "latent_dim": 8}
IGNORED = (  # lines that depend on the machine's state, not on the command
    re.compile(r"^warning: FID from \d+ images"),
    re.compile(r"^decoding [\d,]+ images of "),  # only where the decoded cache is not yet made
    re.compile(r"^Inception features of [\d,]+ reference images"),  # only where not yet cached
)


@dataclasses.dataclass
class Example:
    command: str
    expected: list[str]


def blocks(path: Path) -> list[list[Example]]:
    """The console blocks of a file that are to be run, as lists of examples."""
    lines = path.read_text().splitlines()
    out: list[list[Example]] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```console":
            before = next((x for x in reversed(lines[:i]) if x.strip()), "")
            j = i + 1
            body = []
            while lines[j].strip() != "```":
                body.append(lines[j].strip())
                j += 1
            if not before.startswith("<!-- not run"):
                out.append(_examples(body))
            i = j
        i += 1
    return [b for b in out if b]


def _examples(body: list[str]) -> list[Example]:
    examples: list[Example] = []
    for line in body:
        if line.startswith("$ "):
            examples.append(Example(line[2:], []))
        elif examples:
            examples[-1].expected.append(line)
    return examples


def shape(line: str) -> str:
    """A line with what changes from run to run masked."""
    # what `--precision auto` chose depends on the CPU (bf16 units or none), not on the command
    line = re.sub(r"precision \w+ \(auto: [^)]*\)", "precision A", line)
    line = re.sub(r"\S*/\S*", "P", line)  # paths (and anything with a slash in it)
    line = re.sub(r"\d+:\d\d:\d\d", "T", line)  # durations
    line = re.sub(r"[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?%?", "N", line)  # numbers
    line = re.sub(r"[│┃|]", "|", line)
    line = re.sub(r"[━─═]+", "-", line)  # table rules: their length follows the values
    return " ".join(line.split())


def _json_keys(line: str) -> set[str]:
    return set(re.findall(r'"(\w+)":', line))


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` has `expected`'s shape; `...` matches any number of lines."""
    exp = [e for e in expected if not any(p.match(e) for p in IGNORED)]
    act = [a for a in actual if a.strip() and not any(p.match(a) for p in IGNORED)]

    def same(e: str, a: str) -> bool:
        if e.startswith("{") and a.startswith("{"):
            return _json_keys(e) <= _json_keys(a)
        return shape(e) == shape(a)

    def walk(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == "...":
            return any(walk(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and same(exp[i], act[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


def faster(args: list[str]) -> list[str]:
    """Tiny widths for `train`, at most 64 images for `eval`: the output's shape stays."""
    if args[:1] == ["train"] and "--resume" not in args and len(args) > 1 and args[1] in MODELS:
        fields = {f.name for f in dataclasses.fields(MODELS[args[1]].config_cls)}
        given = " ".join(args)
        for key, value in SHRINK.items():
            if key in fields and f"{key}=" not in given:
                args = [*args, "--set", f"{key}={value}"]
    if args[:1] == ["eval"]:
        for flag in ("--n", "-n", "--n-ref"):
            if flag in args:
                k = args.index(flag) + 1
                args[k] = str(min(int(args[k]), 64))
    return args


def run(command: str, capsys: pytest.CaptureFixture) -> list[str]:
    args = shlex.split(command)
    assert args[0] == "imagegen", f"only imagegen commands run here: {command}"
    capsys.readouterr()
    cli.run(faster(args[1:]))
    captured = capsys.readouterr()
    return (captured.err + captured.out).splitlines()


DOCS = [f for f in FILES if blocks(f)]


@pytest.mark.parametrize("path", DOCS, ids=[f.name for f in DOCS])
def test_console_examples_keep_their_shape(
    path: Path, capsys, isolated: Path, monkeypatch, mnist_root: Path, weights
) -> None:
    """Every example of a file, in order, in one folder (later ones use what earlier made)."""
    monkeypatch.setenv("IMAGEGEN_DATA", str(mnist_root))
    monkeypatch.setenv("IMAGEGEN_RUNS", "checkpoints")
    # The console width docs/render_examples.py renders at: the summary wraps its losses to it.
    monkeypatch.setenv("COLUMNS", "100")
    for block in blocks(path):
        for example in block:
            actual = run(example.command, capsys)
            assert matches(example.expected, actual), (
                f"{path.name}: $ {example.command}\n--- documented:\n"
                + "\n".join(example.expected)
                + "\n--- now:\n"
                + "\n".join(actual)
            )


def test_shape_masks_what_changes() -> None:
    assert shape("step 100/200  d_loss 0.2664  691 img/s  eta 0:00:09") == shape(
        "step 300/400  d_loss 1.5  1,024 img/s  eta 0:10:00"
    )
    assert matches(["a N", "...", "c"], ["a 5", "b", "b", "c"])
    assert not matches(["a", "c"], ["a", "b", "c"])
    assert matches(['{"x": 1, ...}'], [json.dumps({"x": 2, "y": 3})])
