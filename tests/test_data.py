"""Datasets: named layouts, folders, zips, the cache, channel handling, batch order."""

import gzip
import os
import pickle
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.common.errors import UsageError, UserError
from imagegen.data import datasets as data
from imagegen.data import decode
from imagegen.data.batches import EpochBatches


def write_idx(path: Path, images: np.ndarray, gz: bool = False) -> None:
    n, h, w = images.shape
    payload = struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    rng = np.random.default_rng(0)
    write_idx(root / "MNIST/raw/train-images-idx3-ubyte", rng.integers(0, 256, (40, 28, 28)))
    write_idx(
        root / "MNIST/raw/t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28)), gz=True
    )
    return root


def test_mnist_layout_resized_to_32_and_cached(fake_mnist: Path) -> None:
    first = data.load_images("mnist", resolution=32, root=fake_mnist)
    assert first.images.shape == (40, 1, 32, 32) and first.images.dtype == torch.uint8
    assert first.cache_file is not None and Path(first.cache_file).is_file()
    again = data.load_images("mnist", resolution=32, root=fake_mnist)
    assert again.cache_file == first.cache_file
    assert torch.equal(again.images, first.images)
    test = data.load_images("mnist", resolution=32, root=fake_mnist, split="test")  # gzipped
    assert test.images.shape == (10, 1, 32, 32)
    rgb = data.load_images("mnist", resolution=64, channels=3, root=fake_mnist)
    assert rgb.images.shape == (40, 3, 64, 64)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 1])


def test_cache_is_keyed_by_content(fake_mnist: Path) -> None:
    first = data.load_images("mnist", resolution=32, root=fake_mnist)
    path = fake_mnist / "MNIST/raw/train-images-idx3-ubyte"
    write_idx(path, np.zeros((40, 28, 28)))
    changed = data.load_images("mnist", resolution=32, root=fake_mnist)
    assert changed.cache_file != first.cache_file
    assert changed.images.sum() == 0


def test_cache_survives_a_copied_or_touched_dataset(fake_mnist: Path, tmp_path: Path) -> None:
    """Re-provisioned data (a copy, new modification times) is not decoded again."""
    first = data.load_images("mnist", resolution=32, root=fake_mnist)
    copy = tmp_path / "copy"
    shutil.copytree(fake_mnist, copy)
    os.utime(copy / "MNIST/raw/train-images-idx3-ubyte", (1, 1))
    decoded: list = []
    again = data.load_images("mnist", resolution=32, root=copy, emit=decoded.append)
    assert again.cache_file == first.cache_file and not decoded
    assert torch.equal(again.images, first.images)
    data.load_images("mnist", resolution=32, root=copy, use_cache=False, emit=decoded.append)
    assert decoded and decoded[-1].kind == "decode"  # a decode is heard: the check above can fail
    assert decoded[-1].done == decoded[-1].total == first.images.shape[0]


def test_missing_named_dataset_names_the_files_needed(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"MNIST not found.*train-images-idx3-ubyte.*MNIST/raw"):
        data.load_images("mnist", resolution=32, root=tmp_path / "empty")
    with pytest.raises(UserError, match=r"data_batch_1.*cifar-10-batches-py"):
        data.load_images("cifar10", resolution=32, root=tmp_path / "empty")


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(UsageError, match=r"unknown dataset 'imagenet'.*mnist, fashion-mnist"):
        data.load_images("imagenet", resolution=32)


def make_folder(root: Path) -> Path:
    (root / "cats").mkdir(parents=True)
    (root / "dogs/deeper").mkdir(parents=True)
    Image.new("RGB", (40, 20), (255, 0, 0)).save(root / "cats/a.png")
    Image.new("RGB", (20, 50), (0, 255, 0)).save(root / "dogs/b.jpg")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(root / "dogs/deeper/c.webp")
    Image.new("RGB", (33, 33), (9, 9, 9)).save(root / "d.bmp")
    (root / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_recursive_with_unreadable_files_skipped(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    result = data.load_images(str(folder), resolution=32)
    assert result.images.shape == (4, 3, 32, 32)
    assert result.skipped == 1 and result.skipped_examples == ("broken.png",)
    # The 40x20 red image: shorter side to 32, centre crop, so still all red.
    reds = result.images[:, 0].float().mean((1, 2))
    assert (reds > 250).sum() == 1


def test_grayscale_folder_gets_one_channel(tmp_path: Path) -> None:
    folder = tmp_path / "gray"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (32, 32), i * 50).save(folder / f"{i}.png")
    result = data.load_images(str(folder), resolution=32)
    assert result.images.shape == (3, 1, 32, 32)
    assert sorted(result.images.flatten().unique().tolist()) == [0, 50, 100]


def test_zip_of_images(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in folder.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(folder))
    result = data.load_images(str(archive), resolution=32, channels=1)
    assert result.images.shape == (4, 1, 32, 32)
    assert result.skipped == 1


def test_empty_and_unusable_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        data.load_images(str(tmp_path / "empty"), resolution=32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"no usable image.*1 unreadable, e.g. x.png"):
        data.load_images(str(bad), resolution=32)


def test_cifar_batches_load_without_running_code(tmp_path: Path) -> None:
    folder = tmp_path / "root/cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0] * 4}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    result = data.load_images("cifar10", resolution=32, root=tmp_path / "root")
    assert result.images.shape == (20, 3, 32, 32)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UserError, match="refused"):
        decode.read_cifar_batch(folder / "data_batch_1")
    assert not marker.exists()


def test_synthetic_is_deterministic() -> None:
    a = data.load_images("synthetic", resolution=32)
    b = data.load_images("synthetic", resolution=32)
    assert torch.equal(a.images, b.images) and a.images.shape == (1024, 3, 32, 32)
    assert data.load_images("synthetic", resolution=64, channels=1).images.shape[1:] == (1, 64, 64)
    assert not torch.equal(
        a.images[:256], data.load_images("synthetic", resolution=32, split="test").images
    )


def test_fit_image_crops_the_centre() -> None:
    image = Image.new("RGB", (90, 30), (0, 0, 0))
    image.paste((255, 255, 255), (30, 0, 60, 30))  # white middle third
    out = decode.fit_image(image, 30)
    assert out.shape == (30, 30, 3) and out.min() == 255


def test_epoch_batches_are_permutations_and_recomputable() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    batches = EpochBatches(images, batch_size=3, seed=7)
    assert batches.batches_per_epoch == 3
    epoch0 = torch.cat([batches.batch(s) for s in range(3)]).flatten().tolist()
    assert len(set(epoch0)) == 9  # drop_last: 9 distinct of 10
    fresh = EpochBatches(images, batch_size=3, seed=7)
    assert torch.equal(fresh.batch(4), batches.batch(4))  # any step, any order
    assert not torch.equal(batches.order(0), batches.order(1))
    with pytest.raises(UsageError, match="fewer than the batch size"):
        EpochBatches(images, batch_size=11, seed=0)


def test_convert_channels_luma() -> None:
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert decode.convert_channels(rgb, 1).item() == round(0.299 * 255)


def test_celeba_layout_and_partition(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for i in range(6):
        name = f"{i:06d}.jpg"
        Image.new("RGB", (178, 218), (40 * i, 10, 10)).save(folder / name)
        lines.append(f"{name} {0 if i < 4 else 2}")  # 4 train, 2 test
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    train = data.load_images("celeba", resolution=64, root=root)
    test = data.load_images("celeba", resolution=64, root=root, split="test")
    assert train.images.shape == (4, 3, 64, 64) and test.images.shape == (2, 3, 64, 64)
    # Same number of files, new content: the cache must not serve the old images.
    Image.new("RGB", (178, 218), (255, 255, 255)).save(folder / "000000.jpg")
    changed = data.load_images("celeba", resolution=64, root=root)
    assert not torch.equal(changed.images, train.images)
    (root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError, match="test split needs"):
        data.load_images("celeba", resolution=64, root=root, split="test")


def _sprites(folder: Path) -> None:
    """Three images with transparency, each storing another colour under it, and one without."""
    folder.mkdir()
    rgba = np.zeros((16, 16, 4), np.uint8)  # black under the transparent pixels
    rgba[4:12, 4:12] = (200, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    la = np.zeros((16, 16, 2), np.uint8)
    la[..., 0] = 255  # white under the transparent pixels
    la[4:12, 4:12] = (90, 255)
    Image.fromarray(la, "LA").save(folder / "la.png")
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 255, 0, 0, 0, 255, 255, 0, 0] + [0, 0, 0] * 253)  # green, blue, red
    pal.paste(1, (4, 4, 12, 12))
    pal.putpixel((15, 15), 2)
    # green transparent, red half so: alpha as bytes, which Pillow warns about in RGB
    pal.save(folder / "palette.png", transparency=bytes([0, 255, 128]))
    Image.new("RGB", (16, 16), (10, 20, 30)).save(folder / "opaque.png")


def test_transparency_is_composited_onto_one_background(tmp_path: Path) -> None:
    _sprites(tmp_path / "sprites")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        white = data.load_images(str(tmp_path / "sprites"), resolution=16, use_cache=False)
    assert not [w for w in caught if issubclass(w.category, UserWarning)]  # Pillow's palette one
    assert white.transparent == 3
    corners = white.images[:, :, 0, 0].tolist()  # files sorted: la, opaque, palette, rgba
    assert corners == [[255, 255, 255], [10, 20, 30], [255, 255, 255], [255, 255, 255]]
    centres = white.images[:, :, 8, 8].tolist()  # the opaque art is kept
    assert centres == [[90, 90, 90], [10, 20, 30], [0, 0, 255], [200, 30, 30]]
    red = decode.Fitting(background=(255, 0, 0))
    other = data.load_images(str(tmp_path / "sprites"), resolution=16, fitting=red)
    assert other.images[[0, 2, 3], :, 0, 0].tolist() == [[255, 0, 0]] * 3
    assert other.cache_file != white.cache_file  # the background is part of the cache key


def test_fit_pad_keeps_the_whole_image(tmp_path: Path) -> None:
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :5] = (255, 0, 0)  # a red left edge that cropping would cut off
    image = Image.fromarray(wide)
    cropped = decode.fit_image(image, 20)
    assert not (cropped[..., 0] == 255).any()
    padded = decode.fit_image(image, 20, decode.Fitting(background=(0, 0, 255), fit="pad"))
    assert padded.shape == (20, 20, 3)
    assert padded[10, 0].tolist() == [255, 0, 0]  # the left edge is there
    assert padded[0, 10].tolist() == [0, 0, 255] and padded[19, 10].tolist() == [0, 0, 255]


def test_progress_events_have_typed_kinds() -> None:
    """A kind is one of progress.Kind (a misspelt one is refused where it is made); an FID's
    best and a decode's first report are fields, not words in the message."""
    from imagegen.common.progress import Counter, Kind, ProgressEvent

    assert ProgressEvent("fid", best=True).kind is Kind.FID
    with pytest.raises(ValueError):
        ProgressEvent("checkpiont")
    heard: list[ProgressEvent] = []
    counter = Counter(heard.append, 0, Kind.DECODE, "data", every=1024)
    for _ in range(5):
        counter.add(512)
    assert [(e.done, e.first) for e in heard] == [(1024, True), (2048, False)]
    small: list[ProgressEvent] = []  # under `every` images: no first report (nothing to announce)
    Counter(small.append, 0, Kind.DECODE, "data", every=1024).add(10)
    assert not any(e.first for e in small)
