"""Honest display: no interval from fewer than 3 seeds, error rates' intervals inside [0, 1], bounds
rounded outward.

A variant's mean error rate gets a 1 − α interval only from 3 or more seeds (with fewer, its per-seed
values are shown instead). The interval is the t interval of the mean on the logit scale (the delta method:
se(logit m) = se(m) / (m (1 − m))), mapped back, so it stays inside (0, 1) and is asymmetric near the ends
(as the Wilson interval of a proportion is); where every value is the same it is that value. A lower bound
is rounded down and an upper bound up, so a printed interval always contains the computed one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ablations.analysis.verdicts import ALPHA

MIN_SEEDS_FOR_INTERVAL = 3
RATE_METHOD = "t interval of the mean on the logit scale (delta method), mapped back"


@dataclass(frozen=True)
class RateSummary:
    n: int
    mean: float
    sd: float  # sample standard deviation (NaN under 2 values)
    lo: float  # NaN under 3 values
    hi: float
    values: tuple[float, ...]  # per seed, in seed order when given as a mapping
    method: str = RATE_METHOD

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.lo)


def describe_rate(values: Sequence[float] | Mapping[int, float], alpha: float = ALPHA) -> RateSummary:
    """Mean, sd and (3+ values) the logit-scale interval of an error rate's mean, NaNs dropped."""
    raw = [values[s] for s in sorted(values)] if isinstance(values, Mapping) else list(values)
    v = np.array([x for x in raw if x is not None and not math.isnan(x)], dtype=float)
    if len(v) and (v.min() < 0 or v.max() > 1):
        raise ValueError(f"an error rate is a fraction in [0, 1]; got {v.min()} .. {v.max()}")
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    sd = float(v.std(ddof=1)) if n >= 2 else math.nan
    lo = hi = math.nan
    if n >= MIN_SEEDS_FOR_INTERVAL:
        if sd == 0 or mean in (0.0, 1.0):  # all equal (a mean of 0 or 1 means every value is that)
            lo = hi = mean
        else:
            half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n) / (mean * (1 - mean))
            lo, hi = float(special.expit(special.logit(mean) - half)), float(special.expit(special.logit(mean) + half))
    return RateSummary(n, mean, sd, lo, hi, tuple(float(x) for x in v))


def round_down(x: float, digits: int) -> float:
    """x rounded down to `digits` decimals, forgiving float noise under a millionth of the last digit."""
    k = 10**digits
    return math.floor(round(x * k, 6)) / k


def round_up(x: float, digits: int) -> float:
    k = 10**digits
    return math.ceil(round(x * k, 6)) / k


def fmt_interval(lo: float, hi: float, digits: int = 2, scale: float = 100.0) -> str:
    """'[lo, hi]' times `scale` (100: fractions as %), the lower bound rounded down and the upper up;
    an infinite bound prints as ∞ and a missing interval as ''."""
    if math.isnan(lo) or math.isnan(hi):
        return ""

    def one(x: float, outward) -> str:
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        return f"{outward(x * scale, digits) + 0.0:.{digits}f}"  # + 0.0: no '-0.00'

    return f"[{one(lo, round_down)}, {one(hi, round_up)}]"


def fmt_values(values: Sequence[float], digits: int = 2, scale: float = 100.0, signed: bool = False) -> str:
    """Per-seed values (or differences), shown where there are too few for an interval."""
    sign = "+" if signed else ""
    return ", ".join(f"{x * scale:{sign}.{digits}f}" for x in values)
