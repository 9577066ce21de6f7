"""Planning a study: its runs (variants x seeds, as validated configs) and, for each,
what to do given what the tracking store already holds.

Nothing here starts a process; `ablations.study.launch` runs what the plan says, on this
machine or on a cluster, and tells the plan whether a RUNNING run is still alive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ablations import tracking
from ablations.spec import Ablation
from ablations.train.config import Config, build_config, profile_overrides
from core import paths
from core.config import as_overrides, parse_overrides
from core.errors import ConfigError


@dataclass
class RunSpec:
    ablation: str
    variant: str
    seed: int
    config: Config
    overrides: list[str] = field(default_factory=list)  # what the training process is given, after the profile
    profile: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # extra tags (a tuning candidate's)
    label: str = ""  # between variant and seed in the run's name (a tuning candidate's values)

    @property
    def name(self) -> str:
        return f"{self.variant}{self.label}-seed{self.seed}"


# A tuning budget caps these (the smaller of the budget and what the run would have);
# every other budget key is set as given.
BUDGET_CAPS = ("trainer.max_epochs", "data.train_size", "trainer.limit_train_batches")


class _Expander:
    """Configs of an ablation's runs: base < profile < the file's overrides < ARGS <
    the variant < (tuning: the budget < the candidate | tuned values) < seed and GPUS."""

    def __init__(self, ablation: Ablation, profile: str | None, args: list[str] | None, gpus: int, config_dir: Path | None):
        self.ablation, self.profile, self.config_dir = ablation, profile, config_dir
        self.extra = parse_overrides(args or [])
        self.device = {"trainer.accelerator": "gpu", "trainer.devices": gpus} if gpus else {}
        self.prof = profile_overrides(profile, config_dir)

    def config(self, variant: str, flat: dict[str, Any]) -> Config:
        try:
            return build_config(self.prof, flat, config_dir=self.config_dir)
        except ConfigError as err:
            raise ConfigError(f"ablation '{self.ablation.name}', variant '{variant}': {err}") from None

    def layered(self, variant: str, *more: dict[str, Any]) -> dict[str, Any]:
        flat = self.ablation.overrides | self.extra | self.ablation.variants[variant]
        for layer in more:
            flat = flat | layer
        return flat | self.device

    def spec(self, variant: str, seed: int, flat: dict[str, Any], **kw) -> RunSpec:
        flat = flat | {"seed": seed}
        return RunSpec(self.ablation.name, variant, seed, self.config(variant, flat), as_overrides(flat), self.profile, **kw)

    def budget(self, variant: str) -> dict[str, Any]:
        """The tuning budget, with its caps applied to what the variant's runs would get."""
        plain = self.config(variant, self.layered(variant) | {"seed": 0}).flat()
        out = {}
        for key, value in self.ablation.tune.budget.items():
            if key in BUDGET_CAPS and plain.get(key) is not None and value is not None:
                value = min(value, plain[key])
            out[key] = value
        return out


def _order(ablation: Ablation) -> list[str]:
    return [ablation.baseline] + [v for v in ablation.variants if v != ablation.baseline]


def expand(
    ablation: Ablation,
    profile: str | None = None,
    args: list[str] | None = None,
    seeds: list[int] | None = None,
    gpus: int = 0,
    config_dir: Path | None = None,
    tuned: dict[str, dict[str, Any]] | None = None,
) -> list[RunSpec]:
    """Every (variant, seed) of the study as a validated config, baseline first;
    `tuned`: per variant, the values its tuning chose."""
    ex = _Expander(ablation, profile, args, gpus, config_dir)
    cells = ablation.design.cells() if ablation.design else {}
    return [
        ex.spec(v, seed, ex.layered(v, (tuned or {}).get(v, {})), tags={f"factor.{k}": str(x) for k, x in cells.get(v, {}).items()})
        for v in _order(ablation)
        for seed in seeds or ablation.seeds
    ]


def _label(values: dict[str, Any]) -> str:
    return "".join(f"-{key.rsplit('.', 1)[-1]}{value:g}" if isinstance(value, float) else f"-{key.rsplit('.', 1)[-1]}{value}" for key, value in values.items())


def expand_tuning(
    ablation: Ablation, candidates: dict[str, list[dict[str, Any]]], profile: str | None = None, args: list[str] | None = None, gpus: int = 0,
    config_dir: Path | None = None,
) -> list[RunSpec]:  # fmt: skip
    """The tuning runs: per variant, each candidate (key -> value) at each tuning seed,
    under the tuning budget; tagged tuning=true and tune.<key>=<value>."""
    ex = _Expander(ablation, profile, args, gpus, config_dir)
    tune = ablation.tune
    stop = {"trainer.stop_at_train_err": tune.target} if tune.objective == "epochs_to_train_err" else {}
    runs = []
    for variant in _order(ablation):
        budget = ex.budget(variant) | stop
        for values in candidates.get(variant, []):
            tags = {tracking.TUNING: "true"} | {f"{tracking.TUNE_PREFIX}{k}": str(v) for k, v in values.items()}
            runs += [ex.spec(variant, seed, ex.layered(variant, budget, values), tags=tags, label=_label(values)) for seed in tune.seeds]
    return runs


def run_tags(spec: RunSpec, parent_id: str, ablation: Ablation) -> dict[str, str]:
    """The tags of a study's child run: where it nests, what it is (and a description the
    UI shows), what code trained it."""
    baseline = ablation.baseline
    changes = ", ".join(f"{k}={v}" for k, v in ablation.variants.get(spec.variant, {}).items()) or "the baseline as it is"
    what = "tuning candidate" if spec.tags.get(tracking.TUNING) == "true" else "variant"
    note = f"{what} {spec.variant} of the {spec.ablation} ablation, seed {spec.seed}: {changes}"
    if spec.variant != ablation.reference(spec.variant):
        note += f" (compared with {ablation.reference(spec.variant)})"
    return {
        tracking.NOTE: note,
        **tracking.source_tags("ablations.train"),
        tracking.PARENT: parent_id,
        tracking.ABLATION: spec.ablation,
        tracking.VARIANT: spec.variant,
        tracking.SEED: str(spec.seed),
        tracking.CONFIG_HASH: spec.config.hash(),
        tracking.VARIANT_HASH: spec.config.variant_hash(),
        tracking.GIT_COMMIT: tracking.git_commit(),
        tracking.PROFILE: spec.profile or "",
        tracking.BASELINE: str(spec.variant == baseline).lower(),
    } | spec.tags


def claim(spec: RunSpec, experiment_id: str, run_id: str, alive: Callable[[object], bool]) -> str | None:
    """After creating `run_id` for spec: whether another study process claimed the same
    run first. Every live RUNNING run of this config competes; the earliest created (then
    the smallest id) wins, so two processes that decided "new" at once agree on one
    winner. Returns the winner's id when it is not ours (ours is then marked KILLED)."""
    tuning = spec.tags.get(tracking.TUNING) == "true"
    runs = tracking.runs_of_config(experiment_id, spec.ablation, spec.variant, spec.config.hash(), tuning)
    live = [r for r in runs if r.info.status == "RUNNING" and (r.info.run_id == run_id or alive(r))]
    winner = min(live, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if live else run_id
    if winner != run_id:
        tracking.mark_ended(run_id, "KILLED", f"claimed first by run {winner} (another study process trains it)")
        return winner
    return None


@dataclass
class Decision:
    action: Literal["skip", "resume", "reuse", "new", "busy"]
    run_id: str | None = None  # skip, resume, busy: that run; reuse: the run to copy


def decide(spec: RunSpec, experiment_id: str, force: bool, alive: Callable[[object], bool]) -> Decision:
    """skip: a FINISHED run of this config is in the study's experiment; busy: another
    live process trains it now; resume: an interrupted run has a checkpoint; reuse: a
    FINISHED run of the same config is in another study; new: train it.
    `alive(run)` says whether a RUNNING run's process still exists (the launcher knows)."""
    tuning = spec.tags.get(tracking.TUNING) == "true"
    existing = tracking.runs_of_config(experiment_id, spec.ablation, spec.variant, spec.config.hash(), tuning)
    if not force:
        for run in existing:
            if run.info.status == "FINISHED":
                return Decision("skip", run.info.run_id)
    for run in existing:
        status, run_id = run.info.status, run.info.run_id
        if status == "RUNNING" and alive(run):
            return Decision("busy", run_id)
        resumable = paths.checkpoint(run_id).exists() and run.data.tags.get(tracking.DIVERGED) != "true"
        if status in ("RUNNING", "KILLED", "FAILED") and resumable and not force:
            return Decision("resume", run_id)
        if status == "RUNNING":  # its process is gone and left nothing to resume from
            tracking.mark_ended(run_id, "KILLED", "stale: its process ended before the first checkpoint")
    if not force:
        source = tracking.finished_elsewhere(spec.config.hash())
        if source is not None:
            return Decision("reuse", source.info.run_id)
    return Decision("new")
