"""One tracked run: params, per-epoch metrics and artifacts land in a real MLflow store."""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient

from tests.helpers import SMOKE, run_cli

EPOCH_METRICS = ["train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "lr", "epoch_time_s", "train_img_per_s", "val_img_per_s"]


def test_one_run_is_tracked(store):
    result = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=2", "model.activation=tanh")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished" in result.stdout
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("train")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_id in result.stdout
    # whether the toggles acted: tanh's saturation and LRN's α·Σa²/k, at the start and the end
    for when in ("start", "end"):
        assert 0 <= run.data.metrics[f"tanh_act1_saturated_{when}"] <= 1
        assert 0 < run.data.metrics[f"lrn_norm1_ratio_p99_{when}"] <= run.data.metrics[f"lrn_norm1_ratio_max_{when}"]
    p = run.data.params
    for key in (
        "model.activation",
        "model.norm",
        "model.pool",
        "model.dropout",
        "model.groups",
        "model.init",
        "data.augment",
        "optim.lr",
        "trainer.max_epochs",
    ):
        assert key in p
    assert p["model.activation"] == "tanh" and p["resolved.image_size"] == "32" and p["resolved.num_classes"] == "10" and p["data.image_size"] == "None"
    for key in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [0, 1], key
        assert all(math.isfinite(m.value) for m in history)
    for key in ("train_err1", "val_err1", "val_err5"):
        assert all(0.0 <= m.value <= 1.0 for m in client.get_metric_history(run.info.run_id, key))
    assert run.data.tags["config_hash"]
    # the running training error every log_every_n_steps (4) steps of the 8 per epoch, at optimiser steps
    assert p["steps_per_epoch"] == "8" and p["resolved.channels_last"] == "True"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_err1_step")] == [4, 8, 12, 16]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_clean_err1")] == [1]
    # three splits: the test split evaluated once, at the end; each split an MLflow dataset input
    for key in ("test_err1", "test_err5"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1] and 0.0 <= run.data.metrics[key] <= 1.0
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"shapes-train", "shapes-val", "shapes-test"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "architecture.txt", "conv1_filters.png", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.ckpt"]
    arch = client.download_artifacts(run.info.run_id, "architecture.txt")
    with open(arch) as f:
        assert "Total params: 51,178" in f.read()


@pytest.mark.slow
def test_learning_happens(store):
    """The demo's small network on shapes must learn within a few epochs."""
    result = run_cli("ablations.train", "--profile", "demo", "data.train_size=2048", "trainer.max_epochs=4")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    errs = [m.value for m in client.get_metric_history(run.info.run_id, "train_err1")]
    assert errs[-1] < min(0.85, errs[0] - 0.05), errs


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.name=imagefolder", "data.root=/nonexistent/folder"], "/nonexistent/folder"),
        (["data.name=cifar10", "data.download=false", "data.root=/nonexistent"], "cifar10"),
        (["model.arch=alexnet", "data.image_size=32"], "too small"),
        (["trainer.accelerator=gpu"], "no CUDA GPU"),
    ],
)
def test_bad_input_exits_2_before_mlflow(store, tmp_path, args, message):
    result = run_cli("ablations.train", *SMOKE, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("train")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_summary_cli():
    result = run_cli("ablations.train.summary", "model.arch=alexnet", "model.groups=2", "model.num_classes=1000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-3:] == ["Total params: 60,965,224", "Trainable params: 60,965,224", "Non-trainable params: 0"]


@pytest.mark.slow
def test_the_default_memory_format_changes_no_number_beyond_float_noise(store):
    """trainer.channels_last=auto (channels-last on the CPU) against false: the same
    per-step losses within float32 noise, with dropout and augmentation on."""
    from tests.helpers import client, history

    for cl in ("auto", "false"):
        proc = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1", "trainer.log_every_n_steps=1", f"trainer.channels_last={cl}", "--experiment", cl)
        assert proc.returncode == 0, proc.stderr[-3000:]
    c = client(store)
    runs = {cl: c.search_runs([c.get_experiment_by_name(cl).experiment_id])[0] for cl in ("auto", "false")}
    assert runs["auto"].data.params["resolved.channels_last"] == "True" and runs["false"].data.params["resolved.channels_last"] == "False"
    a, b = (history(store, runs[cl].info.run_id, "train_loss_step") for cl in ("auto", "false"))
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 9))
    for (_, x), (_, y) in zip(a, b):
        assert abs(x - y) <= 1e-5 * abs(y), (x, y)
