"""A finished run's measurements, as the analysis reads them: plain data, no MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ablations.analysis.stats import time_to

TARGET_TRAIN_ERR = 0.25  # the paper's Figure 1 measure


@dataclass
class RunResult:
    variant: str
    seed: int
    run_id: str
    curves: dict[str, list[float]]  # metric -> value per epoch
    step_err: list[tuple[float, float]] = field(default_factory=list)  # (epochs done, running training error)
    clean_train_err1: float = math.nan  # final weights, eval mode, no augmentation
    params: dict[str, str] = field(default_factory=dict)
    precise_bn: dict[str, float] = field(default_factory=dict)  # the errors with BatchNorm's statistics recomputed (make backfill-NAME PRECISE_BN=1)
    test: dict[str, float] = field(default_factory=dict)  # test_err1, test_err5: the test split, evaluated once at the end
    diagnostics: dict[str, float] = field(default_factory=dict)  # lrn_*/tanh_* at the start and end (lightning_modules.diagnostics)
    variant_hash: str = ""  # its configuration's identity, seed left out: equal hashes, the same configuration

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
