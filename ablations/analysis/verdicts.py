"""Four verdicts, each read off one interval: better, worse, equivalent, inconclusive (and not measured).

A comparison's Δ is variant − reference on a scale where lower is better (an error rate as a fraction, or
the log of a time ratio). Its `Estimate` gives a statistic that follows Student's t for any hypothesised
Δ = b: (Δ̂ − b) / se for a t-based fit, or a calibrated profile-likelihood root (`censored`). From it, one
two-sided interval at the comparison's level (1 − α_i, α_i from `family.adjust`) decides everything:

- better / worse: the interval excludes zero (⇔ the two-sided p is below α_i);
- equivalent: the interval lies inside (−δ, +δ), δ the smallest effect that matters. This is Schuirmann's
  (1987) two one-sided tests, each at α_i / 2: the conventional TOST at α uses the (1 − 2α) interval and is
  less strict; one interval for every verdict lets a reader check each verdict against the numbers printed;
- inconclusive: neither, or too few degrees of freedom for an interval (fewer than `MIN_DF`);
- not measured: no values to compare.

A Δ whose interval both excludes zero and lies inside ±δ is called better / worse (the direction is
established); `Comparison.within_delta` says that it is also smaller than δ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from scipy import stats

ALPHA = 0.05
DELTA = 0.01  # one point of error: the default smallest effect that matters, for error rates as fractions
DELTA_LOG_RATIO = math.log(1.1)  # the default for times to a target: a ratio within 1/1.1 .. 1.1
MIN_DF = 4  # no Δ interval (so no verdict but inconclusive) from fewer residual degrees of freedom
POWER = 0.8


class Verdict(Enum):
    BETTER = "better"
    WORSE = "worse"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"
    NOT_MEASURED = "not measured"

    @property
    def label(self) -> str:
        return self.value

    @property
    def decided(self) -> bool:
        return self in (Verdict.BETTER, Verdict.WORSE, Verdict.EQUIVALENT)


@dataclass(frozen=True)
class Estimate:
    """Δ̂ with what it takes to test any Δ = b: a standard error and t degrees of freedom, or (for
    likelihood fits) `statistic(b)`, t_df-distributed, decreasing in b, and `interval_fn(alpha)`."""

    value: float
    se: float
    df: float
    statistic: Callable[[float], float] | None = field(default=None, repr=False, compare=False)
    interval_fn: Callable[[float], tuple[float, float]] | None = field(default=None, repr=False, compare=False)

    def t(self, b: float = 0.0) -> float:
        if self.statistic is not None:
            return self.statistic(b)
        if self.se == 0:
            return math.copysign(math.inf, self.value - b) if self.value != b else 0.0
        return (self.value - b) / self.se

    def p(self) -> float:
        """Two-sided p for Δ = 0."""
        if not self.df >= 1 or math.isnan(self.t(0.0)):
            return math.nan
        return float(2 * stats.t.sf(abs(self.t(0.0)), self.df))

    def tost_p(self, delta: float) -> float:
        """Schuirmann's two one-sided tests of |Δ| >= δ: the larger of the two one-sided p."""
        if not self.df >= 1:
            return math.nan
        p_low = stats.t.sf(self.t(-delta), self.df)  # H0: Δ <= -δ
        p_high = stats.t.cdf(self.t(delta), self.df)  # H0: Δ >= +δ
        return float(max(p_low, p_high))

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided 1 − alpha interval of Δ."""
        if not self.df >= 1:
            return math.nan, math.nan
        if self.interval_fn is not None:
            return self.interval_fn(alpha)
        half = float(stats.t.ppf(1 - alpha / 2, self.df)) * self.se
        return self.value - half, self.value + half


def verdict_from_interval(lo: float, hi: float, delta: float, lower_is_better: bool = True) -> Verdict:
    """The verdict an interval of Δ (variant − reference) gives; NaN bounds give inconclusive."""
    if math.isnan(lo) or math.isnan(hi):
        return Verdict.INCONCLUSIVE
    if lo > 0 or hi < 0:
        return Verdict.WORSE if (lo > 0) == lower_is_better else Verdict.BETTER
    if -delta < lo and hi < delta:
        return Verdict.EQUIVALENT
    return Verdict.INCONCLUSIVE


def decide(estimate: float, se: float, df: float, delta: float = DELTA, alpha: float = ALPHA, lower_is_better: bool = True, min_df: int = MIN_DF) -> Verdict:
    """The verdict on Δ̂ ± t(1 − alpha/2, df)·se; inconclusive below `min_df` degrees of freedom. For any
    t-based estimate, e.g. a factorial effect (pass the Holm-consistent alpha from `family.levels`)."""
    if math.isnan(estimate):
        return Verdict.NOT_MEASURED
    if not df >= min_df or math.isnan(se):
        return Verdict.INCONCLUSIVE
    lo, hi = Estimate(estimate, se, df).interval(alpha)
    return verdict_from_interval(lo, hi, delta, lower_is_better)


@dataclass(frozen=True)
class Comparison:
    """A variant against its reference: Δ (variant − reference), its interval at `level`, the verdict,
    and what the seeds could detect. Errors as fractions; times to a target as log ratios."""

    variant: str
    reference: str
    n: int  # pairs: seeds with a value for both
    estimate: float
    se: float
    df: float
    lo: float  # at `level`; NaN where no interval is shown
    hi: float
    level: float  # the interval's confidence, 1 − α_i
    p: float  # two-sided, unadjusted
    p_adjusted: float  # Holm, over `family` comparisons
    family: int
    tost_p: float
    delta: float
    verdict: Verdict
    detectable: float  # the smallest |Δ| these seeds detect with 80% power at α_i (NaN: not computable)
    seeds_needed: int | None  # about how many seeds settle ±δ (80% power); None: not computable
    method: str
    sd: float = math.nan  # the standard deviation of a per-seed difference, as the model estimates it
    per_seed: tuple[tuple[int, float], ...] = ()  # (seed, difference): what to show where no interval is
    df_per_seed: float = 1.0  # residual df the model gains per added seed (paired t: 1; seed-blocked, V variants: V − 1)
    study: str = ""
    metric: str = ""
    note: str = ""
    fit: Estimate | None = field(default=None, repr=False, compare=False)

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    @property
    def within_delta(self) -> bool:
        return self.has_interval and -self.delta < self.lo and self.hi < self.delta

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.study, self.metric, self.variant, self.reference


def not_measured(variant: str, reference: str, delta: float, method: str, study: str = "", metric: str = "", note: str = "") -> Comparison:
    nan = math.nan
    return Comparison(variant, reference, 0, nan, nan, nan, nan, nan, nan, nan, nan, 0, nan, delta, Verdict.NOT_MEASURED, nan, None, method,
                      study=study, metric=metric, note=note)  # fmt: skip


def compare(
    variant: str,
    reference: str,
    fit: Estimate,
    *,
    n: int,
    delta: float,
    method: str,
    alpha: float = ALPHA,
    sd: float = math.nan,
    per_seed: tuple[tuple[int, float], ...] = (),
    df_per_seed: float = 1.0,
    study: str = "",
    metric: str = "",
    lower_is_better: bool = True,
    min_df: int = MIN_DF,
) -> Comparison:
    """A comparison on its own (a family of one, its interval at 1 − alpha); `family.adjust` puts it in a family."""
    p = fit.p()
    c = Comparison(variant, reference, n, fit.value, fit.se, fit.df, math.nan, math.nan, 1 - alpha, p, p, 1, fit.tost_p(delta), delta,
                   Verdict.INCONCLUSIVE, math.nan, None, method, sd, per_seed, df_per_seed, study, metric, fit=fit)  # fmt: skip
    return at_level(c, alpha, p, 1, lower_is_better=lower_is_better, min_df=min_df)


def at_level(c: Comparison, alpha_i: float, p_adjusted: float, family: int, lower_is_better: bool = True, min_df: int = MIN_DF) -> Comparison:
    """The comparison with its interval, verdict, detectable effect and seeds needed at level 1 − alpha_i."""
    from ablations.analysis.power import detectable_from_se, seeds_needed

    if c.verdict is Verdict.NOT_MEASURED or c.fit is None:
        return replace(c, family=family, p_adjusted=p_adjusted)
    fit = c.fit
    note = c.note
    if fit.df >= min_df:
        lo, hi = fit.interval(alpha_i)
        verdict = verdict_from_interval(lo, hi, c.delta, lower_is_better)
    else:
        lo = hi = math.nan
        verdict = Verdict.INCONCLUSIVE
        note = note or f"no interval from {_df_text(fit.df)} residual degrees of freedom (at least {min_df} needed)"
    se = fit.se
    if math.isnan(se) and fit.df >= 1 and math.isfinite(lo) and math.isfinite(hi):  # a likelihood interval: its t-equivalent se
        se = (hi - lo) / (2 * float(stats.t.ppf(1 - alpha_i / 2, fit.df)))
    detectable = detectable_from_se(se, fit.df, alpha_i) if fit.df >= min_df else math.nan
    sd = c.sd if not math.isnan(c.sd) else se * math.sqrt(c.n) if c.n else math.nan
    needed = seeds_needed(sd, c.delta, alpha_i, df_per_seed=c.df_per_seed, min_df=min_df) if fit.df >= 1 else None
    return replace(c, lo=lo, hi=hi, level=1 - alpha_i, p_adjusted=p_adjusted, family=family, verdict=verdict, detectable=detectable,
                   seeds_needed=needed, sd=sd, note=note)  # fmt: skip


def _df_text(df: float) -> str:
    return f"{df:g}" if not math.isnan(df) else "no"
