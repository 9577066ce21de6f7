"""Shared fixtures. Every test that tracks runs gets its own real SQLite MLflow
store, checkpoint folder and report folder, through the environment that the
suite's processes read, so tests never touch the user's mlflow.db."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CIFAR_JPEG = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An isolated MLflow store (sqlite), checkpoint dir and report dir; returns the URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ABLATION_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("ABLATION_REPORTS", str(tmp_path / "reports"))
    import ablations.report as report
    import ablations.train as train

    monkeypatch.setattr(train, "CHECKPOINT_ROOT", tmp_path / "checkpoints")
    monkeypatch.setattr(report, "REPORT_DIR", tmp_path / "reports")
    return uri


def run_cli(module: str, *args: str, timeout: float = 600, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Runs `python -m module args` as a user would, in a fresh process."""
    full_env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"} | (env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


SMOKE = ["--profile", "smoke"]
