"""Everything the suite says to MLflow, in one place.

The layout in the store: one experiment per ablation; per study a parent run
(tag `study=true`) and one child run per variant and seed, named
`<variant>-seed<k>`, nested under it (`mlflow.parentRunId`). This module holds the
tag names, creates and finds runs, copies a finished run into another study,
marks failures and reads metric histories. It imports neither torch nor Lightning,
so reports stay light.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from core.errors import TrackingError
from core.paths import ROOT

# tags
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # a run's or experiment's description in the UI
STUDY = "study"  # "true" on a study's parent run
ABLATION, VARIANT, SEED, BASELINE, PROFILE = "ablation", "variant", "seed", "baseline", "profile"
CONFIG_HASH = "config_hash"
GIT_COMMIT = "git_commit"
CHILD_RUNS = "child_runs"  # on the parent: the runs its report reads
REUSED_FROM = "reused_from"  # a copied run: the run that trained it
FAILURE = "failure_reason"
DIVERGED = "diverged"
LAUNCHER = "launcher"  # how the run's process was started, and the launcher's handle on it
TUNING = "tuning"  # "true" on a tuning run; its candidate values are tagged tune.<key>
TUNED = "tuned"  # on a parent: "true" when the study tuned its variants (their values: params tuned.<variant>.<key>)
TUNING_RUNS = "tuning_runs"  # on a parent: its tuning runs' ids
CLEAN_TRAIN_ERR = "train_clean_err1"  # metric: final weights, eval mode, no augmentation


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"


def configure() -> str:
    """Points this process (and the processes it starts) at the store, with bounded
    HTTP retries, and checks that a tracking server answers (within seconds; never a
    silent fallback to a local store)."""
    uri = tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in study logs
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is not reachable ({err}). Start it (make server), "
                "or unset MLFLOW_TRACKING_URI to use the local store sqlite:///mlflow.db"
            ) from None
    return uri


def client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def retry(fn: Callable, *args, attempts: int = 5, **kwargs):
    """Calls fn, retrying briefly on transient store errors (a locked SQLite file, a timeout)."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MlflowException, OperationalError...
            transient = "locked" in str(err).lower() or "timeout" in str(err).lower()
            if attempt == attempts - 1 or not transient:
                raise
            time.sleep(0.5 * 2**attempt)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


# ------------------------------------------------------------------ experiments and runs


def experiment_id(name: str) -> str:
    """The experiment's id, created (or restored from the bin) when needed."""
    c = client()
    exp = retry(c.get_experiment_by_name, name)
    if exp is None:
        try:
            return c.create_experiment(name)
        except Exception:  # created meanwhile by a parallel process
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def create_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    return retry(client().create_run, experiment_id, tags=tags, run_name=run_name).info.run_id


def get_run(run_id: str):
    return retry(client().get_run, run_id)


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    retry(client().log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        retry(client().log_batch, run_id, params=items[i : i + 100])


def log_artifact(run_id: str, path: str, folder: str | None = None) -> None:
    retry(client().log_artifact, run_id, path, folder)


def set_running(run_id: str) -> None:
    retry(client().update_run, run_id, status="RUNNING")


def finish(run_id: str, status: str = "FINISHED") -> None:
    retry(client().set_terminated, run_id, status)


def mark_ended(run_id: str, status: str, reason: str, only_if_running: bool = True) -> bool:
    """Marks a run FAILED or KILLED with the reason (tag failure_reason). With
    only_if_running, a run that another process already ended is left as it is.
    Returns whether it marked the run."""
    run = get_run(run_id)
    if only_if_running and run.info.status not in ("RUNNING", "SCHEDULED"):
        return False
    set_tags(run_id, {FAILURE: reason[:4000]})
    finish(run_id, status)
    return True


def search(experiment_ids: Iterable[str], filter_string: str, max_results: int = 1000, order_by: list[str] | None = None) -> list:
    return retry(client().search_runs, list(experiment_ids), filter_string=filter_string, max_results=max_results, order_by=order_by)


def runs_of_config(experiment_id: str, ablation: str, variant: str, config_hash: str, tuning: bool = False) -> list:
    """The runs of this study's (variant, config), whatever their status: its tuning runs,
    or the others."""
    runs = search([experiment_id], f"tags.{CONFIG_HASH} = '{config_hash}' and tags.{ABLATION} = '{ablation}' and tags.{VARIANT} = '{variant}'")
    return [r for r in runs if (r.data.tags.get(TUNING) == "true") == tuning]


def finished_elsewhere(config_hash: str):
    """A FINISHED run that trained this config, in any experiment (e.g. the baseline,
    which every ablation shares), or None. Copies are not sources."""
    ids = [e.experiment_id for e in retry(client().search_experiments)]
    runs = search(ids, f"tags.{CONFIG_HASH} = '{config_hash}' and attributes.status = 'FINISHED'", max_results=50)
    runs = [r for r in runs if REUSED_FROM not in r.data.tags and r.data.tags.get("aggregate") != "true"]
    return runs[0] if runs else None


def copy_run(source_id: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Records a finished run of an identical config in another study: params, the full
    metric histories and the artifacts (not the checkpoint), with tag reused_from."""
    from mlflow.entities import Metric

    c = client()
    source = get_run(source_id)
    run_id = create_run(experiment_id, run_name, tags | {REUSED_FROM: source_id})
    log_params(run_id, source.data.params)
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in source.data.metrics for m in retry(c.get_metric_history, source_id, key)]
    for i in range(0, len(metrics), 1000):
        retry(c.log_batch, run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        for item in c.list_artifacts(source_id):
            if item.path == "checkpoints":
                continue  # large, and kept with the source run
            log_artifact(run_id, c.download_artifacts(source_id, item.path, tmp))
    finish(run_id)
    return run_id


def create_study(ablation: str, description: str, profile: str, params: dict[str, str]) -> tuple[str, str]:
    """A study's parent run in the ablation's experiment: (experiment id, parent run id)."""
    exp = experiment_id(ablation)
    tags = {ABLATION: ablation, STUDY: "true", PROFILE: profile, GIT_COMMIT: git_commit(), NOTE: description}
    parent = create_run(exp, f"{ablation}-{time.strftime('%Y%m%d-%H%M%S')}", tags)
    log_params(parent, params)
    return exp, parent


# ------------------------------------------------------------------ studies, as reports read them


def newest_study(ablation: str, tuned: bool | None = None, finished: bool = False):
    """The newest parent run of the ablation's studies (with tuned: of those that did,
    or did not, tune; with finished: of the FINISHED ones), or None."""
    exp = retry(client().get_experiment_by_name, ablation)
    if exp is None:
        return None
    for run in search([exp.experiment_id], f"tags.{STUDY} = 'true'", max_results=200, order_by=["attributes.start_time DESC"]):
        if tuned is not None and (run.data.tags.get(TUNED) == "true") != tuned:
            continue
        if finished and run.info.status != "FINISHED":
            continue
        return run
    return None


def study_children(parent) -> list:
    """The runs a study reports on: those listed on its parent (children and the runs
    it skipped because they had finished before), else, for a study still running or
    interrupted, its own children."""
    ids = [i for i in parent.data.tags.get(CHILD_RUNS, "").split(",") if i]
    if ids:
        return [get_run(i) for i in ids]
    runs = search([parent.info.experiment_id], f"tags.`{PARENT}` = '{parent.info.run_id}'")
    return [r for r in runs if r.data.tags.get(TUNING) != "true"]


def tuning_runs(parent) -> list:
    """The runs a study tuned with (its own, and those it found finished before)."""
    return [get_run(i) for i in parent.data.tags.get(TUNING_RUNS, "").split(",") if i]


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value), by step; a step logged twice (a resumed epoch) keeps its last value."""
    by_step: dict[int, float] = {}
    for m in sorted(retry(client().get_metric_history, run_id, key), key=lambda m: m.timestamp):
        by_step[m.step] = m.value
    return sorted(by_step.items())
