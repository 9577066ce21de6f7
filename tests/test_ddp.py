"""Multi-process training (DDP) on the CPU with gloo, as on several GPUs with NCCL:
one MLflow run per training whatever the number of processes, the same numbers
as one process, studies with parallel runs, torchrun, and the GPU check's CPU paths.

The slow tests start real 2-process runs (about 20-70 s each on 2 CPU cores)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, SMOKE, all_runs, client, history, only_run, run_cli, show

CPU2 = ["trainer.accelerator=cpu", "trainer.devices=2"]
EPOCH_METRICS = ["train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "lr", "epoch_time_s", "train_img_per_s", "val_img_per_s"]
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a CUDA GPU")


def check_one_finished_run(store: str, tmp_path: Path, epochs: int, experiment: str | None = None):
    """One FINISHED run holding every metric once per epoch, its params, and one checkpoint folder."""
    run = only_run(store, experiment)
    assert run.info.status == "FINISHED", run.data.tags.get("failure_reason")
    missing = [k for k in EPOCH_METRICS if k not in run.data.metrics]
    assert not missing, f"metrics missing: {missing}"
    for key in EPOCH_METRICS:  # a second rank logging would double these
        assert [s for s, _ in history(store, run.info.run_id, key)] == list(range(epochs)), key
    steps = [s for s, _ in history(store, run.info.run_id, "train_loss_step")]
    assert len(steps) == len(set(steps)), f"train_loss_step logged more than once per step: {steps}"
    assert run.data.params["trainer.devices"] == "2" and run.data.params["data.batch_size"] == "32"
    assert run.data.tags.get("config_hash")
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert folders == [run.info.run_id], f"every rank must agree on the checkpoint folder: {folders}"
    assert (tmp_path / "checkpoints" / run.info.run_id / "last.ckpt").exists()
    artifacts = {a.path for a in client(store).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "architecture.txt", "checkpoints"} <= artifacts, artifacts
    return run


# ------------------------------------------------------------------ DDP runs


@pytest.mark.slow
def test_ddp_two_processes_log_one_run(store, tmp_path):
    """`python -m ablations.train --profile smoke trainer.accelerator=cpu trainer.devices=2`:
    Lightning's launcher starts rank 1 by running the command again; only rank 0 logs."""
    proc = run_cli("ablations.train", *SMOKE, *CPU2, timeout=180)
    assert proc.returncode == 0, show(proc)
    run = check_one_finished_run(store, tmp_path, epochs=2, experiment="train")
    assert f"run {run.info.run_id} finished" in proc.stdout
    assert proc.stdout.count(" finished in ") == 1, "only rank 0 reports"
    assert proc.stdout.count("epoch 2/2") == 1, "only rank 0 prints epochs"
    # validation: the two ranks together saw each of the 128 images once
    n_val = 128
    for _, err in history(store, run.info.run_id, "val_err1"):
        assert abs(err * n_val - round(err * n_val)) < 1e-6, "val_err1 is a count over the whole split"


@pytest.mark.slow
def test_ddp_matches_one_process(store, tmp_path):
    """Same global batch and seed, nothing random (no dropout, no augmentation, no
    BatchNorm): 2 processes reach the same losses as 1, step by step."""
    common = [*SMOKE, "trainer.accelerator=cpu", "model.dropout=0", "model.norm=lrn", "data.augment=none",
              "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "optim.lr=0.05"]  # fmt: skip
    one = run_cli("ablations.train", *common, "--experiment", "one", timeout=180)
    assert one.returncode == 0, show(one)
    two = run_cli("ablations.train", *common, "trainer.devices=2", "--experiment", "two", timeout=180)
    assert two.returncode == 0, show(two)
    r1, r2 = only_run(store, "one"), only_run(store, "two")
    assert r2.data.params["data.augment"] == "none" and r2.data.params["model.dropout"] == "0.0"
    s1, s2 = history(store, r1.info.run_id, "train_loss_step"), history(store, r2.info.run_id, "train_loss_step")
    assert [s for s, _ in s1] == [s for s, _ in s2] == list(range(1, 9)), (s1, s2)
    losses = [v for _, v in s1]
    assert max(losses) - min(losses) > 1e-2, f"the weights must move for the comparison to mean anything: {losses}"
    for (step, a), (_, b) in zip(s1, s2):
        assert abs(a - b) / abs(a) < 1e-4, f"step {step}: 1 process {a}, 2 processes {b}"
    for key in ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5"):
        a, b = r1.data.metrics[key], r2.data.metrics[key]
        assert abs(a - b) <= 1e-4 * max(abs(a), 1e-3), f"{key}: 1 process {a}, 2 processes {b}"


@pytest.mark.slow
def test_torchrun_two_processes(store, tmp_path):
    """torchrun has no launching parent: rank 0 creates the run and broadcasts its id."""
    proc = run_cli("torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ablations.train", *SMOKE, *CPU2, timeout=180)
    assert proc.returncode == 0, show(proc)
    check_one_finished_run(store, tmp_path, epochs=2, experiment="train")


@pytest.mark.slow
def test_ddp_batchnorm_on_cpu(store, tmp_path):
    """BatchNorm under CPU DDP: per-process statistics (SyncBatchNorm is CUDA-only)."""
    proc = run_cli("ablations.train", *SMOKE, *CPU2, "model.norm=batchnorm", "model.sync_batchnorm=false", "trainer.max_epochs=1", timeout=180)
    assert proc.returncode == 0, show(proc)
    run = check_one_finished_run(store, tmp_path, epochs=1)
    import mlflow

    table = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="architecture.txt", tracking_uri=store)).read_text()
    assert "BatchNorm2d" in table and "SyncBatchNorm" not in table


FAILING_TRAIN = """
import sys
from lightning_modules.module import AlexNetModule

step = AlexNetModule.training_step

def failing_step(self, batch, batch_idx):
    if self.global_rank == 1 and batch_idx == 2:
        raise RuntimeError("injected failure on rank 1")
    return step(self, batch, batch_idx)

AlexNetModule.training_step = failing_step
from ablations.train.run import main
from core.errors import run_command

sys.exit(run_command(main))
"""


@pytest.mark.slow
def test_failure_on_rank_1_marks_run_failed(store, tmp_path):
    script = tmp_path / "failing_train.py"
    script.write_text(textwrap.dedent(FAILING_TRAIN))
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(script), *SMOKE, *CPU2], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0, show(proc)
    run = only_run(store)
    assert run.info.status == "FAILED", show(proc)
    assert "rank 1: RuntimeError: injected failure on rank 1" in run.data.tags.get("failure_reason", ""), run.data.tags


# ------------------------------------------------------------------ studies


@pytest.mark.slow
def test_study_parallel_two(store):
    # the command, one epoch per run to keep the test short (overrides last, as `make ARGS=` puts them)
    proc = run_cli("ablations.study", "activation", *SMOKE, "--seeds", "1", "--parallel", "2", "trainer.max_epochs=1", timeout=240)
    assert proc.returncode == 0, show(proc)
    output = proc.stdout + proc.stderr
    assert "database is locked" not in output.lower(), show(proc)
    runs = all_runs(store)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("study") == "true"]
    assert sorted(r.info.run_name for r in children) == ["relu-seed0", "tanh-seed0"]
    assert [r.info.status for r in children] == ["FINISHED"] * 2, [(r.info.run_name, r.data.tags.get("failure_reason")) for r in children]
    assert [r.info.status for r in parents] == ["FINISHED"]
    assert all("val_err1" in r.data.metrics for r in children)


# ------------------------------------------------------------------ bad input: exit 2, nothing in MLflow


def test_batch_must_divide_across_devices(store):
    proc = run_cli("ablations.train", *SMOKE, *CPU2, "data.batch_size=63", timeout=120)
    assert proc.returncode == 2, show(proc)
    assert "does not divide across 2 devices" in proc.stderr and "global batch" in proc.stderr
    assert all_runs(store) == []


@needs_no_gpu
def test_gpu_accelerator_without_gpu(store):
    proc = run_cli("ablations.train", *SMOKE, "trainer.accelerator=gpu", "trainer.devices=2", timeout=120)
    assert proc.returncode == 2, show(proc)
    assert "no CUDA GPU" in proc.stderr
    assert all_runs(store) == []


@needs_no_gpu
def test_sync_batchnorm_needs_cuda(store):
    proc = run_cli("ablations.train", *SMOKE, *CPU2, "model.norm=batchnorm", timeout=120)
    assert proc.returncode == 2, show(proc)
    assert "model.sync_batchnorm=false" in proc.stderr
    assert all_runs(store) == []


# ------------------------------------------------------------------ SyncBatchNorm wiring


@pytest.mark.parametrize(
    "arch, norm, sync, devices, expected",
    [
        ("cifar", "batchnorm", True, 2, {"SyncBatchNorm"}),
        ("tutorial", "batchnorm", True, 2, {"SyncBatchNorm"}),  # the dense layers' BatchNorm1d too
        ("cifar", "batchnorm", False, 2, {"BatchNorm2d"}),
        ("cifar", "batchnorm", True, 1, {"BatchNorm2d"}),
        ("cifar", "lrn", True, 2, set()),
    ],
)
def test_sync_batchnorm_wiring(arch, norm, sync, devices, expected):
    """Under DDP with model.sync_batchnorm=true every BatchNorm layer the network has, of
    any dimension, becomes a SyncBatchNorm (Lightning's layer sync); otherwise none does."""
    from ablations.train import assemble
    from ablations.train.config import load_config
    from lightning_modules.networks import build_network

    overrides = [
        f"model.arch={arch}",
        f"model.norm={norm}",
        f"model.sync_batchnorm={str(sync).lower()}",
        "trainer.accelerator=cpu",
        f"trainer.devices={devices}",
    ]
    cfg = load_config(overrides)
    trainer = assemble.trainer(cfg, logger=False, callbacks=[])
    net = build_network(cfg.model, 10, assemble.image_size(cfg))
    layer_sync = getattr(trainer.strategy, "_layer_sync", None)
    if layer_sync is not None:
        net = layer_sync.apply(net)
    assert {type(m).__name__ for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)} == expected


# ------------------------------------------------------------------ the GPU check


@needs_no_gpu
def test_gpu_check_skips_without_gpu(store):
    proc = run_cli("tools.gpu_check", timeout=120)
    assert proc.returncode == 0, show(proc)
    assert "skipped: no CUDA GPU" in proc.stdout
    assert all_runs(store) == []


@pytest.mark.slow
def test_gpu_check_path_on_cpu(store):
    """The script's own logic, on the CPU at a tiny scale: paper AlexNet at 227 px in
    bf16-mixed with channels_last trains, the run is FINISHED, the figures print. Two
    steps cannot show learning, so the loss check alone may fail here."""
    proc = run_cli("tools.gpu_check", "--cpu", "--epochs", "1", "--train-size", "16", "--val-size", "16", "--batch-size", "16", timeout=240)
    assert proc.returncode in (0, 1), show(proc)
    failures = [line for line in proc.stderr.splitlines() if line.startswith("gpu-check FAILED")]
    assert all("did not fall" in line for line in failures), show(proc)
    assert "images/s" in proc.stdout and "TFLOP/s" in proc.stdout and "0.720 GMACs" in proc.stdout, show(proc)
    run = only_run(store, "gpu-check")
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["model.arch"], p["data.image_size"], p["trainer.precision"], p["trainer.channels_last"]) == ("alexnet", "227", "bf16-mixed", "True")


@pytest.mark.parametrize(
    "visible, parallel, gpus, expected",
    [
        ("0,1,2,3,4,5,6,7", 4, 2, ["0,1", "2,3", "4,5", "6,7"]),  # each slot its own GPUs
        ("0", 4, 1, ["0", "0", "0", "0"]),  # four small runs sharing one GPU
        ("0,1", 4, 1, ["0", "1", "0", "1"]),  # round-robin when there are fewer GPUs than slots
        ("3,5", 2, 1, ["3", "5"]),  # the ids CUDA_VISIBLE_DEVICES gave, not 0..n
    ],
)
def test_parallel_slots_get_their_gpus(monkeypatch, visible, parallel, gpus, expected):
    from ablations.study.launch import LocalLauncher

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    launcher = LocalLauncher(parallel=parallel, gpus=gpus)
    assert [launcher._env(slot)["CUDA_VISIBLE_DEVICES"] for slot in range(parallel)] == expected
