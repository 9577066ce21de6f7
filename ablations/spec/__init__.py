"""Ablation files (configs/ablations/<name>.yaml): what a study compares.

    description: ReLU vs tanh (Figure 1)
    profile: cifar            # optional: the profile it is meant for (PROFILE=... overrides)
    baseline: relu            # the variant the others are compared with
    seeds: 3                  # default number of seeds (SEEDS=... overrides); or adaptive seeds,
                              # {min: 3, max: 10}: seeds added only where the verdict is still open
                              # (ablations.study.adaptive; SEEDS=auto asks for it with these bounds)
    overrides: {}             # optional: applied to every variant
    compare: {}               # optional: variant -> the variant it is measured against (default: baseline)
    demo: false               # optional: true puts it in `make demo` (first_look.yaml is)
    metric: test_err1         # optional: the primary metric the verdicts use (the test error by
                              # default; val_err1; epochs_to_train_err for Figure 1 studies)
    claims: []                # optional: the paper's claims it tests (ablations.spec.claims)
    smallest_effect: 0.01     # optional: δ, the smallest difference that matters (an error of 0.01 is
                              # 1 point; for epochs_to_train_err a ratio, e.g. 1.1); "equivalent"
                              # means no difference beyond ±δ
    variants:
      relu: {model.activation: relu}
      tanh: {model.activation: tanh}
    tune:                     # optional: tune a nuisance setting per variant first (TUNE=1)
      space: {optim.lr: {min: 0.001, max: 0.3, points: 6}}   # or a list of values
      budget: {trainer.max_epochs: 4}   # overrides for the tuning runs only
      seeds: 1                # tuning seeds, apart from the study's: 1 means seed 1000
      objective: val_err1     # final validation error, or epochs_to_train_err (to `target`)
      target: 0.25
      per_variant: true       # false: every variant trains at the one best value
      search: grid            # or optuna (its TPE sampler, `trials` per variant, over min..max)
      trials: 8

A factorial study declares `factors:` (and `design:`) instead of `variants:`; its
variants are the design's cells (ablations.spec.design).

Reading a file needs neither torch nor MLflow (reports read it too); turning it
into runs is `ablations.study.plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.spec.claims import Claim, parse_claims
from ablations.spec.design import Design, parse_design
from core import paths
from core.config import flatten, read_yaml
from core.errors import ConfigError

KEYS = {
    "description",
    "profile",
    "baseline",
    "seeds",
    "overrides",
    "compare",
    "variants",
    "tune",
    "factors",
    "design",
    "demo",
    "metric",
    "smallest_effect",
    "claims",
}
METRICS = ("val_err1", "test_err1", "epochs_to_train_err")  # the primary metric a study's verdicts use
DEFAULT_METRIC = "test_err1"  # the test split, evaluated once at the end of each run (data.splits=train_val_test)
DEFAULT_DELTA = {"val_err1": 0.01, "test_err1": 0.01, "epochs_to_train_err": 1.1}  # 1 point of error; a ratio of 1.1
TUNE_KEYS = {"space", "budget", "seeds", "objective", "target", "per_variant", "search", "trials"}
OBJECTIVES = ("val_err1", "epochs_to_train_err")
TUNING_SEED_OFFSET = 1000  # tuning seed k is seed 1000 + k


@dataclass
class Tune:
    """How to tune: candidate values per key, the tuning runs' budget and seeds, and what to minimise."""

    space: dict[str, list]  # key -> the grid's values; with search=optuna, [min, max], searched on a log scale
    budget: dict[str, Any]
    seeds: list[int]
    objective: str = "val_err1"
    target: float = 0.25  # for epochs_to_train_err
    per_variant: bool = True
    search: str = "grid"
    trials: int = 8  # with search=optuna, per variant (or in all, with per_variant: false)


def _grid(key: str, spec: Any, where: str, search: str) -> list:
    """A tune.space entry: a list of values, or {min, max, points}: `points` values evenly
    spaced on a log scale (3 significant digits). With search=optuna: [min, max]."""

    if isinstance(spec, list) and spec and search == "grid":
        return list(spec)
    if isinstance(spec, dict) and set(spec) <= {"min", "max", "points"} and {"min", "max"} <= set(spec):
        lo, hi = float(spec["min"]), float(spec["max"])
        if not 0 < lo < hi:
            raise ConfigError(f"{where}: tune.space.{key} needs 0 < min < max, not {lo}, {hi}")
        if search == "optuna":
            return [lo, hi]
        n = int(spec.get("points", 5))
        if n < 2:
            raise ConfigError(f"{where}: tune.space.{key}.points must be >= 2")
        return [float(f"{lo * (hi / lo) ** (i / (n - 1)):.3g}") for i in range(n)]
    want = "{min, max}" if search == "optuna" else "a list of values or {min, max, points}"
    raise ConfigError(f"{where}: tune.space.{key} must be {want}, not {spec!r}")


def parse_tune(raw: Any, where: str) -> Tune | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'tune' must be a mapping with {', '.join(sorted(TUNE_KEYS))}")
    unknown = sorted(set(raw) - TUNE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key 'tune.{unknown[0]}'; a tune block has {', '.join(sorted(TUNE_KEYS))}")
    search = raw.get("search", "grid")
    if search not in ("grid", "optuna"):
        raise ConfigError(f"{where}: tune.search must be grid or optuna, not {search!r}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: tune.space must map config keys to candidates, e.g. space: {{optim.lr: [0.003, 0.01, 0.03]}}")
    objective = raw.get("objective", "val_err1")
    if objective not in OBJECTIVES:
        raise ConfigError(f"{where}: tune.objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict):
        raise ConfigError(f"{where}: tune.budget must be a mapping of config keys (overrides for the tuning runs)")
    trials = raw.get("trials", 8)
    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"{where}: tune.trials must be a positive integer, not {trials!r}")
    target = raw.get("target", 0.25)
    if not isinstance(target, (int, float)) or not 0 < target < 1:
        raise ConfigError(f"{where}: tune.target must be an error rate in (0, 1), not {target!r}")
    return Tune(
        space={str(k): _grid(str(k), v, where, search) for k, v in space.items()},  # dotted keys: the values are mappings
        budget=flatten(budget),
        # apart from the study's seeds, so that no run both picks a value and measures it
        seeds=[TUNING_SEED_OFFSET + s for s in parse_seeds(raw.get("seeds", 1), f"{where}: tune.seeds")],
        objective=objective,
        target=float(target),
        per_variant=bool(raw.get("per_variant", True)),
        search=search,
        trials=trials,
    )


DEFAULT_PROFILE = "demo"  # for an ablation file that names none


@dataclass
class Ablation:
    name: str
    description: str
    baseline: str
    seeds: list[int]
    overrides: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    profile: str = DEFAULT_PROFILE
    tune: Tune | None = None
    compare: dict[str, str] = field(default_factory=dict)  # variant -> its reference; the others: the baseline
    design: Design | None = None  # a factorial study: its variants are the design's cells
    demo: bool = False  # true: `make demo` runs it
    metric: str = DEFAULT_METRIC  # the primary metric of the verdicts
    smallest_effect: float = 0.01  # δ: an error difference (fraction) or, for epochs_to_train_err, a ratio
    seed_bounds: tuple[int, int] | None = None  # seeds: {min, max}: adaptive seeds by default, within these bounds
    claims: list[Claim] = field(default_factory=list)  # the paper's claims it tests (ablations.spec.claims)

    def reference(self, variant: str) -> str:
        return self.compare.get(variant, self.baseline)

    path: Path | None = None


def ablation_dir(config_dir: Path | None = None) -> Path:
    return (config_dir or paths.config_dir()) / "ablations"


def available(config_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ablation_dir(config_dir).glob("*.yaml"))


def parse_seed_bounds(value: Any, where: str) -> tuple[int, int]:
    """`{min: 3, max: 10}` -> (3, 10): the bounds of adaptive seeds."""
    ok = isinstance(value, dict) and set(value) == {"min", "max"} and all(isinstance(x, int) and not isinstance(x, bool) for x in value.values())
    if not ok or not 1 <= value["min"] <= value["max"]:
        raise ConfigError(
            f"{where}: adaptive seeds are written seeds: {{min: 3, max: 10}} (two integers, 1 <= min <= max), not {value!r}; "
            "or give a count (seeds: 3) or a list (seeds: [0, 1, 2])"
        )
    return int(value["min"]), int(value["max"])


def parse_seeds(value: Any, where: str) -> list[int]:
    """`3` -> [0, 1, 2]; `[0, 4]` or "0,4" -> [0, 4]."""
    if isinstance(value, str) and not value.replace(",", " ").replace(" ", "").lstrip("-").isdigit():
        raise ConfigError(f"{where}: seeds must be a count (e.g. 3) or a list of integers (e.g. 0,1,2), not {value!r} (SEEDS=auto: `make ablate-NAME` only)")
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
    design = None
    if "factors" in raw or "design" in raw:
        if "variants" in raw or "baseline" in raw or "compare" in raw:
            raise ConfigError(f"{path}: a factorial study has factors: (and design:), not variants:, baseline: or compare:; its cells are the variants")
        design = parse_design(raw.get("factors"), raw.get("design"), str(path))
        raw = raw | {"variants": design.cells()}
        raw["baseline"] = next(iter(raw["variants"]))
    variants = raw.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{path}: 'variants' must map each variant name to its overrides, e.g. variants: {{relu: {{model.activation: relu}}}}")
    baseline = raw.get("baseline")
    if baseline not in variants:
        raise ConfigError(f"{path}: 'baseline' must name one of the variants ({', '.join(map(str, variants))}), not {baseline!r}")
    for vname, ov in variants.items():
        if ov is not None and not isinstance(ov, dict):
            raise ConfigError(f"{path}: variant '{vname}' must be a mapping of config keys (or empty for the baseline as is)")
    profile = raw.get("profile", DEFAULT_PROFILE)
    if not isinstance(profile, str) or not (ablation_dir(config_dir).parent / "profiles" / f"{profile}.yaml").is_file():
        raise ConfigError(f"{path}: 'profile' must name a file in configs/profiles/, not {profile!r}")
    compare = raw.get("compare") or {}
    bad = [f"{k}: {v}" for k, v in compare.items() if k not in variants or v not in variants or k == v] if isinstance(compare, dict) else [repr(compare)]
    if bad:
        raise ConfigError(f"{path}: 'compare' must map a variant to another variant it is measured against; not {', '.join(bad)}")
    if not isinstance(raw.get("demo", False), bool):
        raise ConfigError(f"{path}: 'demo' must be true or false (whether `make demo` runs it), not {raw['demo']!r}")
    metric = raw.get(
        "metric", "epochs_to_train_err" if (parse_tune(raw.get("tune"), str(path)) or Tune({}, {}, [])).objective == "epochs_to_train_err" else DEFAULT_METRIC
    )
    if metric not in METRICS:
        raise ConfigError(f"{path}: 'metric' must be one of {', '.join(METRICS)}, not {metric!r}")
    delta = raw.get("smallest_effect", DEFAULT_DELTA[metric])
    ratio = metric == "epochs_to_train_err"
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (delta > 1 if ratio else 0 < delta < 1):
        expected = "a ratio > 1 (e.g. 1.1)" if ratio else "an error difference in (0, 1), e.g. 0.01 for 1 point"
        raise ConfigError(f"{path}: 'smallest_effect' must be {expected}, not {delta!r}")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: 'overrides' must be a mapping of config keys")
    raw_seeds = raw.get("seeds", 3)
    bounds = parse_seed_bounds(raw_seeds, str(path)) if isinstance(raw_seeds, dict) else None
    return Ablation(
        name=name,
        description=str(raw.get("description", "")).strip(),
        baseline=str(baseline),
        seeds=list(range(bounds[0])) if bounds else parse_seeds(raw_seeds, str(path)),
        overrides=flatten(overrides),
        variants={str(k): flatten(v or {}) for k, v in variants.items()},
        profile=profile,
        tune=parse_tune(raw.get("tune"), str(path)),
        compare={str(k): str(v) for k, v in compare.items()},
        design=design,
        demo=raw.get("demo", False),
        metric=metric,
        smallest_effect=float(delta),
        seed_bounds=bounds,
        claims=parse_claims(raw.get("claims"), str(path), variants, metric, name, tuned="tune" in raw),
        path=path,
    )
