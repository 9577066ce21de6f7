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


TEST_METRICS = ("test_err1", "test_err5")


class FinalTestError(L.Callback):
    """The final weights' top-1 and top-5 error on the test split, logged once as
    `test_err1` and `test_err5` at the last epoch, as `CleanTrainError` measures its
    error: at the end of `fit`, in eval mode, images prepared as validation images are
    (ten crops with data.ten_crop), sharded across devices and summed. Nothing during
    training reads the test split (the schedule and stopping read val); under
    data.splits=train_val there is none, and nothing is logged."""

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loader = trainer.datamodule.test_loader(trainer.world_size, trainer.global_rank)
        if loader is None:
            return
        sums = eval_error_sums(module, loader, trainer.precision_plugin.forward_context())
        wrong1, wrong5, n = trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        if trainer.is_global_zero and n:
            if trainer.logger is not None:
                trainer.logger.log_metrics(dict(zip(TEST_METRICS, (wrong1 / n, wrong5 / n), strict=True)), step=max(trainer.current_epoch - 1, 0))
            print(f"test_err1 {wrong1 / n:.4f}  test_err5 {wrong5 / n:.4f}  ({n:.0f} test images, final weights)", flush=True)


def eval_error_sums(module: AlexNetModule, batches: Iterable, context=None) -> torch.Tensor:
    """[top-1 wrong, top-5 wrong, images] of the module in eval mode over (uint8 images, labels) batches."""
    was_training = module.training
    module.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=module.device)
    with torch.no_grad(), context or contextlib.nullcontext():
        for images, labels in batches:
            images, labels = images.to(module.device), labels.to(module.device)
            wrong1, wrong5 = top_k_errors(module(module.prepare(images, training=False)), labels)
            sums += torch.stack([wrong1, wrong5, torch.tensor(len(labels), device=module.device)]).double()
    module.train(was_training)
    return sums


def eval_error_counts(module: AlexNetModule, batches: Iterable, context=None) -> torch.Tensor:
    """[top-1 wrong, images] of the module in eval mode over (uint8 images, labels) batches."""
    return eval_error_sums(module, batches, context)[[0, 2]]
