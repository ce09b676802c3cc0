"""What people do with an autoencoder (the VAE, the VAE-GAN): their own images encoded to
latents in a file, a latents file decoded, two images interpolated, images reconstructed.

Latents are posterior means: the encoder's mean for each image (no sampling noise), in the
space the decoder reads. A file holds `latents` (N, d) float32, `labels` (N,) int64 for a
conditional model, and the encoded files' names; safetensors keeps them as metadata, .npz as
an array. Images are fitted to the model's size as its training data were (crop or pad, the
background under transparency: the run's own options).
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from imagegen.common.devices import resolve_device
from imagegen.common.errors import UsageError, UserError
from imagegen.common.files import atomic_write_bytes, check_image_output, check_output_file
from imagegen.data import datasets as data
from imagegen.data.decode import IMAGE_EXTENSIONS, convert_channels, fit_image
from imagegen.models.registry import MODELS
from imagegen.sampling.autoencode_request import (
    DecodeRequest,
    EncodeRequest,
    InterpolateRequest,
    ReconstructRequest,
)
from imagegen.sampling.generation import BATCH
from imagegen.sampling.images import animation_bytes, make_grid, to_uint8, write_png
from imagegen.sampling.sample import resolve_class
from imagegen.storage import checkpoint
from imagegen.storage.runs import find_checkpoint

LATENTS_FORMAT = "imagegen-latents"
LATENT_SUFFIXES = (".safetensors", ".npz")
MAX_IMAGES = 100_000


@dataclass
class AutoencodeResult:
    """What a command made: its files and, for reconstructions, the pixel error."""

    checkpoint: Path
    model: str
    step: int
    n: int
    files: list[str]
    latent_dim: int
    ema: bool
    metrics: dict[str, float] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # the images encoded, in order
    images_per_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "model": self.model,
            "step": self.step,
            "n": self.n,
            "latent_dim": self.latent_dim,
            "ema": self.ema,
            "metrics": self.metrics,
            "files": self.files,
            "images_per_s": round(self.images_per_s, 2),
        }


@dataclass
class _Loaded:
    """A checkpoint's model, ready to encode and decode."""

    ckpt: checkpoint.Checkpoint
    path: Path
    model: Any
    device: torch.device
    ema: bool
    label: int | None  # the --class asked, as an index

    def labels(self, n: int) -> torch.Tensor | None:
        """The classes of n images: --class for each; a conditional model needs one."""
        if not self.model.num_classes:
            return None
        if self.label is None:
            raise UsageError(
                f"this model is conditional ({', '.join(self.ckpt.class_names)}): "
                "give the images' class with --class"
            )
        return torch.full((n,), self.label, dtype=torch.long)

    def result(self, n: int, files: list[str], **more: Any) -> AutoencodeResult:
        return AutoencodeResult(
            self.path, self.ckpt.model_name, self.ckpt.step, n, files,
            self.model.latent_dim, self.ema, **more,
        )  # fmt: skip


def _load(source: Path | None, request: Any) -> _Loaded:
    """The checkpoint of `source`, its model built (EMA weights unless --no-ema); models
    without an encoder are refused."""
    if source is None:
        raise UsageError("name a checkpoint file or run folder")
    path = find_checkpoint(source)
    ckpt = checkpoint.read_checkpoint(path)
    spec = MODELS[ckpt.model_name]
    if not spec.model_cls.can_reconstruct:
        able = ", ".join(n for n, s in MODELS.items() if s.model_cls.can_reconstruct)
        raise UsageError(f"a {ckpt.model_name} model has no encoder (models with one: {able})")
    ema = request.use_ema and ckpt.has_ema
    device = resolve_device(request.device)
    model = checkpoint.build_model(ckpt, use_ema=ema).to(device).eval()
    label = None
    if request.class_ is not None:
        label = resolve_class(request.class_, ckpt.class_names)
    return _Loaded(ckpt, path, model, device, ema, label)


def image_files(inputs: tuple[Path, ...]) -> list[Path]:
    """The image files named, and those in the folders named (sorted, not recursive)."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            if not inside:
                raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {p}")
            files += inside
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"no such file or folder: {p}")
    if not files:
        raise UsageError("name at least one image file or folder")
    if len(files) > MAX_IMAGES:
        raise UsageError(f"{len(files)} images: at most {MAX_IMAGES:,} at a time")
    return files


def read_images(files: list[Path], loaded: _Loaded) -> torch.Tensor:
    """The files as the model's input: uint8 (N, C, R, R), fitted as its training data were."""
    c, r, _ = loaded.ckpt.data_shape
    fitting = data.fitting_for(loaded.ckpt.train_config)
    arrays = []
    for f in files:
        try:
            with Image.open(f) as image:
                arrays.append(fit_image(image, r, fitting))  # (R, R, 3 or 4)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(f"cannot read {f} as an image: {e}") from None
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3|4, R, R)
    return convert_channels(images.contiguous(), c)


def _encode(loaded: _Loaded, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """uint8 images (N, C, R, R) -> posterior means (N, d) float32 on the CPU, in batches."""
    out = []
    for i in range(0, len(images), BATCH):
        x = images[i : i + BATCH].float().div(255).to(loaded.device)
        y = None if labels is None else labels[i : i + BATCH].to(loaded.device)
        out.append(loaded.model.encode(x, labels=y).float().cpu())
    return torch.cat(out)


def _decode(loaded: _Loaded, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Latents (N, d) -> uint8 images (N, C, R, R) on the CPU, in batches."""
    out = []
    for i in range(0, len(codes), BATCH):
        z = codes[i : i + BATCH].to(loaded.device)
        y = None if labels is None else labels[i : i + BATCH].to(loaded.device)
        out.append(to_uint8(loaded.model.decode(z, labels=y).cpu()))
    return torch.cat(out)


def encode(request: EncodeRequest) -> AutoencodeResult:
    """Encode image files (and folders of them) to a latents file."""
    out = Path(request.out or "latents.safetensors")
    if out.suffix.lower() not in LATENT_SUFFIXES:
        raise UsageError(f"--out {out}: a latents file ends in {' or '.join(LATENT_SUFFIXES)}")
    check_output_file(out, request.force)
    loaded = _load(request.source, request)
    files = image_files(request.inputs)
    start = time.perf_counter()
    labels = loaded.labels(len(files))
    codes = _encode(loaded, read_images(files, loaded), labels)  # (N, d)
    elapsed = time.perf_counter() - start
    names = [str(f) for f in files]
    atomic_write_bytes(out, latents_bytes(out.suffix.lower(), codes, labels, names, loaded))
    return loaded.result(len(files), [str(out)], names=names, images_per_s=len(files) / elapsed)


def latents_bytes(
    suffix: str, codes: torch.Tensor, labels: torch.Tensor | None, names: list[str], loaded: _Loaded
) -> bytes:
    """A latents file's bytes: safetensors (names and provenance as metadata) or npz."""
    tensors = {"latents": codes.contiguous()}
    if labels is not None:
        tensors["labels"] = labels.contiguous()
    meta = {
        "format": LATENTS_FORMAT,
        "model": loaded.ckpt.model_name,
        "step": str(loaded.ckpt.step),
        "latent_dim": str(codes.shape[1]),
        "names": json.dumps(names),
    }
    if suffix == ".safetensors":
        return save(tensors, metadata=meta)
    import io

    buffer = io.BytesIO()
    arrays: dict[str, Any] = {k: v.numpy() for k, v in tensors.items()}
    arrays |= {"names": np.array(names, dtype=str), "model": np.array(meta["model"])}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_latents(path: Path, dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A latents file's latents (N, dim) float32 and classes (N,) if it has them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such latents file: {path}")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: torch.from_numpy(npz[k]) for k in ("latents", "labels") if k in npz}
        else:
            arrays = load_file(path)
    except (SafetensorError, ValueError, OSError) as e:
        raise UserError(
            f"cannot read {path} as a latents file (.safetensors or .npz): {e}"
        ) from None
    codes, labels = arrays.get("latents"), arrays.get("labels")
    if codes is None or codes.ndim != 2 or codes.shape[1] != dim or not len(codes):
        got = "none" if codes is None else tuple(codes.shape)
        raise UserError(f"{path}: needs latents of shape (N, {dim}) for this model, got {got}")
    codes = codes.float()
    if not torch.isfinite(codes).all():
        raise UserError(f"{path}: the latents are not all finite")
    if labels is not None and labels.shape != (len(codes),):
        raise UserError(f"{path}: labels of shape {tuple(labels.shape)} for {len(codes)} latents")
    return codes, None if labels is None else labels.long()


def decode(request: DecodeRequest) -> AutoencodeResult:
    """Decode a latents file to a grid of images."""
    if request.latents is None:
        raise UsageError("name a latents file")
    out = Path(request.out or Path(request.latents).with_suffix(".png"))
    out, fmt = check_image_output(out, request.force)
    loaded = _load(request.source, request)
    codes, labels = read_latents(request.latents, loaded.model.latent_dim)
    if len(codes) > MAX_IMAGES:
        raise UsageError(f"{len(codes)} latents: at most {MAX_IMAGES:,} at a time")
    labels = _decode_labels(loaded, labels, len(codes))
    start = time.perf_counter()
    images = _decode(loaded, codes, labels)
    elapsed = time.perf_counter() - start
    write_png(out, make_grid(images, request.nrow), fmt)
    return loaded.result(len(codes), [str(out)], images_per_s=len(codes) / elapsed)


def _decode_labels(loaded: _Loaded, in_file: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """A conditional model's classes to decode with: --class, else the file's."""
    classes = loaded.model.num_classes
    if not classes or loaded.label is not None:
        return loaded.labels(n)
    if in_file is None:
        return loaded.labels(n)  # the error: --class needed
    if in_file.min() < 0 or in_file.max() >= classes:
        raise UserError(f"the latents file's classes are not in 0-{classes - 1}")
    return in_file


def interpolate(request: InterpolateRequest) -> AutoencodeResult:
    """Two images, and the decoded straight line between their latents."""
    if request.first is None or request.second is None:
        raise UsageError("name two images to interpolate between")
    out = Path(request.out or "interpolation.png")
    out, fmt = check_image_output(out, request.force)
    loaded = _load(request.source, request)
    ends = read_images(image_files((request.first, request.second)), loaded)  # (2, C, R, R)
    labels = loaded.labels(2)
    codes = _encode(loaded, ends, labels)  # (2, d)
    t = torch.linspace(0, 1, request.steps)[:, None]
    line = (1 - t) * codes[0] + t * codes[1]  # (steps, d)
    frames = _decode(loaded, line, loaded.labels(request.steps))
    if fmt == "GIF":  # there and back, endlessly
        atomic_write_bytes(out, animation_bytes(list(frames), fmt))
    else:
        write_png(out, make_grid(torch.cat([ends[:1], frames, ends[1:]]), request.steps + 2), fmt)
    return loaded.result(request.steps, [str(out)])


def reconstruct(request: ReconstructRequest) -> AutoencodeResult:
    """Images above their reconstructions, row by row, with the mean pixel error."""
    out = Path(request.out or "reconstructions.png")
    out, fmt = check_image_output(out, request.force)
    loaded = _load(request.source, request)
    files = image_files(request.inputs)
    images = read_images(files, loaded)
    labels = loaded.labels(len(files))
    start = time.perf_counter()
    recon = _decode(loaded, _encode(loaded, images, labels), labels)
    elapsed = time.perf_counter() - start
    write_png(out, make_grid(_paired_rows(images, recon, request.nrow), request.nrow), fmt)
    mse = float((recon.float() - images.float()).div(255).pow(2).mean())
    psnr = float(10 * np.log10(1.0 / max(mse, 1e-12)))
    return loaded.result(
        len(files), [str(out)], metrics={"mse": mse, "psnr_db": psnr},
        names=[str(f) for f in files], images_per_s=len(files) / elapsed,
    )  # fmt: skip


def _paired_rows(images: torch.Tensor, recon: torch.Tensor, nrow: int) -> torch.Tensor:
    """Rows of `nrow` images, each above the same row of reconstructions (a short last pair
    padded with black)."""
    short = -len(images) % nrow
    if short:
        pad = torch.zeros((short, *images.shape[1:]), dtype=torch.uint8)
        images, recon = torch.cat([images, pad]), torch.cat([recon, pad])
    rows = [
        t for i in range(0, len(images), nrow) for t in (images[i : i + nrow], recon[i : i + nrow])
    ]
    return torch.cat(rows)
