"""The networks, built from the layer registries.

| model.arch | what | input |
|---|---|---|
| `alexnet` | the paper's ImageNet network (section 3.5, Figure 2) | 227 |
| `cifar` | a small CIFAR-10 network: the trunk of cuda-convnet's layers-18pct with the ImageNet network's choices (`cifar()`) | 32 |
| `cifar_fc` | the `cifar` trunk with two hidden fully connected layers and dropout before each, as in the paper's fc6, fc7 (`cifar_fc()`) | 32 |
| `tutorial` | the Keras AlexNet of the tutorial this project grew from (shared/seed), as its code is written | 224 |

`ModelConfig` is the `model` section of the configuration; its names are keys of
the registries here and in `layers.py`. Every network is a plain `nn.Sequential` of named layers (features -> flatten ->
classifier), so summaries, filters and initialisations need no special cases.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from core.config import require, require_choice
from core.errors import ConfigError
from lightning_modules.layers import ACTIVATIONS, NORMS, POOLS


@dataclass
class ModelConfig:
    arch: str = "alexnet"  # a key of ARCHS (below)
    num_classes: int | None = None  # None: follow the dataset
    activation: str = "relu"  # a key of layers.ACTIVATIONS
    norm: str = "lrn"  # a key of layers.NORMS
    pool: str = "overlapping"  # a key of layers.POOLS
    dropout: float = 0.5
    groups: Literal[1, 2] = 2
    init: str = "paper"  # a key of INITS (below)
    bn_momentum: float = 0.1  # torch's convention (Keras's 0.99 is torch's 0.01)
    bn_eps: float = 1e-5
    sync_batchnorm: bool = True  # BatchNorm -> SyncBatchNorm under DDP

    def validate(self) -> None:
        for key, value, registry in [
            ("model.arch", self.arch, ARCHS),
            ("model.activation", self.activation, ACTIVATIONS),
            ("model.norm", self.norm, NORMS),
            ("model.pool", self.pool, POOLS),
            ("model.init", self.init, INITS),
        ]:
            require_choice(key, value, registry)
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a probability in [0, 1)")
        require(self.num_classes is None or self.num_classes >= 2, "model.num_classes", self.num_classes, "null or >= 2")
        require(0.0 < self.bn_momentum <= 1.0, "model.bn_momentum", self.bn_momentum, "in (0, 1]")
        require(self.bn_eps > 0, "model.bn_eps", self.bn_eps, "> 0")


class Network(nn.Sequential):
    """features (convolutions) -> flatten -> classifier, with named layers.
    `bias_one`: the layers whose biases the paper's initialisation sets to 1."""

    def __init__(self, arch: str, features: OrderedDict, classifier: OrderedDict, bias_one: frozenset[str] = frozenset()):
        super().__init__(OrderedDict([("features", nn.Sequential(features)), ("flatten", nn.Flatten()), ("classifier", nn.Sequential(classifier))]))
        self.arch, self.bias_one = arch, bias_one

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.features.conv1


class _Layers(OrderedDict):
    """Named layers in order, made from the model config's registry choices."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg

    def conv(self, i: int, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        self[f"conv{i}"] = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups)
        self[f"act{i}"] = ACTIVATIONS[self.cfg.activation]()

    def dense(self, i: int, fin: int, fout: int, activation: bool = True) -> None:
        self[f"fc{i}"] = nn.Linear(fin, fout)
        if activation:
            self[f"act{i}"] = ACTIVATIONS[self.cfg.activation]()

    def norm(self, name: str, channels: int, dims: int = 2) -> None:
        self[name] = NORMS[self.cfg.norm](channels, dims, self.cfg.bn_momentum, self.cfg.bn_eps)

    def pool(self, name: str, ceil_mode: bool = False) -> None:
        self[name] = POOLS[self.cfg.pool](ceil_mode)

    def dropout(self, name: str) -> None:
        self[name] = nn.Dropout(self.cfg.dropout)


def alexnet(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    """The paper's network: ReLU, then LRN, then pooling after conv1 and conv2;
    conv2, conv4 and conv5 split in two groups (the two GPUs); dropout before fc6, fc7."""
    g = cfg.groups
    f = _Layers(cfg)
    f.conv(1, 3, 96, 11, stride=4)
    f.norm("norm1", 96)
    f.pool("pool1")
    f.conv(2, 96, 256, 5, pad=2, groups=g)
    f.norm("norm2", 256)
    f.pool("pool2")
    f.conv(3, 256, 384, 3, pad=1)  # conv3 sees both GPUs' maps
    f.conv(4, 384, 384, 3, pad=1, groups=g)
    f.conv(5, 384, 256, 3, pad=1, groups=g)
    f.pool("pool5")
    side = _feature_side("alexnet", f, image_size)
    c = _Layers(cfg)
    c.dropout("drop6")
    c.dense(6, 256 * side * side, 4096)
    c.dropout("drop7")
    c.dense(7, 4096, 4096)
    c.dense(8, 4096, num_classes, activation=False)
    return Network("alexnet", f, c, frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"}))


def _cifar_trunk(cfg: ModelConfig) -> _Layers:
    """The convolutions of `cifar` and `cifar_fc`: conv 5x5 32 -> pool -> norm ->
    conv 5x5 32 -> pool -> norm -> conv 5x5 64 -> pool (see `cifar`)."""
    g = cfg.groups
    f = _Layers(cfg)
    f.conv(1, 3, 32, 5, pad=2)
    f.pool("pool1", ceil_mode=True)
    f.norm("norm1", 32)
    f.conv(2, 32, 32, 5, pad=2, groups=g)
    f.pool("pool2", ceil_mode=True)
    f.norm("norm2", 32)
    f.conv(3, 32, 64, 5, pad=2, groups=g)
    f.pool("pool3", ceil_mode=True)
    return f


def cifar(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    """conv 5x5 32 -> pool -> norm -> conv 5x5 32 -> pool -> norm -> conv 5x5 64 ->
    pool -> dropout -> fc. The trunk of cuda-convnet's layers-18pct, not that file
    exactly: it has max pooling after every convolution (layers-18pct averages after
    conv2 and conv3), normalisation by `model.norm` (the paper's cross-map LRN, n=5;
    layers-18pct normalises over 3x3 neighbourhoods within a map), dropout before
    the classifier and one learning rate for all layers. `model.groups` splits conv2
    and conv3 as the two-GPU layout splits AlexNet's; ceil-mode pooling, as in
    cuda-convnet, keeps 32 -> 16 -> 8 -> 4 for both pooling variants.
    Its one dropout layer sits on the input of the 10-way output layer, not on hidden
    layers as in the paper; `cifar_fc` has hidden layers for it."""
    f = _cifar_trunk(cfg)
    side = _feature_side("cifar", f, image_size)
    c = _Layers(cfg)
    c.dropout("drop4")
    c.dense(4, 64 * side * side, num_classes, activation=False)
    return Network("cifar", f, c)


CIFAR_FC_HIDDEN = 512  # the width of cifar_fc's hidden layers (see cifar_fc)


def cifar_fc(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    """The `cifar` trunk (the same convolutions, pools, norms and `model.groups`), then
    the paper's kind of classifier: dropout -> fc4 -> activation -> dropout -> fc5 ->
    activation -> fc6. Dropout (`model.dropout`) sits where the paper's does, on the
    inputs of the two hidden layers (AlexNet's drop6 before fc6, drop7 before fc7), so
    the dropout ablation can be run where the paper made its claim.

    What it is not: the paper's classifier at the paper's scale, nor a network of the
    authors' (layers-18pct has no hidden fully connected layer; layers-80sec one of 64
    units, without dropout). The hidden layers are 512 wide (CIFAR_FC_HIDDEN), not
    4096: at 32 px the trunk gives 64x4x4 = 1,024 features, and 1,024 -> 512 -> 512
    narrows about as the paper's 9,216 -> 4,096 does; 512 keeps the classifier at
    0.8 M parameters and 0.8 M multiply-adds per image, about a tenth of the trunk's
    (7.4 M grouped, 12.3 M with model.groups=1), where 4,096 would add 21 M of each,
    more than all the convolutions, which a CPU run cannot afford.

    Under `model.init=paper` the biases of the hidden layers fc4 and fc5 are 1, as
    AlexNet's fc6 and fc7 (the paper's "fully connected hidden layers"); the
    convolutions keep `cifar`'s zero biases (the paper's conv2, conv4, conv5 have no
    counterparts in a three-convolution trunk), so under every initialisation the two
    networks' trunks follow the same rule and differ only in the draws."""
    f = _cifar_trunk(cfg)
    side = _feature_side("cifar_fc", f, image_size)
    h = CIFAR_FC_HIDDEN
    c = _Layers(cfg)
    c.dropout("drop4")
    c.dense(4, 64 * side * side, h)
    c.dropout("drop5")
    c.dense(5, h, h)
    c.dense(6, h, num_classes, activation=False)
    return Network("cifar_fc", f, c, frozenset({"fc4", "fc5"}))


def tutorial(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    """The tutorial's Keras model as its code is written: every convolution and pooling
    'valid'; conv -> ReLU -> pool -> BatchNorm; dense -> ReLU -> dropout -> BatchNorm.
    `model.norm` replaces each of its BatchNorm layers (lrn: LRN after the convolutions,
    nothing after the dense layers, where there are no feature maps to normalise across);
    `model.pool` its 2x2/2 pools; `model.groups` splits conv2, conv4, conv5 as in the paper."""
    g = cfg.groups
    f = _Layers(cfg)
    f.conv(1, 3, 96, 11, stride=4)
    f.pool("pool1")
    f.norm("norm1", 96)
    f.conv(2, 96, 256, 5, groups=g)
    f.pool("pool2")
    f.norm("norm2", 256)
    f.conv(3, 256, 384, 3)
    f.norm("norm3", 384)
    f.conv(4, 384, 384, 3, groups=g)
    f.norm("norm4", 384)
    f.conv(5, 384, 256, 3, groups=g)
    f.pool("pool5")
    f.norm("norm5", 256)
    side = _feature_side("tutorial", f, image_size)
    c = _Layers(cfg)
    for i, (fin, fout) in enumerate([(256 * side * side, 4096), (4096, 4096), (4096, 1000)], start=6):
        c.dense(i, fin, fout)
        c.dropout(f"drop{i}")
        c.norm(f"norm{i}", fout, dims=1)
    c.dense(9, 1000, num_classes, activation=False)
    return Network("tutorial", f, c, frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"}))


@dataclass(frozen=True)
class Arch:
    build: Callable[[ModelConfig, int, int], Network]
    input_size: int  # the native input size; data.image_size defaults to it


# model.arch: name -> how to build it
ARCHS: dict[str, Arch] = {
    "alexnet": Arch(alexnet, 227),
    "cifar": Arch(cifar, 32),
    "cifar_fc": Arch(cifar_fc, 32),
    "tutorial": Arch(tutorial, 224),
}


def input_size(arch: str) -> int:
    return ARCHS[arch].input_size


def _feature_side(arch: str, features: OrderedDict, image_size: int) -> int:
    """Side length of the last feature map, or a clear error if the input is too small."""
    probe = nn.Sequential(features)
    try:
        with torch.no_grad():
            out = probe.eval()(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError:
        out = None
    finally:
        probe.train()
    if out is None or out.shape[-1] < 1:
        raise ConfigError(
            f"data.image_size={image_size} is too small for model.arch={arch}; use data.image_size={input_size(arch)} (its native size) or larger"
        )
    return out.shape[-1]


def _weighted(net: Network):
    return [(name, m) for name, m in [*net.features.named_children(), *net.classifier.named_children()] if isinstance(m, (nn.Conv2d, nn.Linear))]


def init_paper(net: Network) -> None:
    """The paper's initialisation: weights N(0, 0.01); biases 1 in conv2, conv4,
    conv5, fc6 and fc7 (to give ReLUs positive inputs early on), 0 elsewhere."""
    for name, module in _weighted(net):
        nn.init.normal_(module.weight, mean=0.0, std=0.01)
        nn.init.constant_(module.bias, 1.0 if name in net.bias_one else 0.0)


def init_authors_cifar(net: Network) -> None:
    """The authors' CIFAR-10 initialisation, from cuda-convnet's layers-18pct
    (example-layers/layers-18pct.cfg): the first convolution's weights N(0, 1e-4)
    (initW=0.0001), every other convolution's and fully connected layer's N(0, 0.01).
    Biases 0 everywhere: the file sets no initB, and cuda-convnet's default is 0
    (PAPER.md gives no bias initialisation for it). Written for the CIFAR-10 networks;
    on the others it is the same rule (conv1 at 1e-4, the rest at 0.01), not anything
    the authors published for them, and it ignores the paper's biases of 1."""
    first = net.first_conv
    for _, module in _weighted(net):
        nn.init.normal_(module.weight, mean=0.0, std=1e-4 if module is first else 0.01)
        nn.init.zeros_(module.bias)


def init_keras(net: Network) -> None:
    """Keras's defaults: Glorot-uniform weights, zero biases."""
    for _, module in _weighted(net):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


# model.init: name -> what it does to a freshly built network
INITS: dict[str, Callable[[Network], None]] = {
    "paper": init_paper,
    "default": lambda net: None,  # PyTorch's (Kaiming-uniform with a = sqrt(5))
    "keras": init_keras,
    "authors_cifar": init_authors_cifar,
}


def build_network(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    net = ARCHS[cfg.arch].build(cfg, num_classes, image_size)
    INITS[cfg.init](net)
    return net
