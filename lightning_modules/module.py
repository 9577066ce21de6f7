"""The one LightningModule: loss, metrics and logging for every variant.

It receives its parts, built by the application from the config: the network,
the batch pipeline (uint8 images -> normalised, augmented floats, on the device)
and a factory for the optimiser and its schedule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run diverged."""


def top_k_errors(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 wrong, top-k wrong) counts of a batch."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    hit = top == labels[:, None]
    return (~hit[:, 0]).sum(), (~hit.any(-1)).sum()


class Sums:
    """Per key, [loss x images, top-1 wrong, top-5 wrong, images], reduced across
    devices as sums, so that every image counts once whatever the number of devices.

    A step only keeps its detached loss, logits and labels; they are counted together,
    a few dozen steps at a time, outside autograd (in a training step the logits require
    grad). Counting each batch as it came took a dozen small tensor operations a step, for
    the training and again for the window sums, recorded by autograd: sampled on the CPU
    with a trivially cheap network (one thread), 5.6 % of its step, now too little to show."""

    FOLD = 32  # steps kept before they are counted: 32 x 128 x 1,000 logits is 16 MB

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}
        self._kept: list[tuple[tuple[str, ...], torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, keys: tuple[str, ...], loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds a batch to each of `keys`."""
        self._kept.append((keys, loss.detach(), logits.detach(), labels))
        if len(self._kept) >= self.FOLD:
            self._count()

    def _count(self) -> None:
        kept, self._kept = self._kept, []
        groups: dict[tuple[str, ...], list] = {}
        for keys, *batch in kept:
            groups.setdefault(keys, []).append(batch)
        with torch.no_grad():
            for keys, batches in groups.items():
                losses = torch.stack([loss for loss, _, _ in batches]).float()
                sizes = torch.tensor([len(labels) for _, _, labels in batches], dtype=losses.dtype, device=losses.device)
                err1, err5 = top_k_errors(torch.cat([logits for _, logits, _ in batches]), torch.cat([labels for _, _, labels in batches]))
                values = torch.stack([(losses * sizes).double().sum(), err1.double(), err5.double(), sizes.double().sum()])
                for key in keys:
                    if key in self._sums:
                        self._sums[key] += values
                    else:
                        self._sums[key] = values.clone()

    def pop(self, key: str, strategy, device) -> tuple[float, float, float, float]:
        """(mean loss, top-1 error, top-5 error, images) since the last pop, over every device."""
        self._count()
        sums = self._sums.pop(key, torch.zeros(4, dtype=torch.float64, device=device))
        loss, err1, err5, n = strategy.reduce(sums, reduce_op="sum").tolist()
        n = max(n, 1.0)
        return loss / n, err1 / n, err5 / n, n


class AlexNetModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        pipeline: nn.Module,
        optimizer: Callable[[nn.Module], dict[str, Any]],
        channels_last: bool = False,
        seed: int = 0,
        stop_at_train_err: float | None = None,
    ):
        super().__init__()
        self.net, self.pipeline, self.optimizer_factory = net, pipeline, optimizer
        self.channels_last, self.seed, self.stop_at_train_err = channels_last, seed, stop_at_train_err
        if channels_last:  # the kernels too, or every convolution converts them on each call
            self.net = self.net.to(memory_format=torch.channels_last)
        self.loss = nn.CrossEntropyLoss()
        self._sums = Sums()
        self._clock: dict[str, float] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` before and after every hook it calls, 44 times a
        # training step; nn.Module's __setattr__, which first checks whether the value is a
        # parameter, buffer or module, takes ten times a plain attribute's (1.3 against 0.13 us)
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # ten crops: average the softmax over crops, as the paper does
            b, n = x.shape[:2]
            return self.net(x.flatten(0, 1)).softmax(-1).view(b, n, -1).mean(1).log()
        return self.net(x)

    def prepare(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """uint8 images on the device -> the network's input (augmented when training)."""
        x = self.pipeline.train_batch(images) if training else self.pipeline.eval_batch(images)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        return self.prepare(images, self.trainer.training), labels

    def _reduce(self, key: str) -> tuple[float, float, float, float]:
        return self._sums.pop(key, self.trainer.strategy, self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self._sums.add(("train", "window"), loss, logits, y)
        # every log_every_n_steps steps: the loss and the error over those steps (a running
        # error at step resolution, the paper's Figure 1 reading; MLflow step = optimiser steps).
        # Checking finiteness only then spares a device sync per step.
        step = self.global_step + 1  # optimiser steps done once this one is
        if step % self.trainer.log_every_n_steps == 0:
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step {self.global_step}")
            window_loss, window_err1, _, _ = self._reduce("window")
            if self.logger is not None:
                self.logger.log_metrics({"train_loss_step": window_loss, "train_err1_step": window_err1}, step=step)
            if self.stop_at_train_err is not None and window_err1 <= self.stop_at_train_err:
                self.trainer.should_stop = True  # the same on every rank: the error is reduced across them
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._sums.add(("val",), self.loss(logits, y), logits, y)

    def on_train_start(self) -> None:
        # Lightning seeds every rank alike (same initial weights); from here each rank
        # draws its own dropout masks and augmentations, as the slots of one big batch would
        if self.trainer.world_size > 1:
            torch.manual_seed(self.seed * 1_000_003 + self.global_rank)

    def on_train_epoch_start(self) -> None:
        self._clock = {"epoch": time.perf_counter()}

    def on_validation_epoch_start(self) -> None:
        now = time.perf_counter()
        self._clock.setdefault("train_end", now)  # validation runs inside the training epoch
        self._clock["val"] = now

    def on_validation_epoch_end(self) -> None:
        loss, err1, err5, n = self._reduce("val")
        if self.trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._clock.get("val", time.perf_counter())
        metrics = {"val_loss": loss, "val_err1": err1, "val_err5": err5, "val_img_per_s": n / max(seconds, 1e-9), "step": float(self.current_epoch)}
        self.log_dict(metrics, sync_dist=False, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        now = time.perf_counter()
        train_seconds = self._clock.get("train_end", now) - self._clock["epoch"]
        loss, err1, _, n = self._reduce("train")
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss at epoch {self.current_epoch}")
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        metrics = {
            "train_loss": loss,
            "train_err1": err1,
            "lr": lr,
            "epoch_time_s": now - self._clock["epoch"],
            "train_img_per_s": n / max(train_seconds, 1e-9),
            "step": float(self.current_epoch),
        }
        self.log_dict(metrics, sync_dist=False)
        if self.global_rank == 0 and not self.trainer.progress_bar_callback:
            val = self.trainer.callback_metrics
            print(
                f"epoch {self.current_epoch + 1}/{self.trainer.max_epochs}  train_loss {loss:.4f}  train_err1 {err1:.4f}  "
                f"val_err1 {float(val.get('val_err1', float('nan'))):.4f}  val_err5 {float(val.get('val_err5', float('nan'))):.4f}  "
                f"{metrics['train_img_per_s']:.0f} img/s",
                flush=True,
            )

    def configure_optimizers(self):
        return self.optimizer_factory(self.net)
