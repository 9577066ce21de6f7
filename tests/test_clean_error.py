"""The final weights' training error without augmentation (the overfitting gap's
reference): measured by the run itself, checked against Lightning's own validation
loop run over the training images; and back-filled for runs that lack it."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from ablations import tracking
from ablations.train import assemble
from ablations.train.backfill import _restore, backfill, recompute_bn
from ablations.train.config import build_config
from core.config import read_yaml
from tests.helpers import SMOKE, client, only_run, run_cli


def _validate_on_train(store: str, run, tmp) -> float:
    """The module's validation path (Lightning hooks, batch pipeline, summed metrics)
    over every training image of the run's dataset, from the run's checkpoint."""
    import lightning as L
    from torch.utils.data import DataLoader

    from data.datamodule import SplitDataset, _batch

    c = client(store)
    cfg = build_config(read_yaml(Path(c.download_artifacts(run.info.run_id, "config.yaml", str(tmp)))))
    dm = assemble.datamodule(cfg)
    dm.setup()
    model = assemble.module(cfg, dm)
    model.load_state_dict(torch.load(tmp.parent / "checkpoints" / run.info.run_id / "last.ckpt", weights_only=True)["state_dict"])
    loader = DataLoader(SplitDataset(dm.splits.train, dm.side), batch_size=64, collate_fn=_batch)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(model, dataloaders=loader, verbose=False)
    return metrics["val_err1"]


def test_the_run_measures_its_clean_training_error(store, tmp_path):
    # augmentation and dropout on: the logged training error is not the clean one
    proc = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1", "data.augment=paper", "model.dropout=0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(store)
    logged = run.data.metrics[tracking.CLEAN_TRAIN_ERR]
    (tmp_path / "x").mkdir()
    assert logged == pytest.approx(_validate_on_train(store, run, tmp_path / "x"), abs=1e-6)
    assert logged != pytest.approx(run.data.metrics["train_err1"], abs=1e-3)


def _old_run(store: str, source, tmp_path: Path) -> str:
    """A run as the suite made them before runs measured themselves: params, metrics
    but not train_clean_err1, config and checkpoint artifacts."""
    c = client(store)
    run_id = c.create_run(source.info.experiment_id, run_name="old").info.run_id
    for k, v in source.data.params.items():
        c.log_param(run_id, k, v)
    c.log_metric(run_id, "val_err1", source.data.metrics["val_err1"])
    folder = tmp_path / "old"
    folder.mkdir()
    c.download_artifacts(source.info.run_id, "config.yaml", str(folder))
    c.download_artifacts(source.info.run_id, "checkpoints", str(folder))
    c.log_artifact(run_id, str(folder / "config.yaml"))
    c.log_artifact(run_id, str(folder / "checkpoints" / "last.ckpt"), "checkpoints")
    c.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.mark.slow
def test_backfill_measures_old_runs_as_the_run_would(store, tmp_path):
    proc = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = only_run(store)
    old = _old_run(store, source, tmp_path)
    c = client(store)
    done = backfill([c.get_run(old)], say=lambda line: None)
    assert done[old][tracking.CLEAN_TRAIN_ERR] == pytest.approx(source.data.metrics[tracking.CLEAN_TRAIN_ERR], abs=1e-6)
    assert c.get_run(old).data.metrics[tracking.CLEAN_TRAIN_ERR] == done[old][tracking.CLEAN_TRAIN_ERR]
    assert backfill([c.get_run(old)]) == {}  # measured once: a second pass leaves it


@pytest.mark.slow
def test_backfill_says_when_a_run_has_no_weights(store, tmp_path):
    proc = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = only_run(store)
    old = _old_run(store, source, tmp_path)
    shutil.rmtree(Path(urlparse(client(store).get_run(old).info.artifact_uri).path) / "checkpoints")
    messages = []
    assert backfill([client(store).get_run(old)], say=messages.append) == {}
    assert len(messages) == 1 and "no checkpoint" in messages[0] and old in messages[0]


@pytest.mark.slow
def test_precise_bn_recomputes_the_statistics_of_the_training_images(store, tmp_path):
    # momentum 1e-6: the run ends with BatchNorm's initial statistics (mean 0, variance 1), the stalest possible
    proc = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1", "model.norm=batchnorm", "model.bn_momentum=1e-6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(store)
    c = client(store)
    dm, module = _restore(Path(c.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))), tmp_path / "checkpoints" / run.info.run_id / "last.ckpt")
    first_bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.allclose(first_bn.running_mean, torch.zeros_like(first_bn.running_mean), atol=1e-4)
    # what enters the first BatchNorm does not depend on any BatchNorm statistics: collect it over every training image
    seen = []
    hook = first_bn.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    module.eval()
    with torch.no_grad():
        for images, _ in dm.clean_train_loader(10_000, batch_size=1000):
            module(module.prepare(images, training=False))
    hook.remove()
    x = torch.cat(seen).transpose(0, 1).flatten(1)  # channels x (images * pixels)
    recompute_bn(dm, module)  # 256 images: one batch, so the average over batches is over all of them
    assert torch.allclose(first_bn.running_mean, x.mean(1), rtol=1e-4, atol=1e-5)
    assert torch.allclose(first_bn.running_var, x.var(1), rtol=1e-3, atol=1e-5)

    done = backfill([c.get_run(run.info.run_id)], say=lambda line: None, precise_bn=True)[run.info.run_id]
    logged = c.get_run(run.info.run_id).data.metrics
    assert logged[tracking.PRECISE_BN_VAL_ERR] == done[tracking.PRECISE_BN_VAL_ERR]
    assert logged[tracking.PRECISE_BN_TRAIN_ERR] == done[tracking.PRECISE_BN_TRAIN_ERR]


@pytest.mark.slow
def test_precise_bn_leaves_a_network_without_batchnorm_as_the_run_measured_it(store):
    proc = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=1", "model.norm=lrn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(store)
    done = backfill([run], say=lambda line: None, precise_bn=True)[run.info.run_id]
    assert done[tracking.PRECISE_BN_VAL_ERR] == pytest.approx(run.data.metrics["val_err1"], abs=1e-6)
    assert done[tracking.PRECISE_BN_TRAIN_ERR] == pytest.approx(run.data.metrics[tracking.CLEAN_TRAIN_ERR], abs=1e-6)
