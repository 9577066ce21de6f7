"""The `optim` section of the configuration, and the optimiser and schedule it makes for a network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from core.config import require


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD's momentum; Adam's beta1
    weight_decay: float = 5e-4  # on weights only, not on biases or norm parameters
    eps: float = 1e-8  # Adam's epsilon (Keras uses 1e-7)
    lr_factor: float = 0.1  # the paper divides the learning rate by 10 ...
    lr_patience: int = 2  # ... when the validation error stops improving ...
    max_lr_drops: int = 3  # ... three times (0: a constant rate)

    def validate(self) -> None:
        require(self.lr > 0, "optim.lr", self.lr, "> 0")
        require(0 <= self.momentum < 1, "optim.momentum", self.momentum, "in [0, 1)")
        require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        require(self.eps > 0, "optim.eps", self.eps, "> 0")
        require(0 < self.lr_factor < 1, "optim.lr_factor", self.lr_factor, "in (0, 1)")
        require(self.lr_patience >= 0, "optim.lr_patience", self.lr_patience, ">= 0")
        require(self.max_lr_drops >= 0, "optim.max_lr_drops", self.max_lr_drops, ">= 0")


def param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights only (as cuda-convnet does), not on biases or the
    normalisation layers' scales and shifts (every parameter of one dimension)."""
    decay = [p for p in net.parameters() if p.dim() > 1]
    no_decay = [p for p in net.parameters() if p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(cfg: OptimConfig, net: nn.Module) -> dict[str, Any]:
    """What LightningModule.configure_optimizers returns: the optimiser, and the
    paper's schedule (learning rate / 10 when val_err1 stops improving, at most
    `max_lr_drops` times)."""
    groups = param_groups(net, cfg.weight_decay)
    if cfg.name == "sgd":
        # torch's SGD keeps the rate out of the velocity (v <- 0.9 v + g + 0.0005 w,
        # w <- w - lr v); the paper's update folds it in (v <- 0.9 v - 0.0005 lr w - lr g,
        # w <- w + v). The two agree while the rate is constant; after a drop torch's
        # steps shrink at once, the paper's as its velocity decays.
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        optimizer = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), eps=cfg.eps)
    # eps=0: torch's default (1e-8) would ignore every drop of a rate below about 1e-7
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.lr * cfg.lr_factor**cfg.max_lr_drops, eps=0.0
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_err1", "interval": "epoch"}}


def optimizer_factory(cfg: OptimConfig) -> Callable[[nn.Module], dict[str, Any]]:
    return partial(make_optimizer, cfg)
