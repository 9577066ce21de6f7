"""Typed, strict configuration machinery.

A section of the configuration is a dataclass owned by the layer that uses it
(`lightning_modules.networks.ModelConfig`, `data.registry.DataConfig`, ...); the
application composes them (`ablations.train.config.Config`). This module knows no
field: it builds a dataclass tree from nested mappings, checks every value
against its annotation, and lets each section check its own values
(`validate()`), so a typo or a bad value stops the program before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from core.errors import ConfigError


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"norm": "lrn"}} -> {"model.norm": "lrn"}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


NEUTRAL = "neutral"  # field metadata: the value that reproduces what the code did before the key existed


def neutral_values(cls: type, prefix: str = "") -> dict[str, Any]:
    """Each key's neutral value, dotted: the field's `metadata["neutral"]` where it has one
    (a key whose default has changed keeps its old default there), else its default.
    A run's identity leaves out every key at its neutral value, so adding a key with a
    neutral default leaves every finished run's identity as it was."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(neutral_values(tp, f"{prefix}{f.name}."))
        elif NEUTRAL in f.metadata:
            out[prefix + f.name] = f.metadata[NEUTRAL]
        elif f.default is not dataclasses.MISSING:
            out[prefix + f.name] = f.default
        else:
            raise TypeError(f"config field {prefix}{f.name} needs a default or a neutral value")
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


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks `value` against the annotation `tp`; returns it, maybe widened (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(key, value, option)
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
    elif origin in (dict, list):  # dict[str, Any], list[int]: the container's type
        if isinstance(value, origin):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"'{key}' = {value!r} is invalid: expected {describe(tp)}")


def build(cls: type, tree: dict[str, Any], prefix: str = "") -> Any:
    """The dataclass `cls` from a nested mapping: unknown keys, wrong types and
    (through each section's `validate()`) bad values raise ConfigError."""
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
            kwargs[name] = build(tp, value, key + ".")
        else:
            kwargs[name] = coerce(key, value, tp)
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"'{key}' = {value!r} is invalid: expected {expected}")


def require_choice(key: str, value: Any, choices: Collection[str]) -> None:
    if value not in choices:
        raise ConfigError(f"'{key}' = {value!r} is invalid: expected one of {', '.join(map(repr, choices))}")


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


def as_overrides(flat: dict[str, Any]) -> list[str]:
    """The inverse of parse_overrides: {"optim.lr": 0.01} -> ["optim.lr=0.01"]."""
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in flat.items()]


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, read safely (no tags that run code)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data
