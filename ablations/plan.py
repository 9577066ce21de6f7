"""Planning a study: its runs (variants x seeds, as validated configs) and, for each,
what to do given what the tracking store already holds.

Nothing here starts a process; `ablations.launch` runs what the plan says, on this
machine or on a cluster, and tells the plan whether a RUNNING run is still alive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ablations import tracking
from ablations.config import Config, build_config, profile_overrides
from ablations.spec import Ablation
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
    tags: dict[str, str] = field(default_factory=dict)  # extra tags (e.g. a tuning candidate's)

    @property
    def name(self) -> str:
        return f"{self.variant}-seed{self.seed}"


def expand(
    ablation: Ablation,
    profile: str | None = None,
    args: list[str] | None = None,
    seeds: list[int] | None = None,
    gpus: int = 0,
    config_dir: Path | None = None,
) -> list[RunSpec]:
    """Every (variant, seed) of the study as a validated config, baseline first.
    Precedence: base < profile < the file's overrides < ARGS < the variant < seed and GPUS."""
    extra = parse_overrides(args or [])
    device = {"trainer.accelerator": "gpu", "trainer.devices": gpus} if gpus else {}
    prof = profile_overrides(profile, config_dir)
    runs = []
    order = [ablation.baseline] + [v for v in ablation.variants if v != ablation.baseline]
    for variant in order:
        layered = ablation.overrides | extra | ablation.variants[variant] | device
        for seed in seeds or ablation.seeds:
            flat = layered | {"seed": seed}
            try:
                cfg = build_config(prof, flat, config_dir=config_dir)
            except ConfigError as err:
                raise ConfigError(f"ablation '{ablation.name}', variant '{variant}': {err}") from None
            runs.append(RunSpec(ablation.name, variant, seed, cfg, as_overrides(flat), profile))
    return runs


def run_tags(spec: RunSpec, parent_id: str, baseline: str) -> dict[str, str]:
    """The tags of a study's child run: where it nests, what it is, what code trained it."""
    return {
        tracking.PARENT: parent_id,
        tracking.ABLATION: spec.ablation,
        tracking.VARIANT: spec.variant,
        tracking.SEED: str(spec.seed),
        tracking.CONFIG_HASH: spec.config.hash(),
        tracking.GIT_COMMIT: tracking.git_commit(),
        tracking.PROFILE: spec.profile or "",
        tracking.BASELINE: str(spec.variant == baseline).lower(),
    } | spec.tags


@dataclass
class Decision:
    action: Literal["skip", "resume", "reuse", "new", "busy"]
    run_id: str | None = None  # skip, resume, busy: that run; reuse: the run to copy


def decide(spec: RunSpec, experiment_id: str, force: bool, alive: Callable[[object], bool]) -> Decision:
    """skip: a FINISHED run of this config is in the study's experiment; busy: another
    live process trains it now; resume: an interrupted run has a checkpoint; reuse: a
    FINISHED run of the same config is in another study; new: train it.
    `alive(run)` says whether a RUNNING run's process still exists (the launcher knows)."""
    existing = tracking.runs_of_config(experiment_id, spec.ablation, spec.variant, spec.config.hash())
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
