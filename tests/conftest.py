"""Fixtures. Every test that tracks runs gets its own real SQLite MLflow store,
checkpoint folder and report folder, through the environment that the suite's
processes read (paths are resolved when used, so nothing else needs patching);
tests never touch the user's mlflow.db."""

from __future__ import annotations

import mlflow
import pytest

from tests.helpers import copy_configs


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An isolated MLflow store (SQLite), checkpoint, report and cache folder; returns the URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ABLATION_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("ABLATION_REPORTS", str(tmp_path / "reports"))
    mlflow.set_tracking_uri(uri)  # a run trained in-process by an earlier test set MLflow's own, which wins over the variable
    return uri


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A private copy of configs/ that the suite's commands read ($ABLATION_CONFIGS)."""
    folder = copy_configs(tmp_path)
    monkeypatch.setenv("ABLATION_CONFIGS", str(folder))
    return folder


@pytest.fixture
def one_run(configs):
    """An ablation of one variant (`one_run`: the profile's baseline as it is): one run per
    seed, for tests that interrupt a study and need no second run."""
    (configs / "ablations" / "one_run.yaml").write_text("description: one run, to interrupt\nbaseline: overlapping\nvariants:\n  overlapping: {}\n")
    return "one_run"
