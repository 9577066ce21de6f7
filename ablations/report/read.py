"""Reading a study from MLflow into plain records (ablations.analysis.records): the only part of the reports that touches MLflow."""

from __future__ import annotations

import math
from typing import Any

from ablations import tracking
from ablations.analysis.records import RunResult
from ablations.analysis.tuning import Candidate, _key
from ablations.spec import Tune

EPOCH_KEYS = ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "epoch_time_s", "train_img_per_s", "lr")


def read_run(run) -> RunResult:
    tags, run_id = run.data.tags, run.info.run_id
    curves = {key: [v for _, v in tracking.history(run_id, key)] for key in EPOCH_KEYS}
    per_epoch = float(run.data.params.get("steps_per_epoch", "0") or 0)
    step_err = [(step / per_epoch, v) for step, v in tracking.history(run_id, "train_err1_step")] if per_epoch else []
    clean = run.data.metrics.get(tracking.CLEAN_TRAIN_ERR, math.nan)
    precise_bn = {k: run.data.metrics[k] for k in (tracking.PRECISE_BN_VAL_ERR, tracking.PRECISE_BN_TRAIN_ERR) if k in run.data.metrics}
    test = {k: run.data.metrics[k] for k in ("test_err1", "test_err5") if k in run.data.metrics}
    diagnostics = {k: v for k, v in run.data.metrics.items() if k.startswith(("lrn_", "tanh_"))}
    return RunResult(tags.get(tracking.VARIANT, "?"), int(tags.get(tracking.SEED, 0)), run_id, curves, step_err, clean, dict(run.data.params), precise_bn,
                     test, diagnostics, tags.get(tracking.VARIANT_HASH, ""))  # fmt: skip


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
        return {k: float(tags[tracking.TUNE_PREFIX + k]) for k in tune.space}
    return {k: {str(x): x for x in tune.space[k]}.get(tags[tracking.TUNE_PREFIX + k], tags[tracking.TUNE_PREFIX + k]) for k in tune.space}


def candidates(runs: list, tune: Tune) -> list[Candidate]:
    """The tuning runs grouped by (variant, candidate values), each seed scored."""
    out: dict[tuple, Candidate] = {}
    for run in runs:
        values = _values(run, tune)
        variant = run.data.tags.get(tracking.VARIANT, "?")
        key = (variant, _key(values))
        out.setdefault(key, Candidate(variant, values)).scores.append(score(run, tune))
    return list(out.values())
