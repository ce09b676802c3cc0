"""The three ways published FIDs bring images to the Inception network's 299 x 299 input.

All three feed the same TF-Inception (2015-12-05) pool3 network; they differ in the resize and
in the scaling to [-1, 1], and that moves the FID by several percent on small images:

    pytorch-fid  bilinear on the float image in [0, 1] (PyTorch, half-pixel centres, no
                 antialiasing), then 2x - 1                                   (pytorch-fid)
    tf           TensorFlow 1's resize_bilinear on [0, 255] (no half-pixel centres), then
                 (x - 128) / 128: the original TTUR code, as torch-fidelity reproduces it
    clean-fid    PIL's antialiased bicubic, each channel as a float image on [0, 255], clipped
                 to [0, 255], then (x - 128) / 128                            (clean-fid)

Grayscale images are repeated to three channels first, as every tool does.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imagegen.common.errors import UsageError

SIZE = 299
DESCRIPTIONS = {
    "pytorch-fid": "bilinear on float [0, 1] (PyTorch, align_corners=False, no antialias) to "
    "299x299, then 2x - 1 (pytorch-fid)",
    "tf": "TensorFlow 1.x resize_bilinear (align_corners=False, no half-pixel centres) on "
    "[0, 255] to 299x299, then (x - 128) / 128 (TTUR / torch-fidelity)",
    "clean-fid": "PIL bicubic (antialiased) per channel on float [0, 255] to 299x299, clipped "
    "to [0, 255], then (x - 128) / 128 (clean-fid)",
}
PROTOCOLS = tuple(DESCRIPTIONS)


def check(protocol: str) -> str:
    if protocol not in DESCRIPTIONS:
        raise UsageError(f"unknown FID protocol {protocol!r} (valid: {', '.join(PROTOCOLS)})")
    return protocol


def to_network_input(images: torch.Tensor, protocol: str, device: torch.device) -> torch.Tensor:
    """uint8 images (B, C, H, W), C in {1, 3} -> the network's input (B, 3, 299, 299)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if protocol == "clean-fid":
        return _pil_bicubic(images).to(device).sub_(128).div_(128)
    x = images.to(device).float()
    if protocol == "tf":
        return tf1_resize_bilinear(x, SIZE, SIZE).sub_(128).div_(128)
    x = F.interpolate(x.div_(255), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return x.mul_(2).sub_(1)


def _tf1_weights(n_in: int, n_out: int) -> torch.Tensor:
    """Interpolation matrix (n_out, n_in) of TF 1.x resize_bilinear, align_corners=False:
    output pixel i reads the input at i * n_in / n_out (no half-pixel offset)."""
    scale = n_in / n_out
    src = torch.arange(n_out, dtype=torch.float64) * scale
    low = src.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    frac = src - low.double()
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w[rows, low] += 1 - frac
    w[rows, high] += frac
    return w


def tf1_resize_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TensorFlow 1.x bilinear resize of float images (B, C, H, W), as a separable product."""
    wh = _tf1_weights(x.shape[2], height).to(x.device, torch.float64)  # (height, H)
    ww = _tf1_weights(x.shape[3], width).to(x.device, torch.float64)  # (width, W)
    out = torch.einsum("oh,bchw,pw->bcop", wh, x.double(), ww)
    return out.to(x.dtype).contiguous()


def _pil_bicubic(images: torch.Tensor) -> torch.Tensor:
    """clean-fid's resize: each channel a float32 PIL image, bicubic to 299, clipped."""
    out = np.empty((images.shape[0], 3, SIZE, SIZE), dtype=np.float32)
    arrays = images.cpu().numpy().astype(np.float32)
    for b in range(arrays.shape[0]):
        for c in range(3):
            resized = Image.fromarray(arrays[b, c], mode="F").resize(
                (SIZE, SIZE), resample=Image.Resampling.BICUBIC
            )
            out[b, c] = np.asarray(resized).clip(0, 255)
    return torch.from_numpy(out)
