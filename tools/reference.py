"""An independent reference for the bench: the small CIFAR-10 network with each of the
ablations' layer choices (activation, normalisation, pooling, dropout, groups), the
tutorial's network at 224 px, or, on a GPU, the paper's AlexNet, trained in a plain
PyTorch loop, written from torch alone (import-linter keeps this file free of the
project's code), the way a performance-minded engineer would for the device.

Its own network definition, its own batching of images resident on the device, its own
normalisation and augmentation, the memory format and precision that are fastest for
the device (channels-last; bf16 autocast on CUDA), SGD with momentum and weight decay
on the weights only. `step()` trains on one batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Tanh(nn.Module):
    """tanh in place: its gradient needs only its output, and the convolution before it
    does not need its own output, so the activation can overwrite it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh_(x)


class CrossMapLRN(nn.Module):
    """b_c = a_c / (k + alpha * sum of a_j^2 over the n maps j centred on c) ** beta (the
    paper's section 3.3). The window sum is a 1x1 convolution with a banded 0/1 matrix:
    one matrix product over the pixels in channels-last memory."""

    def __init__(self, channels: int, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        i = torch.arange(channels)
        band = ((i.view(-1, 1) - i.view(1, -1)).abs() <= n // 2).float()
        self.register_buffer("band", band.view(channels, channels, 1, 1))
        self.alpha, self.beta, self.k = alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = nn.functional.conv2d(x * x, self.band)
        return x * (window * self.alpha + self.k).pow(-self.beta)


def _activation(name: str) -> nn.Module:
    return {"relu": lambda: nn.ReLU(inplace=True), "tanh": Tanh}[name]()


def _norm(name: str, channels: int, dims: int = 2) -> nn.Module:
    if name == "lrn":  # across feature maps: none after the dense layers
        return CrossMapLRN(channels) if dims == 2 else nn.Identity()
    if name == "batchnorm":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    return nn.Identity()


def _pool(name: str, ceil_mode: bool) -> nn.Module:
    return nn.MaxPool2d(3, 2, ceil_mode=ceil_mode) if name == "overlapping" else nn.MaxPool2d(2, 2, ceil_mode=ceil_mode)


def small_cifar_network(num_classes: int = 10, activation: str = "relu", norm: str = "none", pool: str = "overlapping",
                        dropout: float = 0.0, groups: int = 1) -> nn.Sequential:  # fmt: skip
    """Three 5x5 convolutions of 32, 32 and 64 maps, each followed by the activation and
    max-pooling (ceil mode: 32 -> 16 -> 8 -> 4 with 3x3/2 overlapping windows or 2x2/2
    ones); the normalisation after the first two pools; the second and third convolutions
    in `groups` groups; dropout before the one fully connected layer."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate([(3, 32), (32, 32), (32, 64)]):
        layers += [nn.Conv2d(cin, cout, 5, padding=2, groups=groups if i else 1), _activation(activation), _pool(pool, True)]
        if i < 2:
            layers.append(_norm(norm, cout))
    if dropout:
        layers += [nn.Flatten(), nn.Dropout(dropout, inplace=True)]  # the flattened channels-last maps are a fresh copy
    else:
        layers.append(nn.Flatten())
    return nn.Sequential(*layers, nn.Linear(64 * 4 * 4, num_classes))


def tutorial_network(num_classes: int = 10, activation: str = "relu", norm: str = "batchnorm", pool: str = "non_overlapping",
                     dropout: float = 0.4, groups: int = 1) -> nn.Sequential:  # fmt: skip
    """The Keras AlexNet of the tutorial this project grew from, at 224 px: five 'valid'
    convolutions (96 11x11/4, 256 5x5, 384, 384 and 256 3x3; the second, fourth and fifth
    in `groups` groups), pooling after the first, second and fifth, the normalisation
    after every block; three dense layers (4096, 4096, 1000), each followed by the
    activation, dropout and the normalisation; then the classifier."""
    layers: list[nn.Module] = []
    for i, (cin, cout, k, stride, pooled) in enumerate([(3, 96, 11, 4, True), (96, 256, 5, 1, True), (256, 384, 3, 1, False),
                                                        (384, 384, 3, 1, False), (384, 256, 3, 1, True)]):  # fmt: skip
        layers += [nn.Conv2d(cin, cout, k, stride=stride, groups=groups if i in (1, 3, 4) else 1), _activation(activation)]
        if pooled:
            layers.append(_pool(pool, False))
        layers.append(_norm(norm, cout))
    pooled = lambda side: (side - (3 if pool == "overlapping" else 2)) // 2 + 1  # noqa: E731
    side = pooled(pooled((224 - 11) // 4 + 1) - 4) - 6  # conv1, pool1, conv2, pool2, conv3 to conv5
    side = pooled(side)  # pool5: 2 (non-overlapping), 1 (overlapping)
    layers.append(nn.Flatten())
    for fin, fout in [(256 * side * side, 4096), (4096, 4096), (4096, 1000)]:
        layers += [nn.Linear(fin, fout), _activation(activation), nn.Dropout(dropout), _norm(norm, fout, dims=1)]
    return nn.Sequential(*layers, nn.Linear(1000, num_classes))


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
    (32: the small network, images kept at 32 and padded by 4 for crops; 224: the
    tutorial's, 227: AlexNet, images kept larger). arch: "small", "tutorial" or
    "alexnet" (None: the small network at 32 px, else AlexNet); `layers` (activation,
    norm, pool, dropout, groups) choose the small or tutorial network's layers.
    augment: random crops, horizontal flips, and PCA lighting noise (alpha ~ N(0, 0.1)
    along the RGB covariance's eigenvectors); else the centre crop."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch: int = 128, augment: bool = False, seed: int = 0,
                 device: str = "cpu", size: int = 32, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                 arch: str | None = None, num_classes: int | None = None, **layers):  # fmt: skip
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
        classes = num_classes or int(labels.max()) + 1
        arch = arch or ("small" if size == 32 else "alexnet")
        if arch == "small":
            network = small_cifar_network(classes, **layers)
        elif arch == "tutorial":
            network = tutorial_network(classes, **layers)
        else:
            network = alexnet_network(classes)
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
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)  # whole rows copied, not element by element

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


def read_image_folder(folder: Path, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """folder/<class>/<image>, classes in sorted order, as uint8 [N, 3, size, size] and labels."""
    import numpy as np
    from PIL import Image

    images, labels = [], []
    for c, klass in enumerate(sorted(d for d in folder.iterdir() if d.is_dir())):
        for path in sorted(klass.iterdir()):
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB").resize((size, size)) if im.size != (size, size) else im.convert("RGB")))
            labels.append(c)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def main(argv: list[str] | None = None) -> int:
    """Trains the reference on an image folder for whole epochs and prints each epoch's
    training images/s: the reference side of a whole-run comparison with `make train`."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m tools.reference", description=main.__doc__)
    parser.add_argument("root", type=Path, help="a folder holding train/<class>/<image>")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--activation", default="relu", choices=["relu", "tanh"])
    parser.add_argument("--norm", default="none", choices=["none", "lrn", "batchnorm"])
    parser.add_argument("--pool", default="overlapping", choices=["overlapping", "non_overlapping"])
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--groups", type=int, default=1, choices=[1, 2])
    args = parser.parse_args(argv)
    images, labels = read_image_folder(args.root / "train")
    layers = {"activation": args.activation, "norm": args.norm, "pool": args.pool, "dropout": args.dropout, "groups": args.groups}
    loop = ReferenceLoop(images, labels, args.batch, args.augment, lr=args.lr, **layers)
    steps = len(labels) // args.batch
    for epoch in range(args.epochs):
        start = time.perf_counter()
        for _ in range(steps):
            loop.step()
        print(f"epoch {epoch + 1}/{args.epochs}  {steps * args.batch / (time.perf_counter() - start):.0f} img/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
