"""Reading a study into plain records (ablations.analysis.records): from MLflow, the only
part of the reports that touches it, or from the evidence file a published study ships
(ablations.report.evidence). Either way the same `StudyData`, so a report rebuilt from a
study's file is the report its store gave."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ablations import tracking
from ablations.analysis.records import RunResult
from ablations.analysis.tuning import Candidate, _key
from ablations.spec import Tune

EPOCH_KEYS = ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "epoch_time_s", "train_img_per_s", "lr")
STEP_ERR = "train_err1_step"
_SYSTEM = "system/"  # MLflow's system metrics (CPU, memory): not evidence of the result


@dataclass
class RunData:
    """One run as a store holds it: its configuration (params), tags, and every metric's
    history as (step, value), per epoch or per logged step."""

    run_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, list[tuple[int, float]]]

    @classmethod
    def from_mlflow(cls, run) -> RunData:
        keys = sorted(k for k in run.data.metrics if not k.startswith(_SYSTEM))
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
        return cls(run.info.run_id, run.info.status, dict(run.data.params), tags, {k: tracking.history(run.info.run_id, k) for k in keys})

    def last(self, key: str, default: float = math.nan) -> float:
        values = self.metrics.get(key)
        return values[-1][1] if values else default

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "status": self.status, "params": self.params, "tags": self.tags,
                "metrics": {k: [[s, v] for s, v in h] for k, h in self.metrics.items()}}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> RunData:
        return cls(d["run_id"], d["status"], d["params"], d["tags"], {k: [(int(s), float(v)) for s, v in h] for k, h in d["metrics"].items()})


@dataclass
class StudyData:
    """Everything a study's report reads: its parent run's facts, its runs, its tuning
    runs, and (for a tuned study) the newest study of the ablation at one shared value."""

    name: str
    parent_id: str
    parent_name: str
    params: dict[str, str]  # the parent's
    tags: dict[str, str]  # the parent's
    runs: list[RunData]
    tuning: list[RunData] = field(default_factory=list)
    shared: StudyData | None = None
    store: str = ""  # where it was read from
    link: str = ""  # its saved view in the MLflow UI ("" when read from a file)

    @property
    def meta(self) -> dict:
        p, t = self.params, self.tags
        return {
            "parent_id": self.parent_id,
            "parent_name": self.parent_name,
            "profile": t.get(tracking.PROFILE, ""),
            "variants": [v for v in p.get("variants", "").split(",") if v],
            "overrides": p.get("overrides", ""),
            "seeds": p.get("seeds", ""),
            "tuned": t.get(tracking.TUNED) == "true",
            "link": self.link,
            "adaptive": json.loads(t[tracking.ADAPTIVE_SEEDS]) if tracking.ADAPTIVE_SEEDS in t else None,
            "store": self.store,
        }

    def results(self) -> list[RunResult]:
        """Its FINISHED runs (not its tuning runs), as records."""
        # (stores written before 609e4e4 also hold aggregate runs, tagged aggregate=true)
        keep = [r for r in self.runs if r.status == "FINISHED" and r.tags.get("aggregate") != "true" and r.tags.get(tracking.TUNING) != "true"]
        return [read_run(r) for r in keep]

    def to_json(self) -> dict:
        return {"name": self.name, "parent_id": self.parent_id, "parent_name": self.parent_name, "params": self.params, "tags": self.tags,
                "store": self.store, "runs": [r.to_json() for r in self.runs], "tuning": [r.to_json() for r in self.tuning],
                "shared": self.shared.to_json() if self.shared else None}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> StudyData:
        return cls(d["name"], d["parent_id"], d["parent_name"], d["params"], d["tags"], [RunData.from_json(r) for r in d["runs"]],
                   [RunData.from_json(r) for r in d["tuning"]], cls.from_json(d["shared"]) if d.get("shared") else None, d.get("store", ""))  # fmt: skip


def study_from_mlflow(name: str, parent, link: str = "", with_shared: bool = True) -> StudyData:
    """A study as its store holds it (its finished runs, its tuning runs and, when it tuned,
    the newest finished study of the ablation that did not)."""
    tags = {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.") or k == tracking.NOTE}
    runs = [RunData.from_mlflow(r) for r in tracking.study_children(parent) if r.info.status == "FINISHED"]
    tuned = tags.get(tracking.TUNED) == "true"
    tuning = [RunData.from_mlflow(r) for r in tracking.tuning_runs(parent)] if tuned else []
    shared = None
    if tuned and with_shared:
        other = tracking.newest_study(name, tuned=False, finished=True)
        shared = study_from_mlflow(name, other, with_shared=False) if other is not None else None
    return StudyData(name, parent.info.run_id, parent.info.run_name, dict(parent.data.params), tags, runs, tuning, shared, tracking.tracking_uri(), link)


def read_run(run) -> RunResult:
    """A run's record, from a RunData or an MLflow run."""
    r = run if isinstance(run, RunData) else RunData.from_mlflow(run)
    tags = r.tags
    curves = {key: [v for _, v in r.metrics.get(key, [])] for key in EPOCH_KEYS}
    per_epoch = float(r.params.get("steps_per_epoch", "0") or 0)
    step_err = [(step / per_epoch, v) for step, v in r.metrics.get(STEP_ERR, [])] if per_epoch else []
    clean = r.last(tracking.CLEAN_TRAIN_ERR)
    precise_bn = {k: r.last(k) for k in (tracking.PRECISE_BN_VAL_ERR, tracking.PRECISE_BN_TRAIN_ERR) if k in r.metrics}
    test = {k: r.last(k) for k in ("test_err1", "test_err5") if k in r.metrics}
    diagnostics = {k: r.last(k) for k in r.metrics if k.startswith(("lrn_", "tanh_"))}
    return RunResult(tags.get(tracking.VARIANT, "?"), int(tags.get(tracking.SEED, 0)), r.run_id, curves, step_err, clean, dict(r.params), precise_bn,
                     test, diagnostics, tags.get(tracking.VARIANT_HASH, ""))  # fmt: skip


def score(run, tune: Tune) -> tuple[float, float]:
    """(objective, tie-break) of a tuning run, lower is better. val_err1: the final
    validation error. epochs_to_train_err: epochs until the running training error
    reaches tune.target; a run that never did is ranked by its final training error."""
    r = run if isinstance(run, RunData) else RunData.from_mlflow(run)
    if r.status != "FINISHED":
        return (math.inf, math.inf)
    result = read_run(r)
    if tune.objective == "val_err1":
        return (result.final("val_err1"), 0.0)
    epochs = result.epochs_to(tune.target)
    last = result.step_err[-1][1] if result.step_err else result.final("train_err1")
    return (math.inf if math.isnan(epochs) else epochs, last)


def _values(tags: dict[str, str], tune: Tune) -> dict[str, Any]:
    """A tuning run's candidate values, read back from its tags (written as str(value)):
    a grid value is the grid's own (so False stays False and 0 stays 0), Optuna's a float."""
    if tune.search == "optuna":
        return {k: float(tags[tracking.TUNE_PREFIX + k]) for k in tune.space}
    return {k: {str(x): x for x in tune.space[k]}.get(tags[tracking.TUNE_PREFIX + k], tags[tracking.TUNE_PREFIX + k]) for k in tune.space}


def candidates(runs: list, tune: Tune) -> list[Candidate]:
    """The tuning runs (RunData or MLflow runs) grouped by (variant, candidate values), each seed scored."""
    out: dict[tuple, Candidate] = {}
    for run in runs:
        r = run if isinstance(run, RunData) else RunData.from_mlflow(run)
        values = _values(r.tags, tune)
        variant = r.tags.get(tracking.VARIANT, "?")
        key = (variant, _key(values))
        out.setdefault(key, Candidate(variant, values)).scores.append(score(r, tune))
    return list(out.values())
