"""An independent reference for the bench: the small CIFAR-10 network (or, on a GPU,
the paper's AlexNet) trained in a plain PyTorch loop, written from torch alone (import-linter keeps this file free of the
project's code), the way a performance-minded engineer would for the device.

Its own network definition, its own batching of images resident on the device, its own
normalisation and augmentation, the memory format and precision that are fastest for
the device (channels-last; bf16 autocast on CUDA), SGD with momentum and weight decay
on the weights only. `step()` trains on one batch.
"""

from __future__ import annotations

import torch
from torch import nn


def small_cifar_network(num_classes: int = 10, activation=nn.ReLU) -> nn.Sequential:
    """Three 5x5 convolutions of 32, 32 and 64 maps, each followed by 3x3/2 max-pooling
    (ceil mode: 32 -> 16 -> 8 -> 4), and one fully connected layer."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), activation(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 32, 5, padding=2), activation(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), activation(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, num_classes),
    )  # fmt: skip


def alexnet_network(num_classes: int = 10) -> nn.Sequential:
    """The paper's network at 227 px: local response normalisation as the paper writes it
    (torch's layer divides alpha by the window, so alpha = 5 x 1e-4), conv2, conv4 and
    conv5 in two groups, dropout 0.5 before fc6 and fc7."""
    lrn = lambda: nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes),
    )  # fmt: skip


class ReferenceLoop:
    """images: uint8 [N, 3, S, S]; labels: int64 [N]. The network's input is `size`
    (32: the small network, images kept at 32 and padded by 4 for crops; 227: AlexNet,
    images kept larger). augment: random crops, horizontal flips, and PCA lighting noise
    (alpha ~ N(0, 0.1) along the RGB covariance's eigenvectors); else the centre crop."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch: int = 128, augment: bool = False, seed: int = 0,
                 device: str = "cpu", size: int = 32, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):  # fmt: skip
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.batch, self.augment, self.size = batch, augment, size
        self.pad = 4 if images.shape[-1] == size else 0
        torch.manual_seed(seed)
        self.images = images.to(self.device)  # resident on the device
        self.labels = labels.to(self.device)
        pixels = self.images[: min(len(images), 1000)].permute(1, 0, 2, 3).reshape(3, -1).float() / 255.0
        self.mean = pixels.mean(1).view(1, 3, 1, 1)
        self.std = pixels.std(1).view(1, 3, 1, 1)
        eigval, eigvec = torch.linalg.eigh(torch.cov(pixels))
        self.lighting = (eigval.clamp_min(0), eigvec)
        network = small_cifar_network() if size == 32 else alexnet_network(int(labels.max()) + 1)
        self.net = network.to(self.device, memory_format=torch.channels_last)
        decay = [p for p in self.net.parameters() if p.dim() > 1]
        rest = [p for p in self.net.parameters() if p.dim() <= 1]
        self.opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=lr, momentum=momentum)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.order = torch.randperm(len(labels), generator=self.generator, device=self.device)
        self.position = 0

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position + self.batch > len(self.order):
            self.order = torch.randperm(len(self.order), generator=self.generator, device=self.device)
            self.position = 0
        idx = self.order[self.position : self.position + self.batch]
        self.position += self.batch
        return self.images[idx], self.labels[idx]

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        b, g = x.shape[0], self.generator
        eigval, eigvec = self.lighting
        alpha = torch.randn(b, 3, generator=g, device=self.device) * 0.1
        x = x + ((alpha * eigval) @ eigvec.T).view(b, 3, 1, 1) / self.std
        padded = nn.functional.pad(x, (self.pad,) * 4)
        s, room = self.size, padded.shape[-1] - self.size + 1
        dy = torch.randint(0, room, (b,), generator=g, device=self.device)
        dx = torch.randint(0, room, (b,), generator=g, device=self.device)
        rows = (dy.view(b, 1) + torch.arange(s, device=self.device)).view(b, 1, s, 1).expand(b, 3, s, s)
        cols = (dx.view(b, 1) + torch.arange(s, device=self.device)).view(b, 1, 1, s).expand(b, 3, s, s)
        images = torch.arange(b, device=self.device).view(b, 1, 1, 1)
        channels = torch.arange(3, device=self.device).view(1, 3, 1, 1)
        x = padded[images, channels, rows, cols]
        flip = torch.rand(b, generator=g, device=self.device) < 0.5
        return torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)

    def step(self) -> None:
        images, labels = self._batch()
        x = (images.float() / 255.0 - self.mean) / self.std
        if self.augment:
            x = self._augment(x)
        elif x.shape[-1] != self.size:
            o = (x.shape[-1] - self.size) // 2
            x = x[:, :, o : o + self.size, o : o + self.size]
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            loss = nn.functional.cross_entropy(self.net(x), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
