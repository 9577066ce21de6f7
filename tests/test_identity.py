"""A run's identity survives extension: a key at its neutral value is not part of it, so a
new toggle with a neutral default retrains nothing; stores from before are migrated."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from ablations import tracking
from ablations.study import runner as study_module
from ablations.study.migrate import migrate
from ablations.train import config as config_module
from ablations.train.config import Config, load_config
from core.config import NEUTRAL, neutral_values
from core.keys import EXECUTION_KEYS
from lightning_modules.networks import ModelConfig
from tests.helpers import client, study

# Every key's neutral value as of this test's writing: the value that reproduces what the
# code did before the key existed. Changing one would give finished runs the identity of
# runs at another value. A key whose default changes keeps its old default here through
# field(metadata={"neutral": old}). New keys need no entry.
FROZEN = {
    "seed": 0, "model.arch": "alexnet", "model.num_classes": None, "model.activation": "relu", "model.norm": "lrn",
    "model.pool": "overlapping", "model.dropout": 0.5, "model.groups": 2, "model.init": "paper", "model.bn_momentum": 0.1,
    "model.bn_eps": 1e-5, "model.sync_batchnorm": True, "data.name": "shapes", "data.image_size": None, "data.augment": "paper",
    "data.normalize": "standard", "data.ten_crop": False, "data.batch_size": 128, "data.train_size": None, "data.val_size": None,
    "data.bad_files": "error", "data.seed": 0, "data.splits": "train_val", "data.test_size": None, "optim.name": "sgd", "optim.lr": 0.01, "optim.momentum": 0.9,
    "optim.weight_decay": 5e-4, "optim.eps": 1e-8, "optim.lr_factor": 0.1, "optim.lr_patience": 2, "optim.max_lr_drops": 3,
    "trainer.max_epochs": 90, "trainer.precision": "32-true", "trainer.limit_train_batches": None,
    "trainer.limit_val_batches": None, "trainer.stop_at_train_err": None, "trainer.deterministic": False,
}  # fmt: skip


def test_neutral_values_never_change():
    neutral = neutral_values(Config)
    changed = {k: (v, neutral.get(k, "removed")) for k, v in FROZEN.items() if str(neutral.get(k, "removed")) != str(v)}
    assert not changed, f"neutral values changed (frozen, now): {changed}; give the field metadata neutral=<the frozen value>"


def test_identity_leaves_out_neutral_and_execution_keys():
    # three splits (the default since data.splits) changed what every run means: not neutral
    assert load_config().identity() == {"data.splits": "train_val_test"}
    assert load_config(["data.splits=train_val"]).identity() == {}
    over = ["model.activation=tanh", "trainer.threads=1", "data.num_workers=2", "data.splits=train_val"]
    assert load_config(over).identity() == {"model.activation": "tanh"}
    assert load_config(["seed=3", "data.splits=train_val"]).identity() == {"seed": "3"}
    # set explicitly to its neutral value: the same run as leaving it unset
    assert load_config(["model.norm=lrn"]).hash() == load_config().hash()
    # where a named dataset lives is not the dataset; an image folder's root is
    assert load_config(["data.name=cifar10", "data.root=/a"]).hash() == load_config(["data.name=cifar10", "data.root=/b"]).hash()
    folder = load_config(["data.name=imagefolder", "data.root=/data/a"])
    assert folder.hash() != load_config(["data.name=imagefolder", "data.root=/data/b"]).hash()
    assert folder.hash() == load_config(["data.name=imagefolder", "data.root=/data/x/../a"]).hash()


def test_the_hash_is_of_the_identity_written_out():
    cfg = load_config(["model.activation=tanh", "optim.lr=0.02", "data.splits=train_val"])
    blob = json.dumps({"model.activation": "tanh", "optim.lr": "0.02"}, sort_keys=True)
    assert cfg.hash() == hashlib.sha256(blob.encode()).hexdigest()[:12]


def _extended(new_default, neutral=None):
    """Config with a new model toggle (as a developer adds one), default `new_default`."""
    meta = {} if neutral is None else {NEUTRAL: neutral}
    model = dataclasses.make_dataclass("ModelConfig", [("new_toggle", str, dataclasses.field(default=new_default, metadata=meta))], bases=(ModelConfig,))
    return dataclasses.make_dataclass("Config", [("model", model, dataclasses.field(default_factory=model))], bases=(Config,))


def test_a_changed_default_counts_only_for_runs_at_the_new_value(monkeypatch):
    before = load_config().hash()
    monkeypatch.setattr(config_module, "Config", _extended("new", neutral="old"))  # the default was "old" until now
    assert load_config().hash() != before  # runs at the new default are new runs
    assert load_config(["model.new_toggle=old"]).hash() == before  # runs at the old one are the old runs


@pytest.mark.slow
def test_a_new_toggle_retrains_nothing(store, configs, one_run, monkeypatch, capsys):
    """A finished study, then a new key with a neutral default: the rerun skips every run."""
    assert study_module.main([one_run, "--profile", "smoke", "--seeds", "2", "trainer.max_epochs=1"]) == 0
    monkeypatch.setattr(config_module, "Config", _extended("old"))
    capsys.readouterr()
    assert study_module.main([one_run, "--profile", "smoke", "--seeds", "2", "trainer.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert out.count("skip ") == 2 and "start " not in out, out


def _old_hash(params: dict[str, str]) -> str:
    """The identity of stores written before neutral values: every key but the execution keys."""
    cfg = load_config([f"{k}={v}" for k, v in params.items() if k in neutral_values(Config) and v != "None"])
    counted = {k: v for k, v in cfg.flat().items() if k not in EXECUTION_KEYS}
    return hashlib.sha256(json.dumps(counted, sort_keys=True).encode()).hexdigest()[:12]


def test_migrate_gives_old_stores_todays_identity(store, configs, one_run, capsys):
    assert study_module.main([one_run, "--profile", "smoke", "--seeds", "1", "trainer.max_epochs=1"]) == 0
    _, children = study(store, one_run)
    (run,) = children
    new = run.data.tags[tracking.CONFIG_HASH]
    old = _old_hash(run.data.params)
    assert old != new
    client(store).set_tag(run.info.run_id, tracking.CONFIG_HASH, old)  # as a store from before would have it
    assert migrate() == (1, 1)
    tags = client(store).get_run(run.info.run_id).data.tags
    assert tags[tracking.CONFIG_HASH] == new and tags["config_hash_v1"] == old
    assert migrate() == (0, 1)
