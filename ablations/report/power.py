"""Seed planning: per variant, what its seeds can detect, and about how many seeds settle ±δ.

    python -m ablations.report.power NAME     # the newest study of that ablation (make power-NAME)
    python -m ablations.report.power NAME --from docs/results/NAME    # a published study (make power-NAME FROM=...)

Reads the study's finished runs from MLflow (a finished study, or a pilot with a few seeds), takes each
run's value of the ablation's primary metric (`metric:` in its file: the final val_err1, or the log of the
epochs to the target training error) and prints, per comparison, the seeds it has, the standard deviation
of a per-seed difference as the study's model estimates it, the smallest effect those seeds find with 80%
power, and the seeds needed to settle ±δ (δ: the file's `smallest_effect`) with 80% power
(`ablations.analysis.seed_plan`). It trains nothing and writes nothing.

Adaptive seeds (SEEDS=auto, `ablations.study.adaptive`) read the same values through `values_of`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ablations import tracking
from ablations.analysis import SeedPlan, seed_plan
from ablations.analysis.records import TARGET_TRAIN_ERR, RunResult
from ablations.analysis.study import final_value
from ablations.report import evidence
from ablations.report.read import study_from_mlflow
from ablations.spec import Ablation, load_ablation
from core.errors import ConfigError

Values = dict[str, dict[int, float]]  # variant -> seed -> value


def metric_value(r: RunResult, metric: str, target: float = TARGET_TRAIN_ERR) -> float:
    """A run's value of the primary metric, on the scale the verdicts use (lower is better):
    an error as a fraction, or the log of the epochs to `target` (NaN: never reached it)."""
    if metric == "epochs_to_train_err":
        epochs = r.epochs_to(target)
        return math.log(epochs) if epochs > 0 else math.nan
    return final_value(r, metric)


def delta_of(ablation: Ablation) -> float:
    """δ on the verdicts' scale: the error difference, or the log of the time ratio."""
    return math.log(ablation.smallest_effect) if ablation.metric == "epochs_to_train_err" else ablation.smallest_effect


def values_of(results: list[RunResult], ablation: Ablation) -> Values:
    """Per variant of the ablation (every one a key, baseline first), per seed, the primary metric."""
    order = [ablation.baseline] + [v for v in ablation.variants if v != ablation.baseline]
    out: Values = {v: {} for v in order}
    # runs from before the test split have none: their val split was the dataset's test split (as the report reads them)
    metric = "val_err1" if ablation.metric == "test_err1" and not any(r.test for r in results) else ablation.metric
    for r in results:
        if r.variant in out:
            out[r.variant][r.seed] = metric_value(r, metric)
    return out


def study_values(name: str, config_dir: Path | None = None, source: Path | None = None) -> tuple[Ablation, Values, str]:
    """The ablation, its newest study's (or the published study's in `source`) values per variant and
    seed, and which study that is."""
    ablation = load_ablation(name, config_dir)
    if source is not None:
        study = evidence.load(source, name)
        results, studied, label = study.results(), study.meta["variants"], f"{study.parent_name} (published, {source})"
    else:
        parent = tracking.newest_study(name)
        if parent is None:
            raise ConfigError(f"no '{name}' study in {tracking.tracking_uri()}: run `make ablate-{name}` first (a pilot with SEEDS=2 or 3 will do)")
        results, label = study_from_mlflow(name, parent, with_shared=False).results(), f"{parent.info.run_name} ({parent.info.status})"
        studied = [v for v in parent.data.params.get("variants", "").split(",") if v]
    values = values_of(results, ablation)
    if studied:  # a study run with fewer variants than the file now has: plan for those it ran
        values = {v: per for v, per in values.items() if v in studied or v == ablation.baseline}
    few = {v: sum(1 for x in per.values() if not math.isnan(x)) for v, per in values.items()}
    few = {v: n for v, n in few.items() if n < 2}
    if few:
        listed = ", ".join(f"{v} ({n})" for v, n in few.items())
        what = f"values of {ablation.metric}" + (" (runs that reached the target)" if ablation.metric == "epochs_to_train_err" else "")
        raise ConfigError(
            f"study {label} of '{name}': seed planning needs at least 2 seeds with {what} per variant; "
            f"{listed} has fewer: run `make ablate-{name} SEEDS=3` (finished seeds are skipped) and then `make power-{name}` again"
        )
    return ablation, values, label


def plan(name: str, config_dir: Path | None = None, source: Path | None = None) -> tuple[Ablation, list[SeedPlan], str]:
    ablation, values, label = study_values(name, config_dir, source)
    return ablation, seed_plan(values, ablation.baseline, ablation.compare, delta_of(ablation)), label


def _effect(x: float, ratio: bool) -> str:
    if math.isnan(x):
        return "—"
    return f"×{math.exp(x):.3g}" if ratio else f"{100 * x:.2f} points"


def render(ablation: Ablation, plans: list[SeedPlan], label: str) -> str:
    ratio = ablation.metric == "epochs_to_train_err"
    what = f"log of the epochs to {TARGET_TRAIN_ERR:.0%} training error" if ratio else f"final {ablation.metric}"
    delta = f"a ratio of {ablation.smallest_effect:g} either way" if ratio else f"±{100 * ablation.smallest_effect:g} points"
    lines = [
        f"seed plan for '{ablation.name}' from study {label}: primary metric {what}; δ = {delta}",
        "",
        "| variant | vs | seeds | sd of a per-seed Δ | detectable Δ at these seeds (80% power) | seeds for ±δ (80% power) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    notes = []
    for p in plans:
        sd = "—" if math.isnan(p.sd) else f"{p.sd:.3g} (log scale)" if ratio else f"{100 * p.sd:.2f} points"
        detect = _effect(p.detectable, ratio)
        if math.isnan(p.detectable):
            detect = "— (no verdict yet: too few degrees of freedom)"
        needed = str(p.seeds_needed) if p.seeds_needed is not None else "— (cannot tell)" if math.isnan(p.sd) else "over 10000"
        lines.append(f"| {p.variant} | {p.reference} | {p.seeds} | {sd} | {detect} | {needed} |")
        notes.append(f"{p.variant}: {p.method}")
    lines += [
        "",
        "seeds for ±δ: the fewest with 80% power both to find a Δ of δ and to show equivalence within ±δ when Δ = 0, at the "
        "comparison's Holm level (ablations.analysis.power; effects between 0 and δ can need more). Pilot sds are rough: "
        "with few seeds the estimate itself is uncertain.",
        *notes,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a file in configs/ablations/ without .yaml")
    parser.add_argument("--config-dir", type=Path, default=None, help="default: configs/ ($ABLATION_CONFIGS)")
    parser.add_argument("--from", dest="source", type=Path, default=None, metavar="DIR", help="a published study's folder (docs/results/NAME)")
    args = parser.parse_args(argv)
    if args.source is None:
        tracking.configure()
    print(render(*plan(args.name, args.config_dir, args.source)))
    return 0


if __name__ == "__main__":
    import sys

    from core.errors import run_command

    sys.exit(run_command(main))
