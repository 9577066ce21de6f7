"""Registries of the layer choices that the ablations switch.

Each registry maps a config value to a factory. Adding a choice is one line
here; the config validation, the tests and the ablation files find it by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# model.activation: name -> () -> module
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
}


class PaperLRN(nn.Module):
    """Local response normalisation exactly as in the paper (section 3.3).

    b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2) ** beta

    torch's LocalResponseNorm averages the squares over the window (it divides
    alpha by n), so on CUDA the paper's alpha goes to its kernel as alpha * n. On
    the CPU the window is summed from n shifted slices, which trains about twice
    as fast there as torch's pooling-based layer (forward and backward, 1 thread).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return F.local_response_norm(x, self.size, self.alpha * self.size, self.beta, self.k)
        channels = x.shape[1]
        squares = F.pad(x.square(), (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        window = squares[:, :channels]
        for shift in range(1, self.size):
            window = window + squares[:, shift : shift + channels]
        return x * (self.k + self.alpha * window).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"n={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def _lrn(channels: int, dims: int, momentum: float, eps: float) -> nn.Module:
    # a normalisation across feature maps: after fully connected layers there are none
    return PaperLRN() if dims == 2 else nn.Identity()


def _batchnorm(channels: int, dims: int, momentum: float, eps: float) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=eps, momentum=momentum)


# model.norm: name -> (channels, dims: 2 after convolutions / 1 after dense layers,
# BatchNorm momentum in torch's convention, epsilon) -> module
NORMS: dict[str, Callable[[int, int, float, float], nn.Module]] = {
    "lrn": _lrn,
    "batchnorm": _batchnorm,
    "none": lambda channels, dims, momentum, eps: nn.Identity(),
}

# model.pool: name -> (ceil_mode) -> module
POOLS: dict[str, Callable[[bool], nn.Module]] = {
    "overlapping": lambda ceil_mode: nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode),
    "non_overlapping": lambda ceil_mode: nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode),
}
