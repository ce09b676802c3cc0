"""Run the console examples of README.md and docs/*.md and write their real output into them.

Each ```console block lists commands as `$ imagegen ...` lines; this script runs them, in
order, one folder per file (later blocks may use what earlier ones made), and puts what they
printed (stderr and stdout, in the order printed) under each command. Blocks preceded by
`<!-- not run: REASON -->` are left as they are. tests/test_docs.py runs the same commands
and checks that the output keeps its shape.

    make docs     # or: python docs/render_examples.py [FILE.md ...]

The data root is reached through a link named `data`, so outputs show `data/MNIST/...` rather
than a path of this machine; a resumed run, which records its data root's real path, prints that
path, and it too is shown as `data`. Files inside this repository (the FID weights in .venv)
are shown relative to it.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(path: Path, data_root: Path) -> int:
    """Rewrite `path` with fresh outputs; return how many commands ran."""
    lines = path.read_text().splitlines()
    out: list[str] = []
    ran = 0
    with tempfile.TemporaryDirectory(prefix="imagegen-docs-") as tmp:
        work = Path(tmp)
        (work / "data").symlink_to(data_root)
        i = 0
        while i < len(lines):
            out.append(lines[i])
            if lines[i].strip() != "```console" or _skipped(lines, i):
                i += 1
                continue
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            for command in [x[2:] for x in lines[i + 1 : j] if x.startswith("$ ")]:
                out.append(f"$ {command}")
                out += [_portable(x, data_root) for x in _run(command, work)]
                ran += 1
            i = j
    path.write_text("\n".join(out) + "\n")
    return ran


def _portable(line: str, data_root: Path) -> str:
    """A line without this machine's paths."""
    return line.replace(str(data_root), "data").replace(f"{ROOT}/", "")


def _skipped(lines: list[str], i: int) -> bool:
    before = next((x for x in reversed(lines[:i]) if x.strip()), "")
    return before.startswith("<!-- not run")


def _run(command: str, work: Path) -> list[str]:
    args = shlex.split(command)
    env = os.environ | {
        "IMAGEGEN_DATA": "data",
        "IMAGEGEN_RUNS": "checkpoints",
        # a cache of its own, empty at each file's start: the first use of a dataset prints
        # what a new user sees (and what tests/test_docs.py, with its own cache, expects)
        "IMAGEGEN_CACHE": str(work / ".cache"),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "100",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "imagegen", *args[1:]],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=3600,
    )
    return [re.sub(r"\s+$", "", line) for line in proc.stdout.splitlines()]


def main() -> None:
    data_root = Path(os.environ.get("IMAGEGEN_DATA", ROOT.parent / "shared" / "datasets"))
    files = [Path(f) for f in sys.argv[1:]] or [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for path in files:
        print(f"{path}: {render(path, data_root.resolve())} commands", file=sys.stderr)


if __name__ == "__main__":
    main()
