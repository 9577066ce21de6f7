"""The whole configuration of one run, composed from the sections the layers own.

A run is described by one `Config`: the paper's baseline (the dataclasses' defaults,
here and in the sections the layers own: `python -m ablations.train.config` prints them),
the chosen architecture's own choices (`configs/archs/<arch>.yaml`, if any), then
a profile, then (in a study) the ablation file's overrides, the command line's and
last the variant's own keys, so that a variant is always what it says; each a dotted
`key=value`. Every layer is checked (`core.config.build`), so a typo or
a bad value stops the program before anything is trained or written to MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from core import paths
from core.config import build, flatten, neutral_values, parse_overrides, read_yaml, require, unflatten
from core.errors import ConfigError
from core.keys import EXECUTION_KEYS
from data.registry import DataConfig
from lightning_modules.networks import ModelConfig
from lightning_modules.optim import OptimConfig


@dataclass
class TrainerConfig:
    max_epochs: int = 90
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    channels_last: Literal["auto"] | bool = "auto"  # auto: the faster memory format for the device
    limit_train_batches: int | None = None  # None: every batch
    limit_val_batches: int | None = None
    log_every_n_steps: int = 50  # also the window of the running training error (train_err1_step)
    threads: int | None = None  # CPU threads for this run; None: torch's default
    stop_at_train_err: float | None = None  # end training once the running training error reaches this
    system_metrics_s: float | None = 10.0  # MLflow's system metrics (CPU, memory, GPU) every so many seconds; null: none
    deterministic: bool = False

    def validate(self) -> None:
        require(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs, ">= 1")
        require(self.devices >= 1, "trainer.devices", self.devices, ">= 1")
        require(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, ">= 1")
        require(self.log_every_n_steps >= 1, "trainer.log_every_n_steps", self.log_every_n_steps, ">= 1")
        require(self.threads is None or self.threads >= 1, "trainer.threads", self.threads, "null or >= 1")
        require(self.system_metrics_s is None or self.system_metrics_s > 0, "trainer.system_metrics_s", self.system_metrics_s, "null or > 0")
        stop = self.stop_at_train_err
        require(stop is None or 0 < stop < 1, "trainer.stop_at_train_err", stop, "null or an error rate in (0, 1)")


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def validate(self) -> None:
        world = self.trainer.devices * self.trainer.num_nodes
        if self.data.batch_size % world:
            raise ConfigError(
                f"'data.batch_size' = {self.data.batch_size} does not divide across {world} devices: "
                f"data.batch_size is the global batch; pick a multiple of {world}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every key, dotted: what MLflow records as params."""
        return flatten(self.to_dict())

    def identity(self) -> dict[str, str]:
        """What is trained, as the keys that make it differ from the neutral run (`identity`)."""
        return identity({k: str(v) for k, v in self.flat().items()})

    def hash(self) -> str:
        """Identifies what is trained: equal hashes, the same experiment (`identity`)."""
        return identity_hash(self.identity())

    def variant_hash(self) -> str:
        """The identity without the seed: equal for every seed of one configuration, so two
        studies that compare the same two configurations are known to make one comparison."""
        return identity_hash({k: v for k, v in self.identity().items() if k != "seed"})

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def identity(params: dict[str, str]) -> dict[str, str]:
    """A run's identity from its flat keys as MLflow records them (strings): every key of
    the current Config that is not at its neutral value (`core.config.neutral_values`),
    so a key added later with a neutral default changes no finished run's identity, and
    a run at a changed default differs from the runs before the change. Keys that only
    say where and how fast it runs (devices, threads, workers, logging, memory format)
    are left out, so a run on 1 or 8 devices is the same; so is where a named dataset
    is kept, but an image folder's root is its dataset itself. Keys the current Config
    no longer has are ignored; keys a run predates count as neutral."""
    neutral = neutral_values(Config)
    counted = {k: v for k, v in params.items() if k in neutral and k not in EXECUTION_KEYS and v != str(neutral[k])}
    if params.get("data.name") == "imagefolder":
        counted["data.root"] = str(Path(params.get("data.root", "")).expanduser().resolve())
    return counted


def identity_hash(counted: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(counted, sort_keys=True).encode()).hexdigest()[:12]


def profiles(config_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ((config_dir or paths.config_dir()) / "profiles").glob("*.yaml"))


def profile_overrides(name: str | None, config_dir: Path | None = None) -> dict[str, Any]:
    if not name:
        return {}
    config_dir = config_dir or paths.config_dir()
    path = config_dir / "profiles" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}: expected one of {', '.join(profiles(config_dir))}")
    return flatten(read_yaml(path))


def build_config(*layers: dict[str, Any], config_dir: Path | None = None) -> Config:
    """Merges the baseline (the defaults) with flat override layers (later wins) and validates.
    The chosen architecture's own choices (configs/archs/<arch>.yaml, if there is
    one) come right above the baseline: under every layer given here."""
    config_dir = config_dir or paths.config_dir()
    base = Config().flat()
    given: dict[str, Any] = {}
    for layer in layers:
        given.update(flatten(layer))
    arch_file = config_dir / "archs" / f"{given.get('model.arch', base.get('model.arch'))}.yaml"
    arch = flatten(read_yaml(arch_file)) if arch_file.is_file() else {}
    return build(Config, unflatten(base | arch | given))


def saved_config(saved: dict[str, Any], config_dir: Path | None = None) -> Config:
    """The Config a finished run was trained with, from its saved config.yaml: a key the
    run predates takes its neutral value (what the code did before the key existed), not
    today's default; so a run made before data.splits existed is rebuilt with
    data.splits=train_val, the splits it was trained and validated on."""
    given = flatten(saved)
    predates = {k: v for k, v in neutral_values(Config).items() if k not in given}
    return build_config(predates, given, config_dir=config_dir)


def load_config(overrides: list[str] | None = None, profile: str | None = None, config_dir: Path | None = None) -> Config:
    return build_config(profile_overrides(profile, config_dir), parse_overrides(overrides or []), config_dir=config_dir)


if __name__ == "__main__":  # python -m ablations.train.config: the baseline, every key at its default
    print(Config().dump(), end="")
