"""Train and eval pipelines.

Images travel as uint8 tensors at their stored size (a little larger than the
network's input, or the input size itself for small images). The paper's
augmentation (random crops, horizontal flips, PCA lighting noise) and the eval
crops run on whole batches, on the device the model is on, in
`BatchPipeline`; only the `extended` setting adds a per-image albumentations
pipeline, which runs in the loader's workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def stored_size(image_size: int) -> int:
    """Side at which images are kept: the paper keeps 256 px for 227 px crops (253 px
    for 224, the same ratio).
    Small images are kept at the input size and cropped from a zero-padded copy."""
    return image_size if image_size <= 64 else round(image_size * 256 / 227)


def _extended_sample_pipeline() -> Callable[[np.ndarray], np.ndarray]:
    import albumentations as A

    pipeline = A.Compose(
        [
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8),
            A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), translate_percent=(-0.05, 0.05), p=0.7),
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3), fill=0, p=0.5),
        ]
    )
    return lambda hwc: pipeline(image=hwc)["image"]


@dataclass(frozen=True)
class TrainAugment:
    crop: bool  # random crops (else the centre crop)
    flip: bool  # random horizontal flips
    lighting: float  # std of the PCA lighting noise alpha (0 switches it off)
    sample_pipeline: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None  # per-image, CPU


# data.augment: name -> what the training pipeline does.
TRAIN_AUGMENTS: dict[str, TrainAugment] = {
    "none": TrainAugment(crop=False, flip=False, lighting=0.0),
    "paper": TrainAugment(crop=True, flip=True, lighting=0.1),
    "crops_flips": TrainAugment(crop=True, flip=True, lighting=0.0),  # the paper's without PCA lighting
    "extended": TrainAugment(crop=True, flip=True, lighting=0.1, sample_pipeline=_extended_sample_pipeline),
}


def image_statistics(images: torch.Tensor, max_images: int = 10_000, seed: int = 0, chunk: int = 64) -> dict[str, torch.Tensor]:
    """From up to `max_images` uint8 NCHW images, in [0, 1] units: the per-channel mean
    and std, the RGB covariance's eigen-decomposition (the paper's PCA lighting), and
    the mean image (per pixel and channel: what the paper subtracts)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:max_images]
    # accumulated in chunks: a float64 copy of 10,000 images at 256 px would take 16 GB
    n, total, outer = 0, torch.zeros(3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)
    image_sum = torch.zeros(images.shape[1:], dtype=torch.float64)
    for start in range(0, len(idx), chunk):
        part = images[idx[start : start + chunk]].double() / 255.0
        image_sum += part.sum(dim=0)
        pixels = part.permute(1, 0, 2, 3).reshape(3, -1)
        n += pixels.shape[1]
        total += pixels.sum(dim=1)
        outer += pixels @ pixels.T
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / max(n - 1, 1)
    eigval, eigvec = torch.linalg.eigh(cov)
    return {
        "mean": mean.float(),
        "std": cov.diagonal().clamp_min(0).sqrt().clamp_min(1e-3).float(),
        "eigval": eigval.clamp_min(0).float(),
        "eigvec": eigvec.float(),  # columns are eigenvectors
        "mean_image": (image_sum / max(len(idx), 1)).float(),
    }


class BatchPipeline(nn.Module):
    """uint8 [B, 3, S, S] -> float [B, 3, s, s] (train), or [B, 3, s, s] /
    [B, 10, 3, s, s] with ten crops (eval).

    normalize="standard": each channel to zero mean and unit variance ([0, 1] pixel
    units). normalize="paper": the paper's only preprocessing, "subtracting the mean
    activity over the training set from each pixel": raw 0..255 values minus the
    mean image, no division, so inputs span roughly -128..128 (about 60 times the
    standardised ones; the paper's N(0, 0.01) weights were chosen for that scale).
    normalize="unit": pixels / 255, in [0, 1], nothing subtracted (the tutorial's
    loader, tflearn's oxflower17, scales its images so)."""

    def __init__(self, image_size: int, stats: dict[str, torch.Tensor], augment: TrainAugment, ten_crop: bool = False, normalize: str = "standard"):
        super().__init__()
        if normalize not in ("standard", "paper", "unit"):
            raise ValueError(f"normalize must be 'standard', 'paper' or 'unit', not {normalize!r}")
        self.size, self.augment, self.ten_crop, self.normalize = image_size, augment, ten_crop, normalize
        self.pad = image_size // 8  # for images stored at the input size
        for key in ("mean", "std", "eigval", "eigvec", "mean_image"):
            self.register_buffer(key, stats[key].clone(), persistent=True)

    def _normalise(self, x: torch.Tensor, lighting: float) -> torch.Tensor:
        # a fresh float copy, changed in place from here on: on the CPU, (x / 255 - mean) / std as
        # four new tensors took twice the time of x * (1 / (255 std)) - mean / std in place (batch
        # 128 at 32 px, cache flushed: 0.29 against 0.15 ms; docs/performance.md)
        x = x.to(torch.float32, copy=True)
        if lighting > 0:  # the paper's PCA lighting: sum_i alpha_i lambda_i p_i per image, alpha ~ N(0, lighting)
            alpha = torch.randn(x.shape[0], 3, device=x.device) * lighting
            shift = (alpha * self.eigval) @ self.eigvec.T  # [B, 3], in [0, 1] units
            x += 255.0 * shift[:, :, None, None]
        if self.normalize == "paper":
            return x.sub_(self.mean_image, alpha=255.0)
        if self.normalize == "unit":
            return x.div_(255.0)
        scale = 1.0 / (255.0 * self.std)
        return x.mul_(scale[:, None, None]).sub_((self.mean / self.std)[:, None, None])

    def _random_crop(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.size:
            x = nn.functional.pad(x, [self.pad] * 4)  # zero: the mean colour if standardised, black with normalize=unit
        b, s, side = x.shape[0], self.size, x.shape[-1]
        oy = torch.randint(0, side - s + 1, (b,), device=x.device)
        ox = torch.randint(0, side - s + 1, (b,), device=x.device)
        base = torch.arange(s, device=x.device)
        rows = (oy[:, None] + base)[:, :, None]
        cols = (ox[:, None] + base)[:, None, :]
        return x[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()

    def _centre(self, x: torch.Tensor, dy: int | None = None, dx: int | None = None) -> torch.Tensor:
        side = x.shape[-1]
        dy = (side - self.size) // 2 if dy is None else dy
        dx = (side - self.size) // 2 if dx is None else dx
        return x[:, :, dy : dy + self.size, dx : dx + self.size]

    def train_batch(self, images: torch.Tensor) -> torch.Tensor:
        a = self.augment
        x = self._normalise(images, a.lighting)
        x = self._random_crop(x) if a.crop else self._centre(x)
        if a.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        x = self._normalise(images, 0.0)
        if not self.ten_crop:
            return self._centre(x).contiguous()
        m = x.shape[-1] - self.size
        crops = [self._centre(x, dy, dx) for dy, dx in [(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]]
        crops += [c.flip(-1) for c in crops]
        return torch.stack(crops, dim=1).contiguous()
