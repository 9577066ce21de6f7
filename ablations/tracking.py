"""MLflow: where runs go, and the few calls the suite makes to it."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request

from ablations.config import ROOT, ConfigError

DEFAULT_URI = f"sqlite:///{ROOT / 'mlflow.db'}"


class TrackingError(ConfigError):
    """The tracking store cannot be reached."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def configure() -> str:
    """Points this process at the store, with bounded HTTP retries, and checks that
    a tracking server answers (within seconds, never a silent local fallback)."""
    uri = tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # a server that is down should fail fast rather than retry for minutes
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


def experiment_id(name: str) -> str:
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name)
        except Exception:  # created meanwhile by a parallel run
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def retry(fn, *args, attempts: int = 5, **kwargs):
    """Calls fn, retrying briefly on transient store errors (e.g. a locked SQLite file)."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MlflowException, OperationalError...
            if attempt == attempts - 1 or "locked" not in str(err).lower() and "timeout" not in str(err).lower():
                raise
            time.sleep(0.5 * 2**attempt)
