"""The house rules that tools check (make lint): they hold on the code, and they catch what
they are there to catch: an import against the layers, a wrong argument type."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install -e .[dev])")
    return str(path)


def test_mypy_refuses_a_wrong_argument_type_to_a_public_function(tmp_path: Path) -> None:
    """The project's mypy settings, on a caller that passes an int where a Path goes."""
    good = "from pathlib import Path\nfrom imagegen.storage.runs import find_checkpoint\n"
    (tmp_path / "caller.py").write_text(good + "find_checkpoint(Path('run'))\n")
    (tmp_path / "wrong.py").write_text(good + "find_checkpoint(3)\n")
    config = ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "c")]

    def check(name: str) -> subprocess.CompletedProcess:
        cmd = [_tool("mypy"), *config, str(tmp_path / name)]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)

    assert check("caller.py").returncode == 0
    wrong = check("wrong.py")
    assert wrong.returncode == 1 and "[arg-type]" in wrong.stdout, wrong.stdout


def test_import_linter_refuses_an_import_against_the_layers(tmp_path: Path) -> None:
    """A models module that imports training breaks the layers contract."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "imagegen", copy / "imagegen", ignore=shutil.ignore_patterns("__py*"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    env = {"PYTHONPATH": str(copy), "PATH": str(BIN)}
    lint = _tool("lint-imports")
    ok = subprocess.run([lint], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stdout
    blocks = copy / "imagegen/models/blocks.py"
    blocks.write_text("import imagegen.training.config  # noqa: F401\n" + blocks.read_text())
    bad = subprocess.run([lint], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "imagegen.models.blocks -> imagegen.training" in bad.stdout
