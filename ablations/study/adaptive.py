"""Adaptive seeds (SEEDS=auto, or `seeds: {min: 3, max: 10}` in the ablation file): a study in rounds.

Round 1 trains every variant at the seeds up to the first look (max(min, 5): no interval from fewer than
4 degrees of freedom); after each round the finished runs' values of the primary metric go to
`ablations.analysis.sequential.next_round`, which says which seeds to train next: one more seed for each
variant whose verdict is still inconclusive (and the same seed for its reference, as comparisons pair
seeds), until each is decided or has `max` seeds. Its group-sequential boundary keeps the error rates
across the repeated looks; its name is written on the parent run (tag `adaptive_seeds`).

Each round is an ordinary pass of the study's executor over the (variant, seed) runs it asks for, into the
same parent run: skip, reuse, resume, PARALLEL and LAUNCHER=slurm work as for fixed seeds, and a study run
again reads its finished runs, takes the same decisions and trains nothing new. A failed run counts as a
seed tried (not trained again in this study; run the study again to retry it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from ablations import tracking
from ablations.analysis import MIN_DF, SeedBounds, next_round
from ablations.analysis.sequential import RULE, Round, looks
from ablations.report.power import delta_of, metric_value
from ablations.report.read import read_run
from ablations.spec import Ablation
from ablations.study.outcome import FINISHED_LIKE
from ablations.study.plan import RunSpec, expand
from core.errors import ConfigError

DEFAULT = SeedBounds(3, 10)


def bounds(ablation: Ablation, seeds: list[int] | None, auto: bool, no_wait: bool = False) -> SeedBounds | None:
    """The study's adaptive bounds, or None for fixed seeds: SEEDS=auto asks for them (the file's bounds,
    else 3 to 10); so does a file with seeds: {min, max} unless SEEDS gives the seeds."""
    if not auto and (seeds is not None or ablation.seed_bounds is None):
        return None
    where = f"{ablation.path}: seeds: {{min, max}}" if ablation.seed_bounds else "SEEDS=auto"
    b = SeedBounds(*ablation.seed_bounds) if ablation.seed_bounds else DEFAULT
    if not looks(b):
        raise ConfigError(
            f"{where}: adaptive seeds need max >= {MIN_DF + 1}, not {b.max}: no verdict comes from fewer than {MIN_DF} degrees of freedom; "
            f"raise max, or give a fixed count (SEEDS={b.max})"
        )
    if no_wait:
        raise ConfigError("NO_WAIT cannot run adaptive seeds: each round needs the previous round's results; leave NO_WAIT unset, or give SEEDS=N")
    return b


def first_seeds(b: SeedBounds) -> list[int]:
    """Round 1: every variant's seeds up to the first look."""
    return list(range(looks(b)[0]))


def describe(b: SeedBounds) -> dict:
    ns = looks(b)
    return {"min": b.min, "max": b.max, "rule": RULE.format(looks=f"{ns[0]} to {ns[-1]}"), "looks": list(ns)}


def value(outcome, ablation: Ablation) -> float:
    """A run's value of the primary metric (NaN: it failed, or never reached the target)."""
    if outcome.status not in FINISHED_LIKE or not outcome.run_id:
        return math.nan
    return metric_value(read_run(tracking.get_run(outcome.run_id)), ablation.metric)


def _fmt(c, ratio: bool) -> str:
    if math.isnan(c.estimate):
        return f"{c.variant} vs {c.reference}: {c.verdict.label}"
    est = f"×{math.exp(c.estimate):.3g}" if ratio else f"{100 * c.estimate:+.2f} points"
    ci = (f"[{math.exp(c.lo):.3g}, {math.exp(c.hi):.3g}]" if ratio else f"[{100 * c.lo:+.2f}, {100 * c.hi:+.2f}]") if c.has_interval else ""
    return f"{c.variant} vs {c.reference}: {c.verdict.label} at {c.n} seeds (Δ {est}" + (f", {100 * c.level:.2f}% interval {ci})" if ci else ")")


def summary(k: int, r: Round, ratio: bool) -> list[str]:
    """What the looks after round k decided, and what round k + 1 trains, in words."""
    lines = [f"after round {k}:", *(f"  {_fmt(c, ratio)}" for c in r.comparisons)]
    if r.done:
        return [*lines, f"round {k + 1}: none; every comparison is decided or has its maximum of seeds"]
    seeds = sorted({s for add in r.add.values() for s in add})
    n = len(r.pending)
    return [
        *lines,
        f"round {k + 1}: {n} variant{'s' if n != 1 else ''} still inconclusive ({', '.join(r.pending)}), "
        f"training seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))} of {', '.join(r.add)}",
    ]


def train_rounds(study, parent_id: str, experiment_id: str, say: Callable[[str], None]) -> tuple[list, bool]:
    """The study's runs in rounds, until `next_round` is done; (every outcome, interrupted)."""
    ab, b = study.ablation, study.adaptive
    facts = describe(b)
    tracking.set_tags(parent_id, {tracking.ADAPTIVE_SEEDS: json.dumps(facts)})
    ratio = ab.metric == "epochs_to_train_err"
    say(f"adaptive seeds: {b.min} to {b.max} per variant, looks at {facts['looks'][0]} to {facts['looks'][-1]} seeds; rule: {facts['rule']}")
    values: dict[str, dict[int, float]] = {v: {} for v in [ab.baseline, *ab.variants]}
    outcomes: list = []
    specs: list[RunSpec] = list(study.runs)
    first = first_seeds(b)
    say(f"round 1: seeds {first[0]} to {first[-1]} of every variant ({len(specs)} runs)")
    k = 1
    while True:
        more, interrupted = study.executor.run_all(specs, parent_id, experiment_id)
        outcomes += more
        if interrupted:
            return outcomes, True
        for o in more:
            values[o.spec.variant][o.spec.seed] = value(o, ab)
        unreached = [o.spec.name for o in more if o.status in FINISHED_LIKE and math.isnan(values[o.spec.variant][o.spec.seed])]
        if unreached:  # the rounds use the paired t, not the report's censored model
            say(f"note: {', '.join(unreached)} finished without a value of {ab.metric} (never reached the target): counted as failed seeds")
        r = next_round(values, ab.baseline, b, ab.compare, delta_of(ab), study=ab.name, metric=ab.metric)
        for line in summary(k, r, ratio):
            say(line)
        k += 1
        if r.done:
            break
        wanted = {(v, s) for v, seeds in r.add.items() for s in seeds}
        seeds = sorted({s for _, s in wanted})
        specs = [s for s in expand(ab, study.profile, study.run_args, seeds, study.gpus, study.config_dir, tuned=study.tuned) if (s.variant, s.seed) in wanted]
        if not specs:  # cannot happen while max >= the first look; never loop without training
            say(f"round {k}: nothing left to train; stopping with {', '.join(r.pending)} inconclusive")
            break
    tracking.set_tags(parent_id, {tracking.ADAPTIVE_SEEDS: json.dumps(facts | {"rounds": k - 1, "seeds": {v: len(per) for v, per in values.items()}})})
    return outcomes, False
