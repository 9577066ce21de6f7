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
from dataclasses import dataclass, field
from typing import Any

from ablations import tracking
from ablations.runs import read_run
from ablations.spec import Tune

PREFIX = tracking.TUNE_PREFIX


@dataclass
class Candidate:
    variant: str
    values: dict[str, Any]
    scores: list[tuple[float, float]] = field(default_factory=list)  # per seed: (objective, tie-break)

    @property
    def lost(self) -> bool:
        """A seed FAILED (or nothing was scored): never chosen, not even as the least bad."""
        return math.isinf(self.score[1])

    @property
    def score(self) -> tuple[float, float]:
        """Mean over seeds; a seed that lost makes the candidate lose."""
        if not self.scores:
            return (math.inf, math.inf)
        return (sum(s[0] for s in self.scores) / len(self.scores), sum(s[1] for s in self.scores) / len(self.scores))


def grid(tune: Tune) -> list[dict[str, Any]]:
    keys = list(tune.space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(tune.space[k] for k in keys))]


def score(run, tune: Tune) -> tuple[float, float]:
    """(objective, tie-break) of a tuning run, lower is better. val_err1: the final
    validation error. epochs_to_train_err: epochs until the running training error
    reaches tune.target; a run that never did is ranked by its final training error."""
    if run.info.status != "FINISHED":
        return (math.inf, math.inf)
    r = read_run(run)
    if tune.objective == "val_err1":
        return (r.final("val_err1"), 0.0)
    epochs = r.epochs_to(tune.target)
    last = r.step_err[-1][1] if r.step_err else r.final("train_err1")
    return (math.inf if math.isnan(epochs) else epochs, last)


def _values(run, tune: Tune) -> dict[str, Any]:
    """A tuning run's candidate values, read back from its tags (written as str(value)):
    a grid value is the grid's own (so False stays False and 0 stays 0), Optuna's a float."""
    tags = run.data.tags
    if tune.search == "optuna":
        return {k: float(tags[PREFIX + k]) for k in tune.space}
    return {k: {str(x): x for x in tune.space[k]}.get(tags[PREFIX + k], tags[PREFIX + k]) for k in tune.space}


def candidates(runs: list, tune: Tune) -> list[Candidate]:
    """The tuning runs grouped by (variant, candidate values), each seed scored."""
    out: dict[tuple, Candidate] = {}
    for run in runs:
        values = _values(run, tune)
        variant = run.data.tags.get(tracking.VARIANT, "?")
        key = (variant, _key(values))
        out.setdefault(key, Candidate(variant, values)).scores.append(score(run, tune))
    return list(out.values())


def choose(found: list[Candidate], tune: Tune, variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant, the best candidate's values; with per_variant=false, the candidate
    best on average over the variants, for all of them."""
    if tune.per_variant:
        best = {}
        for v in variants:
            mine = [c for c in found if c.variant == v and not c.lost]
            if mine:
                best[v] = min(mine, key=lambda c: c.score).values
        return best
    pooled: dict[tuple, list[Candidate]] = {}
    for c in found:
        pooled.setdefault(_key(c.values), []).append(c)
    complete = {k: cs for k, cs in pooled.items() if {c.variant for c in cs} == set(variants) and not any(c.lost for c in cs)}
    if not complete:
        return {}
    best = min(complete, key=lambda k: tuple(sum(c.score[i] for c in complete[k]) / len(complete[k]) for i in (0, 1)))
    return {v: dict(best) for v in variants}


def at_edge(tune: Tune, chosen: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings for chosen values at an end of the searched range: the best may lie beyond it
    (for Optuna's continuous range: within 5% of its width, on the log scale, of an end)."""
    warnings = []
    for variant, values in chosen.items():
        for key, value in values.items():
            space = tune.space[key]
            if not all(isinstance(x, (int, float)) for x in space):
                continue
            lo, hi = min(space), max(space)
            for end, word in ((lo, "lowest"), (hi, "highest")):
                if tune.search == "optuna" and lo > 0:
                    close = abs(math.log(value / end)) < 0.05 * abs(math.log(hi / lo))
                else:
                    close = value == end
                if close:
                    warnings.append(f"{variant}: the best {key} ({value:g}) is the {word} value searched; widen tune.space.{key} past it")
    return warnings


def _key(values: dict[str, Any]) -> tuple:
    return tuple(sorted(values.items()))


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
