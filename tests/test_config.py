"""Typed, strict configuration: every layer validated, bad input exits 2 before any run."""

from __future__ import annotations

import pytest

from ablations.train.config import Config, load_config, profiles
from core.config import parse_overrides
from core.errors import ConfigError
from core.paths import ROOT
from tests.helpers import run_cli


def test_base_is_the_paper():
    cfg = load_config()
    m, o = cfg.model, cfg.optim
    assert (m.arch, m.activation, m.norm, m.pool, m.dropout, m.groups, m.init) == ("alexnet", "relu", "lrn", "overlapping", 0.5, 2, "paper")
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.lr_factor, o.max_lr_drops) == ("sgd", 0.01, 0.9, 5e-4, 0.1, 3)
    assert cfg.data.batch_size == 128 and cfg.data.augment == "paper" and cfg.trainer.max_epochs == 90


@pytest.mark.parametrize("profile", profiles())
def test_profiles_load(profile):
    assert isinstance(load_config(profile=profile), Config)


RECIPES = {"tutorial"}  # a profile that is a whole recipe, said so in its file and the README


def test_profiles_change_scale_not_toggles():
    """A profile may pick the network and data scale, never an ablation toggle, unless it is a recipe."""
    toggles = {"model.activation", "model.norm", "model.pool", "model.dropout", "model.groups", "data.augment", "optim.name"}
    from core.config import flatten, read_yaml

    for profile in profiles():
        keys = set(flatten(read_yaml(ROOT / "configs" / "profiles" / f"{profile}.yaml")))
        assert not keys & toggles or profile in RECIPES, f"profile {profile} sets {keys & toggles}"
    assert "recipe" in (ROOT / "configs" / "profiles" / "tutorial.yaml").read_text().splitlines()[0]


def test_overrides_are_typed():
    cfg = load_config(["model.dropout=0", "model.groups=1", "data.name=shapes", "model.num_classes=null", "optim.lr=1e-3"])
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)
    assert cfg.model.groups == 1 and cfg.model.num_classes is None and cfg.optim.lr == 1e-3


@pytest.mark.parametrize(
    "override, names",
    [
        ("model.activaton=tanh", ["model.activaton"]),
        ("model.activation=sigmoid", ["model.activation", "sigmoid", "relu", "tanh"]),
        ("model.norm=layernorm", ["model.norm", "lrn", "batchnorm", "none"]),
        ("model.pool=avg", ["model.pool", "overlapping", "non_overlapping"]),
        ("model.groups=3", ["model.groups", "3"]),
        ("model.dropout=1.5", ["model.dropout", "1.5"]),
        ("model.dropout=high", ["model.dropout", "high"]),
        ("trainer.max_epochs=2.5", ["trainer.max_epochs"]),
        ("data.name=imagenet21k", ["data.name", "shapes", "cifar10"]),
        ("data.augment=heavy", ["data.augment", "paper", "extended"]),
        ("optim.name=lbfgs", ["optim.name", "sgd", "adam"]),
        ("model=relu", ["model"]),
        ("nonsense", ["key=value"]),
    ],
)
def test_bad_values_name_the_key_and_the_choices(override, names):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    for name in names:
        assert name in str(err.value)


def test_batch_must_divide_across_devices():
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config(["data.batch_size=63", "trainer.devices=2"])


def test_unknown_profile():
    with pytest.raises(ConfigError, match="smoke"):
        load_config(profile="quick")


def test_hash_is_stable_and_sensitive():
    a, b = load_config(), load_config()
    assert a.hash() == b.hash()
    assert load_config(["seed=1"]).hash() != a.hash()
    assert load_config(["model.activation=tanh"]).hash() != a.hash()
    # where and how fast a run goes does not change what it is
    assert load_config(["trainer.devices=2", "trainer.threads=1", "data.num_workers=4"]).hash() == a.hash()
    # where a named dataset is kept does not either; an image folder's root is the dataset
    assert load_config(["data.name=cifar10", "data.root=/a"]).hash() == load_config(["data.name=cifar10", "data.root=/b"]).hash()
    folder = load_config(["data.name=imagefolder", "data.root=/data/a"])
    assert folder.hash() != load_config(["data.name=imagefolder", "data.root=/data/b"]).hash()
    assert folder.hash() == load_config(["data.name=imagefolder", "data.root=/data/x/../a"]).hash()  # the same folder


def test_parse_overrides_keeps_strings():
    assert parse_overrides(["data.root=/tmp/x y", "model.init=default"]) == {"data.root": "/tmp/x y", "model.init": "default"}


def test_cli_typo_exits_2_and_names_the_key(store, tmp_path):
    """`make train ARGS="model.activaton=tanh"`: exit 2, the key named, nothing in MLflow."""
    result = run_cli("ablations.train", "model.activaton=tanh")
    assert result.returncode == 2
    assert "model.activaton" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()
