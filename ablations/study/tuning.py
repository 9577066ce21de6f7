"""Tuning a nuisance setting (usually the learning rate) for each variant before the
comparison, as careful ablations do (the Deep Learning Tuning Playbook; the paper's
Figure 1 tuned each network's learning rate).

Candidates come from the ablation file's `tune.space`: its grid, or Optuna's TPE
sampler over a log range. Each candidate is trained as ordinary runs (tag
tuning=true, nested under the study) under the tuning budget, and scored by
`tune.objective` (lower is better): a FAILED run, or a target never reached,
loses. This module reads and chooses; the study runs what it asks for. It imports
no torch, so reports use it too.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from ablations import tracking
from ablations.analysis.tuning import Candidate, _key, at_edge, choose
from ablations.report.read import candidates
from ablations.spec import Tune

__all__ = ["Candidate", "OptunaSearch", "at_edge", "candidates", "choose", "grid"]

PREFIX = tracking.TUNE_PREFIX


def grid(tune: Tune) -> list[dict[str, Any]]:
    keys = list(tune.space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(tune.space[k] for k in keys))]


class OptunaSearch:
    """Optuna's TPE sampler over tune.space's log ranges: one Optuna study per variant
    (or one for all, scored by the mean over variants, with per_variant=false). Finished
    candidates (from MLflow, also after an interruption) are told to it before it is
    asked for more; asking stops at tune.trials per study."""

    def __init__(self, tune: Tune, variants: list[str], seed: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.tune, self.variants, self.optuna = tune, variants, optuna
        groups = variants if tune.per_variant else ["*"]
        self.studies = {g: optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed)) for g in groups}
        self.dist = {k: optuna.distributions.FloatDistribution(lo, hi, log=True) for k, (lo, hi) in tune.space.items()}
        self.pending: dict[tuple, Any] = {}  # (group, values) -> the trial asked for them
        self.told: set[tuple] = set()  # (group, values) told to the study

    def _score(self, group: str, values: dict[str, Any], found: list[Candidate]) -> float | None:
        mine = [c for c in found if _key(c.values) == _key(values) and group in ("*", c.variant)]
        if not mine or (group == "*" and len({c.variant for c in mine}) < len(self.variants)):
            return None
        mean = sum(c.score[0] for c in mine) / len(mine)
        return mean if math.isfinite(mean) else 1e9  # a loss Optuna can rank

    def tell(self, found: list[Candidate]) -> None:
        """Each scored candidate once per study: the trial that asked for it, or (a candidate
        trained before this process, e.g. before an interruption) a trial added for it. The
        trial keeps Optuna's unrounded values, so what was told is kept here, by the rounded."""
        for group, study in self.studies.items():
            for values in {_key(c.values): c.values for c in found}.values():
                value = self._score(group, values, found)
                if value is None:
                    continue
                key = (group, _key(values))
                trial = self.pending.pop(key, None)
                if trial is not None:  # also when it asked again for a candidate told before
                    study.tell(trial, value)
                elif key not in self.told:
                    study.add_trial(self.optuna.trial.create_trial(params=values, distributions=self.dist, value=value))
                self.told.add(key)

    def ask(self) -> dict[str, list[dict[str, Any]]]:
        """At most one new candidate per study (3 significant digits, so configs repeat exactly)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for group, study in self.studies.items():
            if len(study.trials) >= self.tune.trials:
                continue
            trial = study.ask(self.dist)
            values = {k: float(f"{trial.params[k]:.3g}") for k in self.dist}
            self.pending[(group, _key(values))] = trial
            for v in self.variants if group == "*" else [group]:
                out.setdefault(v, []).append(values)
        return out
