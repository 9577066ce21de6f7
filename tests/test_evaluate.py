"""The training error without augmentation that the overfitting gap uses, checked
against Lightning's own validation loop run over the training images."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from mlflow import MlflowClient

from tests.conftest import SMOKE, run_cli


def _validate_on_train(client, run_id: str, ckpt, tmp) -> float:
    """The module's validation path (Lightning hooks, batch pipeline, summed
    metrics) over every training image of the run's dataset."""
    import lightning as L
    from torch.utils.data import DataLoader

    from ablations.config import build_config, read_yaml
    from data.datamodule import AblationDataModule, SplitDataset, _batch
    from lightning_modules.module import AlexNetModule

    run = client.get_run(run_id)
    cfg = build_config(read_yaml(Path(client.download_artifacts(run_id, "config.yaml", str(tmp)))))
    size = int(run.data.params["data.image_size"])
    dm = AblationDataModule(cfg.data, size, seed=cfg.seed)
    dm.setup()
    model = AlexNetModule(cfg, int(run.data.params["model.num_classes"]), size, dm.stats)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    loader = DataLoader(SplitDataset(dm.splits.train, dm.side), batch_size=64, collate_fn=_batch)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(model, dataloaders=loader, verbose=False)
    return metrics["val_err1"]


def test_clean_training_error_matches_a_validation_pass_over_the_training_set(store, tmp_path):
    # augmentation and dropout on: the logged training error is not the clean one
    result = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1", "data.augment=paper", "model.dropout=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    run_id = run.info.run_id
    ckpt = tmp_path / "checkpoints" / run_id / "last.ckpt"
    expected = _validate_on_train(client, run_id, ckpt, tmp_path)

    from ablations.evaluate import METRIC, fill_in

    shutil.rmtree(ckpt.parent)  # the weights then come from the run's MLflow artifact
    values = fill_in(client, [run])
    assert values[run_id] == pytest.approx(expected, abs=1e-6)
    assert client.get_run(run_id).data.metrics[METRIC] == pytest.approx(expected, abs=1e-6)
    # logged once: a second pass reads it back instead of evaluating again
    assert fill_in(client, [client.get_run(run_id)]) == values
    assert len(client.get_metric_history(run_id, METRIC)) == 1


def test_a_run_without_weights_is_reported_as_missing_not_fatal(store, tmp_path):
    result = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    run_id = run.info.run_id
    shutil.rmtree(tmp_path / "checkpoints" / run_id)
    shutil.rmtree(Path(urlparse(run.info.artifact_uri).path) / "checkpoints")

    from ablations.evaluate import fill_in

    messages = []
    assert fill_in(client, [run], say=messages.append) == {}
    assert len(messages) == 1 and "no checkpoint" in messages[0] and run_id in messages[0]
