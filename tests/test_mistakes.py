"""What a new user trips on: every mistake answers with one clear line and loses nothing."""

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import train_tiny
from PIL import Image

from imagegen.storage import checkpoint


@pytest.fixture
def run(run_cli, isolated: Path) -> Path:
    path = isolated / "run"
    train_tiny(run_cli, path)
    return path


def one_line_error(result, code: int = 1) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagegen: error: "), result
    assert "Traceback" not in result.err
    return lines[0]


def test_sample_never_writes_over_a_checkpoint(run_cli, run: Path) -> None:
    latest = run / "checkpoints" / "latest.safetensors"
    before = latest.read_bytes()
    message = one_line_error(run_cli("sample", run, "--out", latest, "--force"))
    assert "checkpoint" in message
    other = run / "checkpoints" / "grid.png"
    assert "checkpoints folder" in one_line_error(run_cli("sample", run, "--out", other))
    copy = run.parent / "copy.png"
    copy.write_bytes(before)  # a checkpoint under another name is recognised by its bytes
    assert "checkpoint" in one_line_error(run_cli("sample", run, "--out", copy, "--force"))
    assert latest.read_bytes() == before
    assert checkpoint.read_checkpoint(latest).step == 4


def test_sample_writes_the_format_its_suffix_names(run_cli, run: Path, isolated: Path) -> None:
    for name, fmt in (("grid.jpg", "JPEG"), ("grid.webp", "WEBP"), ("grid.png", "PNG")):
        result = run_cli("sample", run, "--n", "4", "--out", isolated / name)
        assert result.code == 0, result
        with Image.open(isolated / name) as im:
            assert im.format == fmt
    message = one_line_error(run_cli("sample", run, "--out", isolated / "grid.tiff"))
    assert "must end in .png, .jpg, .jpeg, .webp, .gif" in message
    message = one_line_error(run_cli("sample", run, "--out", isolated / "grid.gif"), 2)
    assert "--out .gif writes an interpolation's animation" in message


def test_individual_folder_cannot_be_a_checkpoints_folder(run_cli, run: Path) -> None:
    result = run_cli("sample", run, "--n", "2", "--individual", run / "checkpoints", "--force")
    assert "checkpoints folder" in one_line_error(result)


def test_convert_refuses_its_source_and_the_checkpoints_folder(run_cli, run: Path) -> None:
    latest = run / "checkpoints" / "latest.safetensors"
    assert "DST is SRC" in one_line_error(
        run_cli("convert", latest, latest, "--weights-only", "--force"), 2
    )
    target = run / "checkpoints" / "model.pt"
    assert "checkpoints folder" in one_line_error(run_cli("convert", latest, target))


def test_convert_messages_name_the_real_mistake(run_cli, run: Path, isolated: Path) -> None:
    garbage = isolated / "garbage.pt"
    garbage.write_bytes(b"this is not a pickle at all" * 10)
    message = one_line_error(run_cli("convert", garbage, isolated / "x.safetensors"))
    assert "is not a PyTorch file" in message and "unpickle" not in message
    # A pickle that needs code: refused, and the class is named.
    evil = isolated / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": _Evil()}))
    message = one_line_error(run_cli("convert", evil, isolated / "x.safetensors"))
    assert "need code to unpickle" in message
    # A state dict that is not pytorch/examples' and no --model: say so.
    plain = isolated / "random.pt"
    torch.save({"layer.weight": torch.zeros(3, 3)}, plain)
    message = one_line_error(run_cli("convert", plain, isolated / "x.safetensors"), 2)
    assert "not a pytorch/examples DCGAN" in message and "--model" in message
    # pytorch/examples' discriminator given as SRC.
    netd = isolated / "netD_epoch_24.pth"
    torch.save(
        {"main.0.weight": torch.zeros(64, 3, 4, 4), "main.2.weight": torch.zeros(128, 64, 4, 4)},
        netd,
    )
    message = one_line_error(run_cli("convert", netd, isolated / "x.safetensors"))
    assert "discriminator (netD)" in message and "--discriminator" in message
    assert not (isolated / "x.safetensors").exists()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_bad_inception_weights_message_is_whole(run_cli, run: Path, isolated: Path) -> None:
    notes = isolated / "notes.txt"
    notes.write_text("some notes " * 50)
    result = run_cli("eval", run, "-n", "8", "--inception-weights", notes, "--metrics", "fid", "-q")
    message = one_line_error(result)
    assert "is not a TorchScript Inception network" in message
    assert message.endswith(")") or message.endswith("...)")


def test_config_folder_and_run_dir_file(run_cli, isolated: Path) -> None:
    (isolated / "cfg").mkdir()
    message = one_line_error(run_cli("train", "dcgan", "-d", "synthetic", "--config", "cfg"))
    assert "is a folder" in message
    (isolated / "notes.txt").write_text("x")
    result = run_cli("train", "dcgan", "-d", "synthetic", "--run-dir", "notes.txt", "--steps", "1")
    assert "is a file, not a folder" in one_line_error(result)


def test_dataset_typo_suggests_the_name(run_cli) -> None:
    result = run_cli("train", "dcgan", "--dataset", "mnsit", "--dry-run")
    assert "Did you mean 'mnist'?" in one_line_error(result, 2)
    result = run_cli("train", "dcgan", "--dataset", "fashion_mnist", "--dry-run")
    assert "Did you mean 'fashion-mnist'?" in one_line_error(result, 2)


def test_runs_from_a_zip_are_named_after_its_folder(run_cli, isolated: Path) -> None:
    folder = isolated / "cifar10-jpeg"
    folder.mkdir()
    with zipfile.ZipFile(folder / "train.zip", "w") as zf:
        for i in range(16):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), (i * 15, 0, 0)).save(buf, format="PNG")
            zf.writestr(f"train/a/{i}.png", buf.getvalue())
    result = run_cli(
        "train", "dcgan", "-d", folder / "train.zip", "--resolution", "32", "--dry-run", "--json"
    )
    assert result.code == 0, result
    assert json.loads(result.out)["run_dir"].endswith("00000-dcgan-cifar10-jpeg-train")


def test_interrupt_says_so(run_cli, monkeypatch) -> None:
    from imagegen import cli

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", boom)
    result = run_cli("eval", "x")
    assert result.code == 130 and result.err.strip() == "imagegen: interrupted"


def test_first_use_of_a_dataset_says_it_decodes(run_cli, isolated: Path) -> None:
    folder = isolated / "photos"
    folder.mkdir()
    for i in range(1100):
        Image.new("RGB", (40, 40), (i % 255, 0, 0)).save(folder / f"{i}.png")
    args = ("train", "dcgan", "-d", folder, "--resolution", "32", "--steps", "1")
    args += ("--batch-size", "8", "--set", "g_width=8", "--set", "d_width=8")
    first = run_cli(*args, "--run-dir", isolated / "a")
    assert first.code == 0, first
    assert first.err.count("decoding 1,100 images of folder") == 1
    second = run_cli(*args, "--run-dir", isolated / "b")
    assert second.code == 0 and "decoding" not in second.err  # cached


def test_convert_into_a_missing_folder_names_it_and_creates_nothing(
    run_cli, run: Path, isolated: Path
) -> None:
    result = run_cli("convert", run, isolated / "export" / "model.pt")
    assert "output folder does not exist:" in one_line_error(result) and "export" in result.err
    assert not (isolated / "export").exists()
