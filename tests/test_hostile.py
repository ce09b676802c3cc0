"""Hostile files: every reader of user files answers with one line or a skip report, never a
traceback, a hang or a memory blow-up. The cases are counted in the README's table."""

import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TRAIN_ONE = ["train", "dcgan", "--resolution", "32", "--steps", "1", "--batch-size", "1"]
TRAIN_ONE += ["--set", "g_width=8", "--set", "d_width=8", "--set", "latent_dim=8"]


def one_line(result, codes=(1, 2)) -> str:
    assert result.code in codes, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagegen: error: "), result
    assert "Traceback" not in result.err
    return lines[0]


def png(size=(32, 32), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


# --- safetensors checkpoints ---------------------------------------------------------------


def _raw(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def _good(run: Path) -> bytes:
    return (run / "checkpoints" / "latest.safetensors").read_bytes()


def _patched_meta(run: Path, **changes: object) -> bytes:
    """The run's checkpoint with metadata fields replaced (tensors kept)."""
    blob = _good(run)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"].update(changes)
    return _raw(header, blob[8 + n :])


def _with_tensors(run: Path, edit: Callable[[dict], None]) -> bytes:
    from safetensors import safe_open
    from safetensors.torch import save

    path = run / "checkpoints" / "latest.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    edit(tensors)
    return save(tensors, metadata=meta)


SAFETENSORS_CASES: dict[str, Callable[[Path], bytes]] = {
    "empty file": lambda run: b"",
    "7 bytes": lambda run: b"1234567",
    "header length 2**60": lambda run: struct.pack("<Q", 2**60) + b"{}",
    "header longer than the file": lambda run: _raw({}, length=10_000),
    "header not JSON": lambda run: _raw(b"\xff\xfe{garbage"),
    "header a JSON list": lambda run: _raw([1, 2, 3]),
    "tensor entry not an object": lambda run: _raw({"a": 5}),
    "offsets reversed": lambda run: _raw(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4
    ),
    "shape of strings": lambda run: _raw(
        {"a": {"dtype": "F32", "shape": ["x"], "data_offsets": [0, 4]}}, b"\0" * 4
    ),
    "unknown dtype": lambda run: _raw(
        {
            "__metadata__": {"format": "imagegen-checkpoint"},
            "a": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]},
        },
        b"\0" * 4,
    ),
    "shape larger than its bytes": lambda run: _raw(
        {"a": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4]}}, b"\0" * 4
    ),
    "metadata values not strings": lambda run: _raw({"__metadata__": {"format": {"x": 1}}}),
    "not an imagegen checkpoint": lambda run: _raw({"__metadata__": {"format": "other"}}),
    "config not JSON": lambda run: _patched_meta(run, config="{not json"),
    "config a JSON list": lambda run: _patched_meta(run, config="[1, 2]"),
    "config with unknown keys": lambda run: _patched_meta(run, config='{"wings": 2}'),
    "data_shape not three numbers": lambda run: _patched_meta(run, data_shape='"abc"'),
    "unknown model": lambda run: _patched_meta(run, model="stylegan9"),
    "format version from the future": lambda run: _patched_meta(run, format_version="99"),
    "step not a number": lambda run: _patched_meta(run, step="many"),
    "a tensor missing": lambda run: _with_tensors(
        run, lambda t: t.pop(next(k for k in t if k.startswith("model/generator")))
    ),
    "a tensor of the wrong shape": lambda run: _with_tensors(
        run, lambda t: t.__setitem__("ema/main.0.weight", torch.zeros(2, 2))
    ),
    "truncated in the tensors": lambda run: _good(run)[: len(_good(run)) // 2],
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imagegen import cli

    folder = tmp_path_factory.mktemp("hostile-run")
    env = {"IMAGEGEN_CACHE": str(folder / ".cache"), "IMAGEGEN_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = cli.run(
            ["train", "dcgan", "-d", "synthetic", "--resolution", "32", "--steps", "2",
             "--batch-size", "4", "--set", "g_width=8", "--set", "d_width=8",
             "--set", "latent_dim=8", "--run-dir", str(folder / "run"), "-q",
             "--no-tensorboard"]
        )  # fmt: skip
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert code == 0
    return folder / "run"


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_hostile_checkpoints(case: str, run_cli, isolated: Path, good_run: Path) -> None:
    path = isolated / "hostile.safetensors"
    path.write_bytes(SAFETENSORS_CASES[case](good_run))
    one_line(run_cli("sample", path, "-n", "4", "--out", isolated / "x.png"))
    assert not (isolated / "x.png").exists()
    one_line(run_cli("train", "dcgan", "--resume", path, "--steps", "4"))


# --- zip archives, image folders: in a fresh process, its memory and time measured -------


# VmHWM is the peak of this program's own address space. getrusage's ru_maxrss is not: Linux
# carries it across fork and exec, so a child of a large pytest process reports the parent's peak.
_CHILD = """
import re, sys
from imagegen import cli
code = cli.run(sys.argv[2:])
status = open("/proc/self/status").read()
with open(sys.argv[1], "w") as f:
    f.write(re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
sys.exit(code)
"""


def _peak_run(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run imagegen in a child process; return it and that process's own peak memory in MB."""
    report = cwd / "peak-rss-kb"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(report), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    return proc, int(report.read_text()) / 1024


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _zip_bomb(path: Path) -> None:
    """A member that inflates to 512 MB of zeros from about half a megabyte."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", png())
        with zf.open("bomb.png", "w", force_zip64=True) as f:
            block = bytes(1 << 24)
            for _ in range(32):
                f.write(block)


def _lying_sizes(path: Path) -> None:
    """A member whose headers declare 4 GB for a few hundred bytes."""
    _zip(path, {"ok.png": png(), "liar.png": png()})
    blob = bytearray(path.read_bytes())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (i := blob.find(sig, start)) >= 0:
            name_at = 30 if sig == b"PK\x03\x04" else 46
            n = struct.unpack("<H", blob[i + (26 if sig == b"PK\x03\x04" else 28) :][:2])[0]
            if blob[i + name_at : i + name_at + n] == b"liar.png":
                blob[i + at : i + at + 4] = struct.pack("<I", 0xFFFFFFF0)
            start = i + 4
    path.write_bytes(bytes(blob))


ZIP_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "zip bomb (512 MB of zeros in one member)": (_zip_bomb, "skipped 1"),
    "declared sizes of 4 GB": (_lying_sizes, ""),  # harmless: never trusted for memory
    "a zip inside the zip": (
        lambda p: _zip(p, {"ok.png": png(), "inner.zip": b"PK\x03\x04" + b"\0" * 100}),
        "",
    ),
    "a zip renamed .png inside": (
        lambda p: _zip(p, {"ok.png": png(), "evil.png": b"PK\x03\x04" + b"\0" * 100}),
        "skipped 1",
    ),
    "member names with ../": (lambda p: _zip(p, {"../../etc/x.png": png()}), ""),
    "not a zip at all": (lambda p: p.write_bytes(b"garbage" * 100), "error"),
    "an empty zip": (lambda p: _zip(p, {}), "error"),
    "only unreadable members": (lambda p: _zip(p, {"a.png": b"", "b.jpg": b"xx"}), "error"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(ZIP_CASES))
def test_hostile_zips(case: str, isolated: Path) -> None:
    make, expect = ZIP_CASES[case]
    path = isolated / "data.zip"
    make(path)
    proc, peak_mb = _peak_run([*TRAIN_ONE, "-d", str(path), "--run-dir", "r"], isolated)
    assert "Traceback" not in proc.stderr
    if expect == "error":
        assert proc.returncode == 1 and proc.stderr.startswith("imagegen: error:"), proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert expect in proc.stderr if expect else "skipped" not in proc.stderr
    assert peak_mb < 1500, f"{case}: {peak_mb:.0f} MB"


def _bomb_png(path: Path, side: int) -> None:
    Image.new("1", (side, side)).save(path, format="PNG")  # 1 bit per pixel, all zeros


FOLDER_CASES: dict[str, Callable[[Path], None]] = {
    "decompression bomb beyond PIL's limit (400 Mpixels)": lambda d: _bomb_png(
        d / "bomb.png", 20_000
    ),
    "image between PIL's warning and error (100 Mpixels)": lambda d: _bomb_png(
        d / "big.png", 10_000
    ),
    "truncated PNG": lambda d: (d / "cut.png").write_bytes(png((64, 64))[:60]),
    "zero-byte file": lambda d: (d / "empty.png").write_bytes(b""),
    "text named .jpg": lambda d: (d / "notes.jpg").write_text("hello"),
    "symlink loop": lambda d: (d / "loop").symlink_to(d, target_is_directory=True),
    "symlink to /dev/zero": lambda d: (d / "zero.png").symlink_to("/dev/zero"),
    "broken symlink": lambda d: (d / "gone.png").symlink_to(d / "missing.png"),
    "a FIFO named .png": lambda d: os.mkfifo(d / "fifo.png"),
    "file over 64 MB": lambda d: (d / "huge.bmp").write_bytes(b"BM" + bytes(65 * 2**20)),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_hostile_image_folders(case: str, isolated: Path) -> None:
    folder = isolated / "imgs"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png())
    FOLDER_CASES[case](folder)
    proc, peak_mb = _peak_run([*TRAIN_ONE, "-d", str(folder), "--run-dir", "r"], isolated)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    ignored = ("symlink", "FIFO")  # not regular files: never opened, so never reported
    if not any(word in case for word in ignored):
        assert "skipped 1 unreadable file(s)" in proc.stderr, proc.stderr
    assert peak_mb < 1500, f"{case}: {peak_mb:.0f} MB"


# --- .pt files for convert, and the other readers ----------------------------------------


class _Code:
    """Unpickling this runs a shell command that leaves a file behind: proof of execution."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _torch_file(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


PT_CASES: dict[str, Callable[[], bytes]] = {
    "a pickle that runs os.system": lambda: pickle.dumps({"w": _Code()}),
    "a torch.save with code inside": lambda: _torch_file({"w": _Code()}),
    "garbage": lambda: b"\x00garbage" * 50,
    "a truncated torch file": lambda: _torch_file({"w": torch.zeros(1000)})[:300],
    "a list, not a state dict": lambda: _torch_file([torch.zeros(2)]),
    "a dict of strings": lambda: _torch_file({"w": "not a tensor"}),
}


@pytest.mark.parametrize("case", list(PT_CASES))
def test_hostile_pt_files(case: str, run_cli, isolated: Path) -> None:
    path = isolated / "model.pt"
    path.write_bytes(PT_CASES[case]())
    one_line(run_cli("convert", path, isolated / "out.safetensors"))
    assert not (isolated / "PWNED").exists()
    assert not (isolated / "out.safetensors").exists()


def _idx_bomb(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    header = struct.pack(">IIII", 0x803, 2**30, 2**10, 2**10)  # claims 2**50 pixels
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + bytes(1000))


def _cifar_code(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _Code()}))


OTHER_CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "TOML config that is not TOML": (
        lambda d: (d / "run.toml").write_text("[[[ not toml"),
        ["train", "dcgan", "-d", "synthetic", "--config", "run.toml"],
    ),
    ".npz statistics that need pickle": (
        lambda d: np.savez(d / "s.npz", mu=np.array([object()]), sigma=np.zeros((1, 1))),
        ["eval", "imgs", "--dataset", "s.npz", "--metrics", "fid"],
    ),
    ".npz statistics of the wrong shapes": (
        lambda d: np.savez(d / "s.npz", mu=np.zeros(3), sigma=np.zeros((2, 2))),
        ["eval", "imgs", "--dataset", "s.npz", "--metrics", "fid"],
    ),
    "MNIST file claiming 2**50 pixels (gzip)": (
        _idx_bomb,
        ["train", "dcgan", "-d", "mnist", "--data-root", ".", "--steps", "1"],
    ),
    "CIFAR-10 batch that runs code": (
        _cifar_code,
        ["train", "dcgan", "-d", "cifar10", "--data-root", ".", "--steps", "1"],
    ),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_other_hostile_inputs(case: str, run_cli, isolated: Path) -> None:
    make, args = OTHER_CASES[case]
    (isolated / "imgs").mkdir()
    (isolated / "imgs" / "a.png").write_bytes(png())
    make(isolated)
    one_line(run_cli(*args, "-q"))
    assert not (isolated / "PWNED").exists()


def _labelled(d: Path, labels: list) -> None:
    """A folder of two images whose dataset.json says `labels`."""
    (d / "labelled").mkdir()
    for name in ("a.png", "b.png"):
        (d / "labelled" / name).write_bytes(png())
    (d / "labelled" / "dataset.json").write_text(json.dumps({"labels": labels}))


TRAIN_LABELLED = [*TRAIN_ONE, "-d", "labelled", "--run-dir", "r", "--conditional"]
USAGE_CASES: dict[str, tuple[Callable[[Path], None], list[str], str]] = {
    "a dataset.json that labels one file twice, with two classes": (
        lambda d: _labelled(d, [["a.png", 0], ["b.png", 1], ["a.png", 1]]),
        TRAIN_LABELLED,
        "labels a.png twice: 0 and 1",
    ),
    "a dataset.json label of 0.5": (
        lambda d: _labelled(d, [["a.png", 0.5], ["b.png", 1]]),
        TRAIN_LABELLED,
        "the label of a.png is 0.5: labels are integers",
    ),
    "a dataset.json label of 1.7": (
        lambda d: _labelled(d, [["a.png", 0], ["b.png", 1.7]]),
        TRAIN_LABELLED,
        "the label of b.png is 1.7: labels are integers",
    ),
    "a negative dataset.json label": (
        lambda d: _labelled(d, [["a.png", -1], ["b.png", 1]]),
        TRAIN_LABELLED,
        "the label of a.png is -1: labels start at 0",
    ),
    "sample --trunc nan": (lambda d: None, ["sample", "x", "--trunc", "nan"], "got nan"),
    "sample --trunc inf": (lambda d: None, ["sample", "x", "--trunc", "inf"], "got inf"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_bad_labels_and_options_are_usage_errors(case: str, run_cli, isolated: Path) -> None:
    make, args, words = USAGE_CASES[case]
    make(isolated)
    line = one_line(run_cli(*args, "-q"), codes=(2,))
    assert words in line, line


def test_the_case_counts_in_the_docs_are_true() -> None:
    root = Path(__file__).resolve().parents[1]
    readme, cli_md = (root / "README.md").read_text(), (root / "docs" / "cli.md").read_text()
    counts = {
        "safetensors checkpoints": len(SAFETENSORS_CASES),
        "zip archives": len(ZIP_CASES),
        "image folders": len(FOLDER_CASES),
        ".pt / .pth files": len(PT_CASES),
        "other files": len(OTHER_CASES),
        "labels and sampling options": len(USAGE_CASES),
    }
    for reader, n in counts.items():
        assert f"| {reader} | {n} |" in cli_md, (reader, n)
    total = sum(counts.values())
    assert f"| all | {total} |" in cli_md and f"Hostile files ({total} cases" in readme
