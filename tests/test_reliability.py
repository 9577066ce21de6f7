"""Interrupted studies, faults and bad input lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from ablations.config import ROOT, ConfigError, read_yaml
from tests.conftest import SMOKE, run_cli

STUDY = [sys.executable, "-m", "ablations.study", "pooling", "--profile", "smoke", "--seeds", "1", "trainer.max_epochs=8", "data.train_size=1024"]


def _children(client, name):
    exp = client.get_experiment_by_name(name)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000) if "mlflow.parentRunId" in r.data.tags]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_into_the_same_run(store, tmp_path):
    ckpts = tmp_path / "checkpoints"
    proc = subprocess.Popen(STUDY, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list(ckpts.glob("*/last.ckpt")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert list(ckpts.glob("*/last.ckpt")), "no checkpoint was written"
        time.sleep(1.0)  # somewhere inside a later epoch
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: study and training
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    client = MlflowClient(store)
    killed = [r for r in _children(client, "pooling") if r.info.status == "RUNNING"]
    assert len(killed) == 1, "the killed run should be left RUNNING"
    killed_id = killed[0].info.run_id
    epochs_before = len(client.get_metric_history(killed_id, "train_loss"))
    assert 1 <= epochs_before < 8

    result = subprocess.run(STUDY, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"resume  overlapping-seed0 (run {killed_id})" in result.stdout or f"run {killed_id}" in result.stdout
    children = _children(client, "pooling")
    assert sorted((c.data.tags["variant"], c.info.status) for c in children) == [("non_overlapping", "FINISHED"), ("overlapping", "FINISHED")]
    resumed = client.get_run(killed_id)
    assert resumed.info.status == "FINISHED"
    steps = sorted({m.step for m in client.get_metric_history(killed_id, "train_loss")})
    assert steps == list(range(8)), steps  # metrics continue from the right epoch, none missing


def test_non_finite_loss_fails_the_run_with_a_reason(store):
    result = run_cli("ablations.train", *SMOKE, "optim.lr=1e6", "model.norm=none")
    assert result.returncode == 1
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags["failure_reason"]


def test_unreachable_tracking_server_fails_fast(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.time()
    result = run_cli("ablations.train", *SMOKE, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}, timeout=120)
    assert time.time() - start < 30
    assert result.returncode == 2
    assert f"http://127.0.0.1:{port}" in result.stderr and "not reachable" in result.stderr


def test_same_seed_same_metrics_on_cpu(store):
    for _ in range(2):
        result = run_cli("ablations.train", *SMOKE, "seed=3")
        assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert len(runs) == 2
    for key in ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5"):
        a, b = ([(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)] for r in runs)
        assert a == b, key


def test_configs_are_read_safely(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        read_yaml(evil)
    assert not marker.exists()


def test_ui_and_server_bind_loopback():
    for target in ("ui", "server"):
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert "--host 127.0.0.1" in dry.stdout, dry.stdout
