"""The one LightningModule: loss, metrics, optimiser and schedule for every variant."""

from __future__ import annotations

import math
import time

import lightning as L
import torch
from torch import nn

from ablations.config import Config
from data.augment import TRAIN_AUGMENTS, BatchPipeline
from lightning_modules.networks import build_network


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run diverged."""


class AlexNetModule(L.LightningModule):
    def __init__(self, cfg: Config, num_classes: int, image_size: int, stats: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        self.net = build_network(cfg.model, num_classes, image_size)
        if cfg.trainer.channels_last:  # the kernels too, or every convolution converts them on each call
            self.net = self.net.to(memory_format=torch.channels_last)
        self.pipeline = BatchPipeline(image_size, stats, TRAIN_AUGMENTS[cfg.data.augment], cfg.data.ten_crop)
        self.loss = nn.CrossEntropyLoss()
        self._sums: dict[str, torch.Tensor] = {}
        self._epoch_start = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # ten crops: average the softmax over crops, as the paper does
            b, n = x.shape[:2]
            return self.net(x.flatten(0, 1)).softmax(-1).view(b, n, -1).mean(1).log()
        return self.net(x)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        x = self.pipeline.train_batch(images) if self.trainer.training else self.pipeline.eval_batch(images)
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels

    # ---- metrics: summed per epoch, reduced across devices as sums, so that
    # every image counts once whatever the number of devices
    def _accumulate(self, prefix: str, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        hit = top5 == labels[:, None]
        values = torch.stack([loss.detach() * len(labels), (~hit[:, 0]).sum(), (~hit.any(-1)).sum(), torch.ones_like(loss) * len(labels)]).double()
        self._sums[prefix] = self._sums.get(prefix, torch.zeros(4, dtype=torch.float64, device=loss.device)) + values

    def _reduce(self, prefix: str) -> tuple[float, float, float, float]:
        sums = self._sums.pop(prefix, torch.zeros(4, dtype=torch.float64, device=self.device))
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss, err1, err5, n = sums.tolist()
        n = max(n, 1.0)
        return loss / n, err1 / n, err5 / n, n

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self._accumulate("train", loss, logits, y)
        # Lightning writes step metrics when (step + 1) is a multiple of the interval; checking
        # finiteness only then spares a device sync per step (the epoch end checks again).
        if (self.global_step + 1) % self.cfg.trainer.log_every_n_steps == 0:
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step {self.global_step}")
            # averaged over the ranks' equal slices: the loss of the global batch, as on one device
            self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=False, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._accumulate("val", self.loss(logits, y), logits, y)

    def on_train_start(self) -> None:
        # Lightning seeds every rank alike (same initial weights); from here each rank
        # draws its own dropout masks and augmentations, as the slots of one big batch would
        if self.trainer.world_size > 1:
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.global_rank)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        loss, err1, err5, _ = self._reduce("val")
        if self.trainer.sanity_checking:
            return
        self.log_dict({"val_loss": loss, "val_err1": err1, "val_err5": err5, "step": float(self.current_epoch)}, sync_dist=False, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        seconds = time.perf_counter() - self._epoch_start
        loss, err1, _, n = self._reduce("train")
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss at epoch {self.current_epoch}")
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log_dict(
            {"train_loss": loss, "train_err1": err1, "lr": lr, "epoch_time_s": seconds, "train_img_per_s": n / seconds, "step": float(self.current_epoch)},
            sync_dist=False,
        )
        if self.global_rank == 0 and not self.trainer.progress_bar_callback:
            val = self.trainer.callback_metrics
            print(
                f"epoch {self.current_epoch + 1}/{self.trainer.max_epochs}  train_loss {loss:.4f}  train_err1 {err1:.4f}  "
                f"val_err1 {float(val.get('val_err1', float('nan'))):.4f}  val_err5 {float(val.get('val_err5', float('nan'))):.4f}  "
                f"{n / seconds:.0f} img/s",
                flush=True,
            )

    def configure_optimizers(self):
        o = self.cfg.optim
        # Weight decay on weights only (as cuda-convnet does), not on biases or norm parameters.
        decay = [p for n, p in self.net.named_parameters() if p.dim() > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.dim() <= 1]
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if o.name == "sgd":
            # torch's SGD folds the learning rate into the velocity; with a constant
            # rate this is the paper's update v <- 0.9 v - 0.0005 lr w - lr g.
            optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
        else:
            optimizer = torch.optim.Adam(groups, lr=o.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=o.lr_factor, patience=o.lr_patience, min_lr=o.lr * o.lr_factor**o.max_lr_drops
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_err1", "interval": "epoch"}}
