"""Three splits: the test split cannot reach training. A run whose test labels are
shuffled (and test images redrawn) trains exactly as one whose test split is intact
(same weights, same val and training metrics, bit for bit) and only its test error
differs; under the former two-split protocol, where that folder is val, the same
comparison finds the difference (the check can fail). The test error is measured once,
at the end, as validation measures (ten crops too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ablations.train import assemble
from ablations.train import run as train
from ablations.train.backfill import _restore
from ablations.train.config import Config, load_config, saved_config
from core import paths
from core.errors import ConfigError
from tests.helpers import client, history, save_image


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATION_CACHE", str(tmp_path / "cache"))


COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30)]
TEST_PER_CLASS = [3, 5, 7, 9]  # unequal, so that a constant prediction scores differently on shuffled labels


def _folder(root: Path, alter_test: bool) -> Path:
    """train/<class>/ (24 noisy images of the class's colour each) and test/<class>/; with
    `alter_test`, the test labels shuffled (images moved to other class folders) and their
    noise redrawn, so that neither the test labels nor the test pixels are the same."""
    rng = np.random.default_rng(0)
    names = [f"c{k}" for k in range(len(COLOURS))]
    for k, colour in enumerate(COLOURS):
        for i in range(24):
            noisy = np.clip(np.asarray(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            save_image(root / "train" / names[k] / f"{i:03d}.png", noisy)
    test = [(k, i) for k, n in enumerate(TEST_PER_CLASS) for i in range(n)]
    labels = [k for k, _ in test]
    if alter_test:
        labels = list(np.random.default_rng(1).permutation(labels))
        assert sum(a != b for a, b in zip(labels, [k for k, _ in test], strict=True)) >= len(test) // 2
    for (k, i), label in zip(test, labels, strict=True):
        noise = np.random.default_rng([int(alter_test), k, i]).normal(0, 25, (12, 12, 3))
        noisy = np.clip(np.asarray(COLOURS[k]) + noise, 0, 255).astype(np.uint8)
        save_image(root / "test" / names[label] / f"{k}_{i:03d}.png", noisy)
    return root


def _train(root: Path, experiment: str, *extra: str) -> str:
    over = [
        "model.arch=cifar", "model.init=default", "data.name=imagefolder", f"data.root={root}", "data.image_size=24", "data.batch_size=16",
        "optim.lr=0.05", "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "trainer.system_metrics_s=null", "trainer.accelerator=cpu", *extra,
    ]  # fmt: skip
    return train.run(load_config(over), experiment=experiment)


def _state(run_id: str) -> dict[str, torch.Tensor]:
    return torch.load(paths.checkpoint(run_id), map_location="cpu", weights_only=True)["state_dict"]


TRAINING_METRICS = ["train_loss_step", "train_err1_step", "train_loss", "train_err1", "lr", "val_loss", "val_err1", "val_err5", "train_clean_err1"]


def _differences(store: str, a: str, b: str) -> list[str]:
    """What differs between two runs in what training computed: weights, and every
    training and validation metric, step by step."""
    out = [f"weights {k}" for k, v in _state(a).items() if not torch.equal(v, _state(b)[k])]
    return out + [key for key in TRAINING_METRICS if history(store, a, key) != history(store, b, key)]


@pytest.mark.parametrize("splits", ["train_val_test", "train_val"])
def test_the_test_split_cannot_reach_training(store, tmp_path, splits):
    plain = _train(_folder(tmp_path / "plain", alter_test=False), "plain", f"data.splits={splits}")
    shuffled = _train(_folder(tmp_path / "shuffled", alter_test=True), "shuffled", f"data.splits={splits}")
    differences = _differences(store, plain, shuffled)
    c = client(store)
    runs = {name: c.get_run(run_id) for name, run_id in (("plain", plain), ("shuffled", shuffled))}
    if splits == "train_val":  # the folder is val: what the run validates (and schedules) on changes
        assert "val_err1" in differences and "val_loss" in differences
        assert not any(k.startswith("test_") for k in runs["plain"].data.metrics)
        assert {d.dataset.name for d in runs["plain"].inputs.dataset_inputs} == {"imagefolder-train", "imagefolder-val"}
        return
    assert differences == []  # held out: the same weights and metrics, bit for bit
    assert runs["plain"].data.metrics["val_err1"] < 0.5  # it learned: its predictions depend on the images
    assert runs["plain"].data.metrics["test_err1"] != runs["shuffled"].data.metrics["test_err1"]  # and test read the labels
    for run_id in (plain, shuffled):
        assert history(store, run_id, "test_err1")[0][0] == history(store, run_id, "test_err5")[0][0] == 2  # once, at the last epoch
        assert len(history(store, run_id, "test_err1")) == 1
    inputs = {(d.dataset.name, d.tags[0].value) for d in runs["plain"].inputs.dataset_inputs}
    assert inputs == {("imagefolder-train", "training"), ("imagefolder-val", "validation"), ("imagefolder-test", "testing")}


def test_the_test_error_is_measured_as_validation_measures(store, tmp_path):
    """The logged test error equals Lightning's validation loop run over the test split with
    the run's final weights, ten crops included."""
    import lightning as L

    run_id = _train(_folder(tmp_path / "data", alter_test=False), "ten_crop", "data.ten_crop=true", "trainer.max_epochs=1")
    logged = client(store).get_run(run_id).data.metrics
    cfg_path = Path(client(store).download_artifacts(run_id, "config.yaml", str(tmp_path)))
    dm, module = _restore(cfg_path, paths.checkpoint(run_id))
    assert dm.cfg.ten_crop and len(dm.splits.test.labels) == sum(TEST_PER_CLASS)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, dataloaders=dm.test_loader(), verbose=False)
    assert logged["test_err1"] == pytest.approx(metrics["val_err1"], abs=1e-6)
    assert logged["test_err5"] == pytest.approx(metrics["val_err5"], abs=1e-6)


def test_the_protocol_key():
    assert Config().data.splits == "train_val_test"
    # a run made before the key (its params lack it) is a train_val run; runs now differ from it
    assert load_config(["data.splits=train_val"]).identity() == {}
    assert load_config().identity() == {"data.splits": "train_val_test"}
    with pytest.raises(ConfigError, match="data.splits=train_val has no test split"):
        load_config(["data.splits=train_val", "data.test_size=100"])


def test_a_run_saved_before_the_key_is_rebuilt_with_the_former_splits(tmp_path):
    """Backfill rebuilds a finished run from its config.yaml: a run that predates data.splits
    was trained and validated on two splits, and is rebuilt so."""
    cfg = load_config(["data.name=flowers17"])
    saved = cfg.to_dict()
    del saved["data"]["splits"]
    assert saved_config(saved).data.splits == "train_val"
    assert saved_config(cfg.to_dict()).data.splits == "train_val_test"
    assert assemble.image_size(saved_config(saved)) == assemble.image_size(cfg)
