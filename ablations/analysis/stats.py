"""The statistics a report prints, as plain functions of numbers.

Means with the sample standard deviation and the 95% t interval of the mean;
paired differences (by seed) with a paired t-test, adjusted (Holm) for the number of comparisons
a study makes; the first time a training
error curve reaches a target, interpolated between measurements; ratios of such
times with their interval (from paired log ratios).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # 95% intervals; "within noise" when p >= ALPHA or the interval holds 0


@dataclass
class Stat:
    n: int
    mean: float
    std: float
    lo: float
    hi: float

    def fmt(self, pct: bool = True, digits: int = 2) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        k = 100 if pct else 1
        s = f"{self.mean * k:.{digits}f}"
        if self.n > 1:
            s += f" ± {self.std * k:.{digits}f} [{self.lo * k:.{digits}f}, {self.hi * k:.{digits}f}]"
        return s


def describe(values: Sequence[float]) -> Stat:
    """Mean, sample standard deviation and the 95% t confidence interval of the mean
    (NaNs dropped)."""
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return Stat(0, math.nan, math.nan, math.nan, math.nan)
    if len(v) == 1:
        return Stat(1, float(v[0]), math.nan, math.nan, math.nan)
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(1 - ALPHA / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return Stat(len(v), mean, std, mean - half, mean + half)


@dataclass
class Comparison:
    diff: Stat  # variant - baseline, over the paired seeds
    p_value: float
    within_noise: bool
    p_adjusted: float  # for the number of comparisons made together (`holm`); p_value alone
    family: int = 1  # how many comparisons were made together


def _paired_seeds(variant: dict[int, float], baseline: dict[int, float]) -> list[int]:
    return sorted(s for s in set(variant) & set(baseline) if not math.isnan(variant[s]) and not math.isnan(baseline[s]))


def paired(variant: dict[int, float], baseline: dict[int, float]) -> Comparison | None:
    """Variant minus baseline over the seeds both have (seed -> value), with a paired
    t-test; None with fewer than two pairs."""
    from scipy import stats

    seeds = _paired_seeds(variant, baseline)
    if len(seeds) < 2:
        return None
    a = np.array([variant[s] for s in seeds])
    b = np.array([baseline[s] for s in seeds])
    d = describe(list(a - b))
    p = float(stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
    if math.isnan(p):
        p = 1.0
    return Comparison(d, p, within_noise=p >= ALPHA or d.lo <= 0 <= d.hi, p_adjusted=p)


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """p-values of tests made together, adjusted for their number by Holm's step-down
    (statsmodels)."""
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), alpha=ALPHA, method="holm")[1]] if len(p_values) else []


def holm(comparisons: Sequence[Comparison]) -> None:
    """Adjusts comparisons made together (a study's variants each against its reference)
    for their number: each gets `p_adjusted` (`holm_adjusted`), and is within noise unless
    that stays below ALPHA. With one comparison nothing changes."""
    adjusted = holm_adjusted([c.p_value for c in comparisons])
    for c, p in zip(comparisons, adjusted, strict=True):
        c.p_adjusted, c.family = p, len(comparisons)
        c.within_noise = c.within_noise or c.p_adjusted >= ALPHA


def time_to(points: Sequence[tuple[float, float]], target: float) -> float:
    """The first x at which a curve of (x, error) points, joined by straight lines,
    comes down to `target`; NaN if it never does. The x of the first point if it
    starts at or below the target."""
    prev: tuple[float, float] | None = None
    for x, err in points:
        if math.isnan(err):
            continue
        if err <= target:
            if prev is None:
                return float(x)
            x0, e0 = prev
            return float(x0 + (e0 - target) / (e0 - err) * (x - x0))
        prev = (x, err)
    return math.nan


def ratio(variant: dict[int, float], baseline: dict[int, float]) -> Stat:
    """The ratio variant / baseline of positive values (e.g. times to a target):
    the geometric mean of the per-seed ratios with the 95% interval from the
    paired log ratios. Without two pairs, the ratio of the means (n = 1, no interval)."""
    seeds = _paired_seeds(variant, baseline)
    if len(seeds) >= 2:
        logs = describe([math.log(variant[s] / baseline[s]) for s in seeds])
        return Stat(logs.n, math.exp(logs.mean), math.nan, math.exp(logs.lo), math.exp(logs.hi))
    a = [v for v in variant.values() if not math.isnan(v)]
    b = [v for v in baseline.values() if not math.isnan(v)]
    if not a or not b:
        return Stat(0, math.nan, math.nan, math.nan, math.nan)
    return Stat(1, float(np.mean(a) / np.mean(b)), math.nan, math.nan, math.nan)
