"""Reference statistics for FID and friends: features of a dataset's images, cached on disk,
and pytorch-fid / TTUR `.npz` statistics files.

Features are computed once per dataset, split, resolution, count, extractor and precision, and
kept under the cache folder, so later evaluations of the same reference cost nothing.
"""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from imagegen.common import locations
from imagegen.common.errors import UserError
from imagegen.common.files import atomic_write_bytes
from imagegen.common.progress import Emit, Kind, ProgressEvent, ignore
from imagegen.data import datasets as data
from imagegen.data.decode import Fitting
from imagegen.data.labels import Labels
from imagegen.evaluation import inception


def reference_features(
    extractor: inception.Extractor,
    dataset: str,
    *,
    split: str,
    resolution: int,
    channels: int | None,
    n: int,
    root: str | None,
    batch_size: int,
    precision: str = "fp32",
    protocol: str = "pytorch-fid",
    emit: Emit | None = None,
    fitting: Fitting = Fitting(),
) -> tuple[torch.Tensor, int]:
    """Features of up to `n` reference images (a fixed random subset), cached on disk.

    Returns the features and how many images the reference set has in all. `emit` hears
    "decode" events while a dataset is decoded the first time, then a "stage" and "progress"
    events while features are computed.
    """
    emit = emit or ignore
    images = _reference_set(dataset, split, resolution, channels, root, emit, fitting)
    channels = images.shape[0]
    count = min(n, images.images.shape[0])
    ident = images.cache_file or dataset
    key = json.dumps(
        [ident, dataset, split, resolution, channels, count, extractor.sha256, precision]
        + ([] if protocol == "pytorch-fid" else [protocol])
        + ["v1"],
        sort_keys=True,
    )
    path = (
        locations.decoded_cache_dir().parent
        / "features"
        / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".safetensors")
    )
    if path.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["features"], images.images.shape[0]
        except Exception:  # a damaged cache entry is recomputed
            pass
    pick = reference_pick(images.images.shape[0], count)
    what = f"Inception features of {count} reference images of {dataset} (cached afterwards)"
    emit(ProgressEvent(Kind.STAGE, what))
    feats = extractor.features(images.images[pick], batch_size, precision, protocol, emit)
    try:
        from safetensors.torch import save

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"features": feats.contiguous()}))
    except OSError:
        pass
    return feats, images.images.shape[0]


def reference_pick(total: int, count: int) -> torch.Tensor:
    """Which `count` of a reference set's `total` images are used: a fixed random subset."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(0))[:count]


def reference_images(
    dataset: str,
    *,
    split: str,
    resolution: int,
    channels: int | None,
    n: int,
    root: str | None,
    fitting: Fitting = Fitting(),
) -> tuple[torch.Tensor, Labels | None, str]:
    """The reference images (uint8, N x C x H x W) that `reference_features` gives features
    of, in the same order; their classes (None where the data has none), and why none."""
    images = _reference_set(dataset, split, resolution, channels, root, ignore, fitting)
    pick = reference_pick(images.images.shape[0], min(n, len(images.images)))
    labels = None if images.labels is None else images.labels.kept(pick.tolist())
    return images.images[pick], labels, images.label_problem


def _reference_set(
    dataset: str,
    split: str,
    resolution: int,
    channels: int | None,
    root: str | None,
    emit: Emit,
    fitting: Fitting,
) -> data.ImageData:
    if channels is None:  # one cache entry per dataset, whether its channels were named or not
        channels = (
            data.native_channels(dataset)
            or data.load_images(
                dataset, resolution=resolution, split=split, root=root, fitting=fitting
            ).shape[0]
        )
    return data.load_images(
        dataset,
        resolution=resolution,
        channels=channels,
        split=split,
        root=root,
        emit=emit,
        fitting=fitting,
    )


def save_npz_stats(path: Path, mu: np.ndarray, sigma: np.ndarray, protocol: str) -> None:
    """pytorch-fid-compatible `mu` and `sigma`, and the FID protocol they were made with."""
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, protocol=np.array(protocol))
    atomic_write_bytes(Path(path), buf.getvalue())


def load_npz_stats(path: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """mu (2048,) and sigma (2048, 2048) from a pytorch-fid / TTUR .npz, without pickle, and
    the protocol imagegen recorded in it (None for files other tools made)."""
    if not path.is_file():
        raise UserError(f"statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
            protocol = str(f["protocol"]) if "protocol" in f.files else None
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{path} is not an .npz with mu and sigma ({e})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    return mu, sigma, protocol
