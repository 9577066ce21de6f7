"""Everything the suite says to MLflow, in one place.

The layout in the store: one experiment per ablation; per study a parent run
(tag `study=true`) and one child run per variant and seed, named
`<variant>-seed<k>`, nested under it (`mlflow.parentRunId`). This module holds the
tag names, creates and finds runs, copies a finished run into another study,
marks failures and reads metric histories. It imports neither torch nor Lightning,
so reports stay light.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.errors import TrackingError
from core.paths import ROOT

# tags
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # a run's or experiment's description in the UI
STUDY = "study"  # "true" on a study's parent run
ABLATION, VARIANT, SEED, BASELINE, PROFILE = "ablation", "variant", "seed", "baseline", "profile"
CONFIG_HASH = "config_hash"
VARIANT_HASH = "variant_hash"  # the config hash without the seed: one per configuration, whatever the seed
GIT_COMMIT = "git_commit"
CHILD_RUNS = "child_runs"  # on the parent: the runs its report reads
REUSED_FROM = "reused_from"  # a copied run: the run that trained it
COPIED_AT = "copied_at"  # a copied run: when it was copied (Unix time; it keeps its source's start and end times)
FAILURE = "failure_reason"
DIVERGED = "diverged"
LAUNCHER = "launcher"  # how the run's process was started, and the launcher's handle on it
TUNING = "tuning"  # "true" on a tuning run
TUNE_PREFIX = "tune."  # a tuning run's candidate values: tags tune.<key> = str(value)
TUNED = "tuned"  # on a parent: "true" when the study tuned its variants (their values: params tuned.<variant>.<key>)
TUNING_RUNS = "tuning_runs"  # on a parent: its tuning runs' ids
ADAPTIVE_SEEDS = "adaptive_seeds"  # on a parent whose seeds were adaptive: JSON {min, max, rule, looks}
STUDIES = "studies"  # on a run: the parent runs of the studies that count it (it may have trained for an earlier one)
SOURCE_NAME, SOURCE_TYPE, SOURCE_COMMIT = "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"  # the UI's Source column
VIEW = "mlflow.sharedViewState."  # experiment tag prefix: a saved view of the runs page, opened by ?viewStateShareKey=<key>
CLEAN_TRAIN_ERR = "train_clean_err1"  # metric: final weights, eval mode, no augmentation
# metrics: the final weights with BatchNorm's running statistics recomputed (`make backfill-NAME PRECISE_BN=1`)
PRECISE_BN_VAL_ERR, PRECISE_BN_TRAIN_ERR = "val_err1_precise_bn", "train_clean_err1_precise_bn"


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
    db = _sqlite_file(uri)
    if db is not None:
        _create_sqlite_store(db)
    return uri


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store's URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _create_sqlite_store(path: Path) -> None:
    """Creates the store's tables under a file lock: two processes that open a new SQLite
    store at once would both create them, and one would fail ("table already exists")."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=300):
        retry(client().search_experiments, max_results=1)


def client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def retry(fn: Callable, *args, attempts: int = 5, **kwargs):
    """Calls fn, retrying briefly on transient store errors (a locked SQLite file, a timeout)."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MlflowException, OperationalError...
            text = str(err).lower()  # a unique constraint: a parallel process created the same row first; again finds it
            transient = "locked" in text or "timeout" in text or "unique constraint" in text
            if attempt == attempts - 1 or not transient:
                raise
            time.sleep(0.5 * 2**attempt)


def source_tags(entry_point: str) -> dict[str, str]:
    """What MLflow's UI shows in its Source column: the entry point and the git commit."""
    return {SOURCE_NAME: entry_point, SOURCE_TYPE: "LOCAL", SOURCE_COMMIT: git_commit().removesuffix("-dirty")}


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
            return c.create_experiment(name, artifact_location=_artifact_location(name))
        except Exception:  # created meanwhile by a parallel process
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _artifact_location(name: str) -> str | None:
    """A SQLite store keeps its experiments' artifacts beside it (<its folder>/mlruns/<name>),
    not in whichever folder the process that created the experiment started in (MLflow's
    default, ./mlruns). A server keeps its own; another database: MLflow's default."""
    db = _sqlite_file(tracking_uri())
    return None if db is None else (db.parent / "mlruns" / name).resolve().as_uri()


def create_run(experiment_id: str, run_name: str, tags: dict[str, str], start_time: int | None = None) -> str:
    return retry(client().create_run, experiment_id, start_time=start_time, tags=tags, run_name=run_name).info.run_id


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


def finish(run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
    retry(client().set_terminated, run_id, status, end_time=end_time)


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
    runs = [r for r in runs if REUSED_FROM not in r.data.tags and r.data.tags.get("aggregate") != "true"]  # as report.collect
    return runs[0] if runs else None


def copy_run(source_id: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Records a finished run of an identical config in another study: params, dataset inputs,
    the full metric histories and the artifacts (not the checkpoint), with tag reused_from. The copy
    keeps its source's start and end times, so the UI's Duration is the time the source
    trained, and its description starts with where it comes from."""
    from mlflow.entities import Metric

    c = client()
    source = get_run(source_id)
    origin = retry(c.get_experiment, source.info.experiment_id).name
    note = f"reused from {source.info.run_name} (run {source_id[:8]}…, experiment {origin}; identical config, not retrained)"
    tags = tags | {REUSED_FROM: source_id, COPIED_AT: str(int(time.time())), NOTE: f"{note}: {tags[NOTE]}" if tags.get(NOTE) else note}
    run_id = create_run(experiment_id, run_name, tags, start_time=source.info.start_time)
    log_params(run_id, source.data.params)
    if source.inputs and source.inputs.dataset_inputs:  # its data (the UI's Dataset column)
        retry(c.log_inputs, run_id, source.inputs.dataset_inputs)
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in source.data.metrics for m in retry(c.get_metric_history, source_id, key)]
    for i in range(0, len(metrics), 1000):
        retry(c.log_batch, run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        for item in c.list_artifacts(source_id):
            if item.path == "checkpoints":
                continue  # large, and kept with the source run
            log_artifact(run_id, c.download_artifacts(source_id, item.path, tmp))
    finish(run_id, end_time=source.info.end_time)
    return run_id


# A new browser opens the MLflow UI (3.17) in its GenAI mode, where an experiment opens on a GenAI
# "Overview"; the switch at the top left picks the mode (the browser remembers it). `make ui` prints the steps.
SWITCH, VIEWS = "Model training", "Views"  # the labels a person clicks
UI_HINT = f'Runs by variant: switch to "{SWITCH}" (top left), then "{VIEWS}" (top right) and the study.'  # plain: lists show it raw
HOW_TO_READ = (
    "Each study is a parent run (tag study=true) with one nested run per variant and seed (`<variant>-seed<k>`). "
    f'Its view (under "{VIEWS}"; the link each study prints and its report gives opens it too) shows its runs grouped by '
    "variant, with the variant, seed and error columns; in Chart view, which starts with the errors, each variant is its "
    "mean over seeds with a min-max band. A run reused from another study (identical config, not retrained) says so in "
    "its description and keeps that run's times. The study's report, with its statistics, is an artifact of the parent "
    "run (report/report.html)."
)


def create_study(ablation: str, description: str, profile: str, params: dict[str, str]) -> tuple[str, str]:
    """A study's parent run in the ablation's experiment: (experiment id, parent run id). The
    experiment gets the ablation's description and how to read it, after a line that says how to reach the
    runs (the UI shows the description's first line above the runs, and above a GenAI "Overview")."""
    exp = experiment_id(ablation)
    retry(client().set_experiment_tag, exp, NOTE, "\n\n".join(filter(None, [UI_HINT, description, HOW_TO_READ])))
    tags = {ABLATION: ablation, STUDY: "true", PROFILE: profile, GIT_COMMIT: git_commit(), NOTE: description}
    tags |= source_tags(f"ablations.study {ablation}")
    parent = create_run(exp, f"{ablation}-{time.strftime('%Y%m%d-%H%M%S')}", tags)
    log_params(parent, params)
    return exp, parent


def add_to_study(run_ids: Iterable[str], parent_id: str) -> None:
    """Tags each run as counted by the study (tag studies: its parents' ids), which is what
    the study's saved view filters on: its own children and the runs it found finished."""
    for run_id in run_ids:
        studies = get_run(run_id).data.tags.get(STUDIES, "")
        if parent_id not in studies.split(","):
            set_tags(run_id, {STUDIES: ",".join(filter(None, [studies, parent_id]))})


LEADING_CHARTS = ("val_err1", "test_err1", "val_err5", "test_err5", "train_err1", CLEAN_TRAIN_ERR)  # Chart view: the errors first
# a line chart's fields as the UI generates them (MLflow 3.17), less its metric, uuid and section
_LINE_CHART = {"type": "LINE", "runsCountToCompare": 10, "deleted": False, "isGenerated": True, "lineSmoothness": 0, "xAxisScaleType": "linear",
               "scaleType": "linear", "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [],
               "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}  # fmt: skip


def _leading_charts() -> dict[str, Any]:
    """A saved view's Chart view: a line chart per metric of LEADING_CHARTS, in that order, in the
    "Model metrics" section marked reordered, so that the UI appends the other metrics after them
    (unmarked, it files them in alphabetically: epoch_time_s and lr first). A chart of a metric
    that no run has is hidden (hideEmptyCharts)."""
    charts = [_LINE_CHART | {"uuid": f"study-{k}", "metricSectionId": "study-model", "metricKey": k, "displayName": k} for k in LEADING_CHARTS]
    sections = [{"uuid": f"study-{k}", "name": f"{k.title()} metrics", "display": True, "isReordered": k == "model"} for k in ("model", "system")]
    return {"compareRunCharts": charts, "compareRunSections": sections, "isAccordionReordered": False}


def save_study_view(experiment_id: str, parent_id: str, name: str) -> str:
    """A saved view of the experiment's runs page showing this study: its runs, grouped by
    variant (the group's mean over seeds, and a min-max band in Chart view), with the
    variant, seed and error columns, and in Chart view the errors first. The UI lists it
    under "Views" on the experiment's runs page; ?viewStateShareKey=<key> opens it too.
    Returns the key. The view is an experiment tag in the UI's own format (MLflow 3.17;
    tests/test_browser.py checks that the UI still reads it)."""
    columns = ["tags.`variant`", "tags.`seed`", "metrics.`val_err1`", "metrics.`train_err1`", f"metrics.`{CLEAN_TRAIN_ERR}`", "attributes.`Description`"]
    state = {
        "searchFilter": f"tags.{STUDIES} LIKE '%{parent_id}%'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": VARIANT}]},
        "useGroupedValuesInCharts": True,
        "runsHiddenMode": "SHOW_ALL",
        "hideEmptyCharts": True,
    } | _leading_charts()
    now = int(time.time() * 1000)
    view = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    retry(client().set_experiment_tag, experiment_id, VIEW + parent_id, json.dumps(view))
    return parent_id


def view_name(view: str) -> str:
    """A saved view's name (from its experiment tag's value), as the UI lists it under "Views"."""
    return json.loads(view).get("name", "")


def ui_url() -> str:
    """Where the MLflow UI is: the tracking server itself, or what `make ui` serves ($MLFLOW_UI_URL)."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


def study_link(experiment_id: str, view_key: str, chart: bool = False) -> str:
    """The deep link that opens a study's saved view in the model-training view of the UI."""
    return f"{ui_url()}/#/experiments/{experiment_id}/runs?viewStateShareKey={view_key}&workflowType=machine_learning" + (
        "&compareRunsMode=CHART" if chart else ""
    )


def log_dataset(run_id: str, name: str, digest: str, source: str, profile: dict, context: str) -> None:
    """The run's data as an MLflow input (the UI's Dataset column): name, a digest that changes
    when the data does, where it came from, and its sizes."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}), profile=json.dumps(profile))
    retry(client().log_inputs, run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])


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
