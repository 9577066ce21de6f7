"""Typed, strict configuration.

A run is described by one `Config`: the paper's baseline (`configs/base.yaml`),
then a profile (scale only), then the ablation variant, then command-line
overrides, each a dotted `key=value`. Every layer is checked against the
dataclasses below, so a typo or a bad value stops the program before anything
is trained or written to MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"


class ConfigError(ValueError):
    """A configuration problem the user can fix; the CLIs exit with code 2."""


@dataclass
class ModelConfig:
    arch: Literal["alexnet", "cifar"] = "alexnet"
    num_classes: Optional[int] = None  # None: follow the dataset
    activation: str = "relu"  # a key of lightning_modules.layers.ACTIVATIONS
    norm: str = "lrn"  # a key of lightning_modules.layers.NORMS
    pool: str = "overlapping"  # a key of lightning_modules.layers.POOLS
    dropout: float = 0.5
    groups: Literal[1, 2] = 2
    init: Literal["paper", "default"] = "paper"
    sync_batchnorm: bool = True  # BatchNorm -> SyncBatchNorm under DDP


@dataclass
class DataConfig:
    name: str = "shapes"  # a key of data.registry.DATASETS
    root: str = "datasets"  # where downloads and image folders live
    image_size: Optional[int] = None  # None: the architecture's input size
    augment: str = "paper"  # a key of data.augment.TRAIN_AUGMENTS
    ten_crop: bool = False  # the paper's 10-crop averaging at evaluation
    batch_size: int = 128  # the global batch, split across devices
    num_workers: int = 0
    train_size: Optional[int] = None  # None: the whole training split
    val_size: Optional[int] = None
    download: bool = True
    bad_files: Literal["error", "skip"] = "error"
    seed: int = 0  # seeds dataset generation (shapes) and subsets, not training


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_factor: float = 0.1  # the paper divides the learning rate by 10 ...
    lr_patience: int = 2  # ... when the validation error stops improving ...
    max_lr_drops: int = 3  # ... three times


@dataclass
class TrainerConfig:
    max_epochs: int = 90
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    channels_last: bool = False
    limit_train_batches: Optional[int] = None  # None: every batch
    limit_val_batches: Optional[int] = None
    log_every_n_steps: int = 50
    threads: Optional[int] = None  # CPU threads for this run; None: torch's default
    deterministic: bool = False


# Keys that change where and how fast a run goes, not what it computes.
EXECUTION_KEYS = frozenset(
    {"trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.threads", "trainer.log_every_n_steps", "data.num_workers", "data.root", "data.download"}
)


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every key, dotted: what MLflow records as params."""
        return flatten(self.to_dict())

    def hash(self) -> str:
        """Identifies what is trained: equal hashes, the same experiment. Keys that
        only say where and how fast it runs (devices, threads, workers, logging)
        are left out, so a run on 1 or 8 devices counts as the same."""
        blob = json.dumps({k: v for k, v in self.flat().items() if k not in EXECUTION_KEYS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"'{dotted}': '{part}' is a value, not a section")
        node[leaf] = value
    return tree


# ---------------------------------------------------------------- validation


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks `value` against the annotation `tp`; returns it, maybe widened."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                pass
    elif origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"'{key}' = {value!r} is invalid: expected {_describe(tp)}")


def _build(cls: type, tree: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(tree) - set(names))
    if unknown:
        valid = ", ".join(f"{prefix}{n}" for n in names)
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'. Valid keys here: {valid}")
    kwargs = {}
    for name in names:
        if name not in tree:
            continue
        tp, value, key = hints[name], tree[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"'{key}' is a section; set its keys, e.g. {key}.<key>=<value>")
            kwargs[name] = _build(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(key, value, tp)
    return cls(**kwargs)


def _check_registries(cfg: Config) -> None:
    # Imported here: the registries pull in torch, which config users may not need.
    from data.augment import TRAIN_AUGMENTS
    from data.registry import DATASETS
    from lightning_modules.layers import ACTIVATIONS, NORMS, POOLS

    for key, value, registry in [
        ("model.activation", cfg.model.activation, ACTIVATIONS),
        ("model.norm", cfg.model.norm, NORMS),
        ("model.pool", cfg.model.pool, POOLS),
        ("data.name", cfg.data.name, DATASETS),
        ("data.augment", cfg.data.augment, TRAIN_AUGMENTS),
    ]:
        if value not in registry:
            raise ConfigError(f"'{key}' = {value!r} is invalid: expected one of {', '.join(map(repr, registry))}")
    checks = [
        (0.0 <= cfg.model.dropout < 1.0, "model.dropout", cfg.model.dropout, "a probability in [0, 1)"),
        (cfg.model.num_classes is None or cfg.model.num_classes >= 2, "model.num_classes", cfg.model.num_classes, "null or >= 2"),
        (cfg.data.image_size is None or cfg.data.image_size >= 8, "data.image_size", cfg.data.image_size, "null or >= 8"),
        (cfg.data.batch_size >= 1, "data.batch_size", cfg.data.batch_size, ">= 1"),
        (cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers, ">= 0"),
        (cfg.data.train_size is None or cfg.data.train_size >= 1, "data.train_size", cfg.data.train_size, "null or >= 1"),
        (cfg.data.val_size is None or cfg.data.val_size >= 1, "data.val_size", cfg.data.val_size, "null or >= 1"),
        (cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "> 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay", cfg.optim.weight_decay, ">= 0"),
        (0 < cfg.optim.lr_factor < 1, "optim.lr_factor", cfg.optim.lr_factor, "in (0, 1)"),
        (cfg.trainer.max_epochs >= 1, "trainer.max_epochs", cfg.trainer.max_epochs, ">= 1"),
        (cfg.trainer.devices >= 1, "trainer.devices", cfg.trainer.devices, ">= 1"),
        (cfg.trainer.num_nodes >= 1, "trainer.num_nodes", cfg.trainer.num_nodes, ">= 1"),
        (cfg.trainer.threads is None or cfg.trainer.threads >= 1, "trainer.threads", cfg.trainer.threads, "null or >= 1"),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise ConfigError(f"'{key}' = {value!r} is invalid: expected {expected}")
    world = cfg.trainer.devices * cfg.trainer.num_nodes
    if cfg.data.batch_size % world:
        raise ConfigError(
            f"'data.batch_size' = {cfg.data.batch_size} does not divide across {world} devices: "
            f"data.batch_size is the global batch; pick a multiple of {world}"
        )


# ------------------------------------------------------------------- loading


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["model.dropout=0", "data.name=shapes"]` -> a flat dict of typed values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value (e.g. model.activation=tanh)")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data


def profiles(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / "profiles").glob("*.yaml"))


def profile_overrides(name: Optional[str], config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    if not name:
        return {}
    path = config_dir / "profiles" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}: expected one of {', '.join(profiles(config_dir))}")
    return flatten(read_yaml(path))


def build_config(*layers: dict[str, Any], config_dir: Path = CONFIG_DIR) -> Config:
    """Merges the baseline with flat override layers (later wins) and validates."""
    merged = flatten(read_yaml(config_dir / "base.yaml"))
    for layer in layers:
        merged.update(flatten(layer))
    cfg = _build(Config, unflatten(merged), "")
    _check_registries(cfg)
    return cfg


def load_config(
    overrides: list[str] | None = None, profile: Optional[str] = None, config_dir: Path = CONFIG_DIR
) -> Config:
    return build_config(profile_overrides(profile, config_dir), parse_overrides(overrides or []), config_dir=config_dir)
