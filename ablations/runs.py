"""A finished run's measurements as the reports and the tuner read them from MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ablations import tracking
from ablations.stats import time_to

TARGET_TRAIN_ERR = 0.25  # the paper's Figure 1 measure
EPOCH_KEYS = ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "epoch_time_s", "train_img_per_s", "lr")


@dataclass
class RunResult:
    variant: str
    seed: int
    run_id: str
    curves: dict[str, list[float]]  # metric -> value per epoch
    step_err: list[tuple[float, float]] = field(default_factory=list)  # (epochs done, running training error)
    clean_train_err1: float = math.nan  # final weights, eval mode, no augmentation
    params: dict[str, str] = field(default_factory=dict)
    precise_bn: dict[str, float] = field(default_factory=dict)  # the errors with BatchNorm's statistics recomputed (ablations.backfill)

    def final(self, key: str) -> float:
        return self.curves[key][-1] if self.curves.get(key) else math.nan

    def best(self, key: str) -> float:
        return min(self.curves[key]) if self.curves.get(key) else math.nan

    @property
    def epochs_trained(self) -> int:
        return len(self.curves.get("train_err1", []))

    def epochs_to(self, target: float = TARGET_TRAIN_ERR) -> float:
        """Epochs of training until the training error first reaches `target`: from the
        running error logged every few steps when the run has it, else per epoch."""
        if self.step_err:
            return time_to(self.step_err, target)
        return time_to(list(enumerate(self.curves.get("train_err1", []), start=1)), target)


def read_run(run) -> RunResult:
    tags, run_id = run.data.tags, run.info.run_id
    curves = {key: [v for _, v in tracking.history(run_id, key)] for key in EPOCH_KEYS}
    per_epoch = float(run.data.params.get("steps_per_epoch", "0") or 0)
    step_err = [(step / per_epoch, v) for step, v in tracking.history(run_id, "train_err1_step")] if per_epoch else []
    clean = run.data.metrics.get(tracking.CLEAN_TRAIN_ERR, math.nan)
    precise_bn = {k: run.data.metrics[k] for k in (tracking.PRECISE_BN_VAL_ERR, tracking.PRECISE_BN_TRAIN_ERR) if k in run.data.metrics}
    return RunResult(tags.get(tracking.VARIANT, "?"), int(tags.get(tracking.SEED, 0)), run_id, curves, step_err, clean, dict(run.data.params), precise_bn)
