"""Seed planning: the smallest effect a number of seeds detects, and about how many seeds settle ±δ.

Both are read from the noncentral t distribution (scipy.stats.nct; Cohen 1988, ch. 2). A comparison over
n seeds estimates Δ with standard error sd/√n, sd the standard deviation of a per-seed difference, on
df_per_seed·(n − 1) degrees of freedom (the paired t: 1 per seed; the seed-blocked model over V variants:
V − 1; two independent samples: 2).

- detectable effect: the Δ that the two-sided t test at α finds with the given power (80%);
- seeds needed to settle ±δ: the fewest seeds with at least that power both to find a Δ of δ and, when
  Δ = 0, to show equivalence (the 1 − α interval inside ±δ, as `verdicts` decides). The equivalence power
  is 1 − P(the upper test fails) − P(the lower fails), each a noncentral t probability: a lower bound of
  the exact bivariate value (Phillips 1990), so the count errs high. Effects between 0 and δ can need more.
"""

from __future__ import annotations

import math

from scipy import optimize, stats

from ablations.analysis.verdicts import ALPHA, MIN_DF, POWER


def _nct_cdf(x: float, df: float, nc: float) -> float:
    """P(T <= x), T noncentral t; scipy returns NaN far in the tails, where the normal shift is exact enough."""
    p = float(stats.nct.cdf(x, df, nc))
    return p if not math.isnan(p) else float(stats.norm.cdf(x - nc))


def power_difference(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """The chance that the two-sided t test at alpha rejects Δ = 0 when Δ = effect."""
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = effect / se
    return 1 - _nct_cdf(crit, df, nc) + _nct_cdf(-crit, df, nc)


def power_equivalence(effect: float, se: float, df: float, delta: float, alpha: float = ALPHA) -> float:
    """About the chance that the two-sided 1 − alpha interval lies inside ±delta when Δ = effect (a lower bound)."""
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    fail_high = _nct_cdf(crit, df, (delta - effect) / se)
    fail_low = _nct_cdf(crit, df, (delta + effect) / se)
    return max(0.0, 1 - fail_high - fail_low)


def detectable_from_se(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The Δ found with `power` by the two-sided t test at alpha, for an estimate with this se and df."""
    if not (se >= 0 and df >= 1):
        return math.nan
    if se == 0:
        return 0.0
    f = lambda x: power_difference(x * se, se, df, alpha) - power
    hi = 2.0
    while f(hi) < 0:
        hi *= 2
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-10)) * se


def detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER, df_per_seed: float = 1.0) -> float:
    """The smallest |Δ| that n seeds find with `power` (two-sided, at alpha); sd: of a per-seed difference."""
    if n < 2:
        return math.nan
    return detectable_from_se(sd / math.sqrt(n), df_per_seed * (n - 1), alpha, power)


def seeds_needed(
    sd: float, delta: float, alpha: float = ALPHA, power: float = POWER, df_per_seed: float = 1.0, min_df: int = MIN_DF, most: int = 10_000
) -> int | None:
    """The fewest seeds with `power` to find Δ = delta and to show equivalence within ±delta when Δ = 0,
    with at least `min_df` degrees of freedom; None when sd is unknown or more than `most` would be needed."""
    if not sd >= 0 or not delta > 0:
        return None
    first = max(2, math.ceil(min_df / df_per_seed + 1 - 1e-9))

    def settles(n: int) -> bool:
        df, se = df_per_seed * (n - 1), sd / math.sqrt(n)
        if se == 0:
            return True
        return power_difference(delta, se, df, alpha) >= power and power_equivalence(0.0, se, df, delta, alpha) >= power

    if settles(first):
        return first
    if not settles(most):
        return None
    lo, hi = first, most  # settles(hi), not settles(lo); power grows with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if settles(mid) else (mid, hi)
    return hi
