"""The paper's two networks, built from the layer registries.

`alexnet` is the ImageNet network of the paper (section 3.5, Figure 2) at
227 x 227; `cifar` is the small CIFAR-10 network of the authors' cuda-convnet
config layers-18pct, which the paper's CIFAR-10 claims come from. Both are plain
`nn.Sequential`s with named layers, so summaries and filters need no special
cases.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ablations.config import ConfigError, ModelConfig
from lightning_modules.layers import ACTIVATIONS, NORMS, POOLS

# The architecture's native input size; data.image_size defaults to it.
INPUT_SIZE = {"alexnet": 227, "cifar": 32}

# Layers whose biases the paper initialises to 1 (the rest to 0).
PAPER_BIAS_ONE = {"alexnet": {"conv2", "conv4", "conv5", "fc6", "fc7"}, "cifar": set()}


class Network(nn.Sequential):
    """features (convolutions) -> flatten -> classifier, with named layers."""

    def __init__(self, arch: str, features: OrderedDict, classifier: OrderedDict):
        super().__init__(OrderedDict([("features", nn.Sequential(features)), ("flatten", nn.Flatten()), ("classifier", nn.Sequential(classifier))]))
        self.arch = arch

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.features.conv1


def _conv_block(layers: OrderedDict, i: int, cin: int, cout: int, k: int, s: int, p: int, g: int, cfg: ModelConfig) -> None:
    layers[f"conv{i}"] = nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g)
    layers[f"act{i}"] = ACTIVATIONS[cfg.activation]()


def alexnet(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    g = cfg.groups
    f: OrderedDict = OrderedDict()
    _conv_block(f, 1, 3, 96, 11, 4, 0, 1, cfg)
    f["norm1"] = NORMS[cfg.norm](96)  # the paper: ReLU, then LRN, then pooling
    f["pool1"] = POOLS[cfg.pool](False)
    _conv_block(f, 2, 96, 256, 5, 1, 2, g, cfg)
    f["norm2"] = NORMS[cfg.norm](256)
    f["pool2"] = POOLS[cfg.pool](False)
    _conv_block(f, 3, 256, 384, 3, 1, 1, 1, cfg)  # conv3 sees both GPUs' maps
    _conv_block(f, 4, 384, 384, 3, 1, 1, g, cfg)
    _conv_block(f, 5, 384, 256, 3, 1, 1, g, cfg)
    f["pool5"] = POOLS[cfg.pool](False)
    side = _feature_side("alexnet", f, image_size)
    c: OrderedDict = OrderedDict()
    c["drop6"] = nn.Dropout(cfg.dropout)
    c["fc6"] = nn.Linear(256 * side * side, 4096)
    c["act6"] = ACTIVATIONS[cfg.activation]()
    c["drop7"] = nn.Dropout(cfg.dropout)
    c["fc7"] = nn.Linear(4096, 4096)
    c["act7"] = ACTIVATIONS[cfg.activation]()
    c["fc8"] = nn.Linear(4096, num_classes)
    return Network("alexnet", f, c)


def cifar(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    """layers-18pct: conv 5x5 32 -> pool -> norm -> conv 5x5 32 -> pool -> norm
    -> conv 5x5 64 -> pool -> fc. model.groups splits conv2 and conv3 as the
    two-GPU layout splits AlexNet's; ceil-mode pooling as in cuda-convnet keeps
    32 -> 16 -> 8 -> 4 for both pooling variants."""
    g = cfg.groups
    f: OrderedDict = OrderedDict()
    _conv_block(f, 1, 3, 32, 5, 1, 2, 1, cfg)
    f["pool1"] = POOLS[cfg.pool](True)
    f["norm1"] = NORMS[cfg.norm](32)
    _conv_block(f, 2, 32, 32, 5, 1, 2, g, cfg)
    f["pool2"] = POOLS[cfg.pool](True)
    f["norm2"] = NORMS[cfg.norm](32)
    _conv_block(f, 3, 32, 64, 5, 1, 2, g, cfg)
    f["pool3"] = POOLS[cfg.pool](True)
    side = _feature_side("cifar", f, image_size)
    c: OrderedDict = OrderedDict()
    c["drop4"] = nn.Dropout(cfg.dropout)
    c["fc4"] = nn.Linear(64 * side * side, num_classes)
    return Network("cifar", f, c)


ARCHS = {"alexnet": alexnet, "cifar": cifar}


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
            f"data.image_size={image_size} is too small for model.arch={arch}; "
            f"use data.image_size={INPUT_SIZE[arch]} (its native size) or larger"
        )
    return out.shape[-1]


def init_paper(net: Network) -> None:
    """The paper's initialisation: weights N(0, 0.01); biases 1 in conv2, conv4,
    conv5, fc6 and fc7 (to give ReLUs positive inputs early on), 0 elsewhere."""
    bias_one = PAPER_BIAS_ONE[net.arch]
    for name, module in [*net.features.named_children(), *net.classifier.named_children()]:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            nn.init.constant_(module.bias, 1.0 if name in bias_one else 0.0)


def build_network(cfg: ModelConfig, num_classes: int, image_size: int) -> Network:
    net = ARCHS[cfg.arch](cfg, num_classes, image_size)
    if cfg.init == "paper":
        init_paper(net)
    return net
