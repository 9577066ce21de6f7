"""Choosing each variant's tuned value from its candidates' scores (lower is better): a
candidate with a FAILED seed loses; ties of the objective are broken by the second score.
Pure: the candidates are read from MLflow by ablations.report.read.candidates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Candidate:
    variant: str
    values: dict[str, Any]
    scores: list[tuple[float, float]] = field(default_factory=list)  # per seed: (objective, tie-break)

    @property
    def lost(self) -> bool:
        """A seed FAILED (or nothing was scored): never chosen, not even as the least bad."""
        return math.isinf(self.score[1])

    @property
    def score(self) -> tuple[float, float]:
        """Mean over seeds; a seed that lost makes the candidate lose."""
        if not self.scores:
            return (math.inf, math.inf)
        return (sum(s[0] for s in self.scores) / len(self.scores), sum(s[1] for s in self.scores) / len(self.scores))


def choose(found: list[Candidate], tune, variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant, the best candidate's values; with per_variant=false, the candidate
    best on average over the variants, for all of them."""
    if tune.per_variant:
        best = {}
        for v in variants:
            mine = [c for c in found if c.variant == v and not c.lost]
            if mine:
                best[v] = min(mine, key=lambda c: c.score).values
        return best
    pooled: dict[tuple, list[Candidate]] = {}
    for c in found:
        pooled.setdefault(_key(c.values), []).append(c)
    complete = {k: cs for k, cs in pooled.items() if {c.variant for c in cs} == set(variants) and not any(c.lost for c in cs)}
    if not complete:
        return {}
    best = min(complete, key=lambda k: tuple(sum(c.score[i] for c in complete[k]) / len(complete[k]) for i in (0, 1)))
    return {v: dict(best) for v in variants}


def at_edge(tune, chosen: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings for chosen values at an end of the searched range: the best may lie beyond it
    (for Optuna's continuous range: within 5% of its width, on the log scale, of an end)."""
    warnings = []
    for variant, values in chosen.items():
        for key, value in values.items():
            space = tune.space[key]
            if not all(isinstance(x, (int, float)) for x in space):
                continue
            lo, hi = min(space), max(space)
            for end, word in ((lo, "lowest"), (hi, "highest")):
                if tune.search == "optuna" and lo > 0:
                    close = abs(math.log(value / end)) < 0.05 * abs(math.log(hi / lo))
                else:
                    close = value == end
                if close:
                    warnings.append(f"{variant}: the best {key} ({value:g}) is the {word} value searched; widen tune.space.{key} past it")
    return warnings


def _key(values: dict[str, Any]) -> tuple:
    return tuple(sorted(values.items()))
