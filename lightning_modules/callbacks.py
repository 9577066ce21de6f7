"""Measurements a run makes of itself, as Lightning callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import lightning as L
import torch

from lightning_modules.module import AlexNetModule, top_k_errors

CLEAN_TRAIN_METRIC = "train_clean_err1"
CLEAN_TRAIN_IMAGES = 10_000  # a standard error of about 0.4 points at 25% error


class CleanTrainError(L.Callback):
    """The final weights' top-1 error on training images, in eval mode (no dropout)
    and without augmentation (cropped as validation images are), logged as
    `train_clean_err1` at the last epoch.

    The training error a run logs while it trains (`train_err1`) is measured on
    augmented batches with dropout on, averaged over an epoch of changing weights;
    set beside the validation error it would understate how much a regularised
    variant overfits, the very question the dropout and augmentation ablations ask.
    The images: a fixed subset of the training split, the same for every run of a
    dataset (`datamodule.clean_train_loader`), sharded across devices.
    At the end of `fit`, not of training: a run resumed from its last epoch's checkpoint
    (stopped before this measurement) trains nothing, and Lightning then skips the
    training hooks but still ends the fit."""

    def __init__(self, images: int = CLEAN_TRAIN_IMAGES):
        self.images = images

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loader = trainer.datamodule.clean_train_loader(self.images, trainer.world_size, trainer.global_rank)
        sums = eval_error_counts(module, loader, trainer.precision_plugin.forward_context())
        wrong, n = trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        if trainer.is_global_zero and trainer.logger is not None and n:
            trainer.logger.log_metrics({CLEAN_TRAIN_METRIC: wrong / n}, step=max(trainer.current_epoch - 1, 0))


def eval_error_counts(module: AlexNetModule, batches: Iterable, context=None) -> torch.Tensor:
    """[top-1 wrong, images] of the module in eval mode over (uint8 images, labels) batches."""
    was_training = module.training
    module.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=module.device)
    with torch.no_grad(), context or contextlib.nullcontext():
        for images, labels in batches:
            images, labels = images.to(module.device), labels.to(module.device)
            wrong, _ = top_k_errors(module(module.prepare(images, training=False)), labels)
            sums += torch.stack([wrong, torch.tensor(len(labels), device=module.device)]).double()
    module.train(was_training)
    return sums
