"""Interrupted studies, faults and bad input lose nothing: a killed study resumes
(and provably resumes, not retrains), Ctrl-C marks what ran KILLED, --force retrains,
a RUNNING run whose process is gone is recognised as stale."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from ablations.train.config import load_config
from core.config import read_yaml
from core.errors import ConfigError
from core.paths import ROOT
from tests.helpers import SMOKE, client, history, only_run, run_cli, study

STUDY = [sys.executable, "-m", "ablations.study", "one_run", "--profile", "smoke", "--seeds", "1", "trainer.max_epochs=5", "data.train_size=1024"]


def _start_and_wait_for_a_checkpoint(tmp_path) -> subprocess.Popen:
    """The study in its own process group, once its first run has a checkpoint and is inside a later epoch."""
    proc = subprocess.Popen(
        STUDY, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal: a test worker may ignore SIGINT, and children inherit that
    )  # fmt: skip
    deadline = time.time() + 240
    while not list((tmp_path / "checkpoints").glob("*/last.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert list((tmp_path / "checkpoints").glob("*/last.ckpt")), "no checkpoint was written"
    time.sleep(1.0)  # somewhere inside a later epoch
    return proc


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_into_the_same_run(store, one_run, tmp_path):
    proc = _start_and_wait_for_a_checkpoint(tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: study and training
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _, children = study(store, one_run)
    killed = [r for r in children if r.info.status == "RUNNING"]
    assert len(killed) == 1, "the killed run should be left RUNNING"
    killed_id = killed[0].info.run_id
    before = history(store, killed_id, "train_loss")
    assert 1 <= len(before) < 5

    result = subprocess.run(STUDY, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # a resume, not a retrain: the study says so, the training process loaded the checkpoint ...
    assert f"resume  overlapping-seed0 (run {killed_id})" in result.stdout
    assert "resuming from" in result.stdout
    _, children = study(store, one_run)
    assert [(c.data.tags["variant"], c.info.status) for c in children] == [("overlapping", "FINISHED")]
    assert client(store).get_run(killed_id).info.status == "FINISHED"
    # ... and every epoch's metrics were logged once: the epochs before the kill were not trained again
    after = history(store, killed_id, "train_loss")
    assert [s for s, _ in after] == list(range(5)), after
    assert after[: len(before)] == before


@pytest.mark.slow
def test_ctrl_c_marks_the_runs_killed_and_exits_130(store, one_run, tmp_path):
    proc = _start_and_wait_for_a_checkpoint(tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted; run the same command again to resume it" in out
    parents, children = study(store, one_run)
    assert [p.info.status for p in parents] == ["KILLED"]
    (run,) = children
    assert run.info.status == "KILLED" and "interrupted" in run.data.tags["failure_reason"]


@pytest.mark.slow
def test_sigterm_to_the_study_alone_stops_its_training_processes(store, one_run, tmp_path):
    """`kill PID`, `timeout` or a batch system's cancel: SIGTERM to the study's process only.
    Its training processes must stop with it (not train on as orphans), their runs KILLED; also
    when the study started with SIGINT ignored, as in the background of a script."""
    proc = subprocess.Popen(
        STUDY, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        seen = ""
        while "epoch 1/" not in seen and proc.poll() is None:  # the run's process is inside training
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (seen + out)[-3000:]
    assert "interrupted; run the same command again to resume it" in out
    (run,) = study(store, one_run)[1]
    # stopped by the study at once, in its own way (not run to its end, nor SIGKILLed 30 s later)
    assert run.info.status == "KILLED" and "interrupted (Ctrl-C or SIGTERM)" in run.data.tags["failure_reason"], run.data.tags
    pid = int(run.data.tags["pid"])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the training process is gone, not orphaned


@pytest.mark.slow
def test_force_retrains_finished_runs(store, one_run):
    args = [one_run, *SMOKE, "--seeds", "1", "trainer.max_epochs=1"]
    assert run_cli("ablations.study", *args).returncode == 0
    _, first = study(store, one_run)
    again = run_cli("ablations.study", *args, "--force")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "\nskip   " not in again.stdout and again.stdout.count("\nstart  ") == 1 and "1 trained, 0 skipped" in again.stdout
    _, children = study(store, one_run)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.info.run_id for c in first} < {c.info.run_id for c in children}


@pytest.mark.slow
def test_a_running_run_whose_process_is_gone_is_marked_stale(store, tmp_path):
    """A RUNNING run of the study's config on this host whose training process no longer
    exists, with no checkpoint: the next study marks it KILLED (stale) and trains anew."""
    from ablations import tracking
    from ablations.study.launch import HOST

    cfg = load_config(["seed=0", "trainer.max_epochs=1"], profile="smoke")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    exp = tracking.experiment_id("pooling")
    tags = {"ablation": "pooling", "variant": "overlapping", "config_hash": cfg.hash(), "launcher": "local", "host": HOST, "pid": str(gone.pid)}
    stale = client(store).create_run(exp, run_name="overlapping-seed0", tags=tags).info.run_id
    proc = run_cli("ablations.study", "pooling", *SMOKE, "--seeds", "1", "trainer.max_epochs=1", "--parallel", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = client(store).get_run(stale)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"].startswith("stale")
    _, children = study(store, "pooling")
    assert sorted(c.info.status for c in children if c.info.run_id != stale) == ["FINISHED", "FINISHED"]


def test_non_finite_loss_fails_the_run_with_a_reason(store):
    result = run_cli("ablations.train", *SMOKE, "optim.lr=1e6", "model.norm=none")
    assert result.returncode == 1
    run = only_run(store, "train")
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags["failure_reason"]


def test_unreachable_tracking_server_fails_fast(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.time()
    result = run_cli("ablations.train", *SMOKE, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}, timeout=120)
    assert time.time() - start < 30
    assert result.returncode == 2
    assert f"http://127.0.0.1:{port}" in result.stderr and "not reachable" in result.stderr


@pytest.mark.slow
def test_same_seed_same_metrics_on_cpu(store):
    for _ in range(2):
        result = run_cli("ablations.train", *SMOKE, "seed=3")
        assert result.returncode == 0, result.stderr[-2000:]
    c = client(store)
    runs = c.search_runs([c.get_experiment_by_name("train").experiment_id])
    assert len(runs) == 2
    for key in ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "train_err1_step", "train_clean_err1"):
        a, b = (history(store, r.info.run_id, key) for r in runs)
        assert a == b, key


@pytest.mark.slow
def test_a_run_resumed_after_its_last_epoch_still_measures_its_clean_training_error(store, tmp_path):
    """A run stopped after its last epoch's checkpoint, before the clean training error was
    measured, trains no epoch when resumed (Lightning skips a finished training loop and
    its hooks): it must still log `train_clean_err1`, the same as the run it continues."""
    assert run_cli("ablations.train", *SMOKE).returncode == 0
    c = client(store)
    (done,) = c.search_runs([c.get_experiment_by_name("train").experiment_id])
    # a run holding that run's final checkpoint and no clean error: the state a stop in that window leaves
    resumed = c.create_run(done.info.experiment_id, run_name="stopped-after-its-last-epoch").info.run_id
    (tmp_path / "checkpoints" / resumed).mkdir(parents=True)
    shutil.copy(tmp_path / "checkpoints" / done.info.run_id / "last.ckpt", tmp_path / "checkpoints" / resumed / "last.ckpt")
    result = run_cli("ablations.train", *SMOKE, "--run-id", resumed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    assert history(store, resumed, "train_loss") == []  # nothing trained again
    clean = history(store, resumed, "train_clean_err1")
    assert clean and clean == history(store, done.info.run_id, "train_clean_err1")
    assert c.get_run(resumed).info.status == "FINISHED"


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


def test_ctrl_c_interrupts_training_once_even_after_lightning_restores_the_handler():
    """Ctrl-C reaches a study and its training processes at once, and the study then sends its
    own SIGINT: the second one must not cut the run's shutdown short (it left runs RUNNING).
    Lightning puts back the SIGINT handler it found when `fit` ends, so the training process's
    handler must stay quiet after the first interrupt however it is re-installed."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from ablations.train.run import _InterruptOnce

    class CtrlC(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, _InterruptOnce())
    try:
        trainer = L.Trainer(max_epochs=1, callbacks=[CtrlC()], logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
        with pytest.raises(SystemExit):  # Lightning turns the KeyboardInterrupt into SystemExit(1)
            trainer.fit(BoringModel())
        assert trainer.global_step == 2 and trainer.interrupted
        os.kill(os.getpid(), signal.SIGINT)  # the study's SIGINT, after Lightning's teardown: ignored
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)
