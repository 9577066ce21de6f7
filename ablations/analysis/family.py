"""One family of comparisons: Holm's step-down on the p-values, and intervals that agree with it.

Holm (1979): sort the m p-values; the i-th smallest is rejected when it and every smaller one passes
p_(j) <= α / (m − j + 1); its adjusted p is max over j <= i of min(1, (m − j + 1) p_(j)). The interval
shown for a comparison is the two-sided t interval at the level Holm tested it at, its step-down level:

- the i-th smallest p, rejected: α_i = α / (m − i + 1);
- every comparison from the first not rejected on (rank k + 1, k rejected): α_i = α / (m − k).

So an interval excludes zero exactly when Holm rejects (p_(i) < α_i for the rejected; the others' p are
at least p_(k+1) > α / (m − k)), and every verdict can be read off the interval printed. These step-down
intervals are the ones Holm's decisions imply; they are not simultaneous 1 − α intervals (Bonferroni's,
at α / m for all, would be, and are wider; Strassburger & Bretz 2008 show the simultaneous intervals that
match Holm exactly say no more than "Δ > 0" for a rejected comparison). The equivalence verdicts read off
the same intervals; for the non-rejected, whose level is Bonferroni's over those left, that is a Bonferroni
correction of the two one-sided tests.

A comparison with no interval (too few degrees of freedom, or not measured) can reach no verdict, so it
is left out of the family: it neither counts in m nor gets a level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ablations.analysis.verdicts import ALPHA, MIN_DF, Comparison, Verdict, at_level


def levels(p_values: Sequence[float], alpha: float = ALPHA) -> tuple[list[float], list[float]]:
    """Holm-adjusted p-values and each test's step-down level α_i (see the module's docstring). Computed
    here, not by statsmodels' multipletests (the tests check it against that): its Holm branch runs a full
    garbage collection per call, 0.1 s in a loaded process, and the effect curves adjust at every epoch."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, level = [0.0] * m, [0.0] * m
    running, k, rejecting = 0.0, 0, True
    for rank, i in enumerate(order, start=1):
        running = max(running, min(1.0, (m - rank + 1) * p_values[i]))
        adjusted[i] = running
        rejecting = rejecting and p_values[i] <= alpha / (m - rank + 1)
        k += rejecting
    for rank, i in enumerate(order, start=1):
        level[i] = alpha / (m - rank + 1) if rank <= k else alpha / (m - k)
    return adjusted, level


def _testable(c: Comparison, min_df: int) -> bool:
    return c.verdict is not Verdict.NOT_MEASURED and c.fit is not None and c.fit.df >= min_df and not math.isnan(c.p)


def adjust(comparisons: Sequence[Comparison], alpha: float = ALPHA, lower_is_better: bool = True, min_df: int = MIN_DF) -> list[Comparison]:
    """The comparisons as one family: Holm-adjusted p, step-down intervals, verdicts from them, in the
    order given. Each distinct comparison (study, metric, variant, reference) must appear once."""
    keys = [c.key for c in comparisons]
    twice = {k for k in keys if keys.count(k) > 1}
    if twice:
        raise ValueError(f"a family tests each comparison once; given more than once: {sorted(twice)}")
    tested = [i for i, c in enumerate(comparisons) if _testable(c, min_df)]
    adjusted, alphas = levels([comparisons[i].p for i in tested], alpha)
    out = list(comparisons)
    for i, p_adj, a in zip(tested, adjusted, alphas, strict=True):
        out[i] = at_level(comparisons[i], a, p_adj, len(tested), lower_is_better, min_df)
    for i, c in enumerate(comparisons):
        if i not in tested:
            out[i] = at_level(c, alpha, math.nan, 0, lower_is_better, min_df)  # in no family: no verdict to correct
    return out


RULE = "Holm's step-down over the family's p-values; each interval at the level Holm tested it at (its step-down level)"
