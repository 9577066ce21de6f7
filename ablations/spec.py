"""Ablation files (configs/ablations/<name>.yaml): what a study compares.

    description: ReLU vs tanh (Figure 1)
    baseline: relu            # the variant the others are compared with
    seeds: 3                  # default number of seeds (SEEDS=... overrides)
    overrides: {}             # optional: applied to every variant
    variants:
      relu: {model.activation: relu}
      tanh: {model.activation: tanh}

Reading a file needs neither torch nor MLflow (reports read it too); turning it
into runs is `ablations.plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import paths
from core.config import flatten, read_yaml
from core.errors import ConfigError

KEYS = {"description", "baseline", "seeds", "overrides", "variants"}


@dataclass
class Ablation:
    name: str
    description: str
    baseline: str
    seeds: list[int]
    overrides: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    path: Path | None = None


def ablation_dir(config_dir: Path | None = None) -> Path:
    return (config_dir or paths.config_dir()) / "ablations"


def available(config_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ablation_dir(config_dir).glob("*.yaml"))


def parse_seeds(value: Any, where: str) -> list[int]:
    """`3` -> [0, 1, 2]; `[0, 4]` or "0,4" -> [0, 4]."""
    if isinstance(value, str):
        value = [int(s) for s in value.replace(",", " ").split()] if " " in value.strip() or "," in value else int(value)
    if isinstance(value, bool):
        raise ConfigError(f"{where}: seeds must be a count or a list of integers, not {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{where}: the number of seeds must be >= 1, not {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        return list(dict.fromkeys(value))
    raise ConfigError(f"{where}: seeds must be a count (e.g. 3) or a list of integers (e.g. 0,1,2), not {value!r}")


def load_ablation(name: str, config_dir: Path | None = None) -> Ablation:
    path = ablation_dir(config_dir) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown ablation {name!r}: expected one of {', '.join(available(config_dir))} (files in {ablation_dir(config_dir)})")
    raw = read_yaml(path)
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}'; an ablation file has {', '.join(sorted(KEYS))}")
    variants = raw.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{path}: 'variants' must map each variant name to its overrides, e.g. variants: {{relu: {{model.activation: relu}}}}")
    baseline = raw.get("baseline")
    if baseline not in variants:
        raise ConfigError(f"{path}: 'baseline' must name one of the variants ({', '.join(map(str, variants))}), not {baseline!r}")
    for vname, ov in variants.items():
        if ov is not None and not isinstance(ov, dict):
            raise ConfigError(f"{path}: variant '{vname}' must be a mapping of config keys (or empty for the baseline as is)")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: 'overrides' must be a mapping of config keys")
    return Ablation(
        name=name,
        description=str(raw.get("description", "")).strip(),
        baseline=str(baseline),
        seeds=parse_seeds(raw.get("seeds", 3), str(path)),
        overrides=flatten(overrides),
        variants={str(k): flatten(v or {}) for k, v in variants.items()},
        path=path,
    )
