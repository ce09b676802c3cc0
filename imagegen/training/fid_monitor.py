"""FID during training: the EMA model's FID against the training data, with fixed latents and a
fixed, cached reference, so that the figures of one run can be compared with each other."""

from dataclasses import replace
from typing import Any

import torch

from imagegen.data import datasets as data
from imagegen.data.decode import Fitting, composite
from imagegen.evaluation import inception, metrics
from imagegen.evaluation.reference import reference_features
from imagegen.models.base import GenerativeModel
from imagegen.sampling.generation import generate_uint8, proportional_labels


class FIDMonitor:
    """FID of a sampling network against `n` training images, with `n` fixed latents."""

    def __init__(
        self,
        dataset: str,
        images: data.ImageData,
        n: int,
        latent_dim: int,
        seed: int,
        data_root: str | None,
        device: torch.device,
        fitting: Fitting,
        class_counts: list[int] | None = None,
    ) -> None:
        """`class_counts`: a conditional model's images per class in the data, whose
        proportions the generated images' classes follow."""
        self.extractor = inception.load_extractor(None, device)
        self.device = device
        c, res, _ = images.shape
        self.background = fitting.background  # RGBA samples are composited onto it, and the
        if c == 4:  # reference images too
            c, fitting = 3, replace(fitting, keep_alpha=False)
        real, _ = reference_features(
            self.extractor,
            dataset,
            split="train",
            resolution=res,
            channels=c,
            n=n,
            root=data_root,
            batch_size=64,
            fitting=fitting,
        )
        self.reference = metrics.gaussian_stats(real.numpy())
        self.z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed + 3))
        self.labels = proportional_labels(n, class_counts) if class_counts else None
        self.protocol: dict[str, Any] = self.extractor.describe() | {
            "reference_images": int(real.shape[0])
        }

    def fid(self, model: GenerativeModel, net: torch.nn.Module) -> float:
        """FID of `net` (the model's sampling network, e.g. its EMA copy)."""
        images = generate_uint8(model, self.z, self.device, net, labels=self.labels)
        if images.shape[1] == 4:
            images = composite(images, self.background)
        fake = self.extractor.features(images)
        return metrics.frechet_distance(*metrics.gaussian_stats(fake.numpy()), *self.reference)
