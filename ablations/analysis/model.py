"""One model per study: every variant's runs in one seed-blocked linear model.

y[v, s] = μ + a[v] + b[s] + e, e ~ N(0, σ²), fitted by ordinary least squares (statsmodels OLS) over all
the study's runs: the seed is a block (seed s is the same data order and initialisation seed in every
variant), and σ, the seed-to-seed noise, is estimated from every variant, not from one pair. A comparison's
Δ is the contrast a[variant] − a[reference] (statsmodels `t_test`), on the model's residual degrees of
freedom: (V − 1)(n − 1) for V variants over n complete seeds. With two variants it is the paired t-test.

Pooling assumes the variants are about equally noisy. Bartlett's test (1937) of equal variances across the
variants' values (scipy) checks it, before the model is fitted: seeds are not independent across variants,
and a shared seed effect makes it conservative (simulated, 3 to 8 variants over 3 to 10 seeds: 0.3 to 4.9% at 5%). Where it
rejects at 5%, or the model cannot tell the variants apart (a variant sharing no seed with the rest), each
comparison uses only its own pairs and their own variance: the paired t, n − 1 degrees of freedom, and the
method says so. Bartlett's test, not Levene's: with 3 seeds a variant, Levene's test on the blocked model's
residuals never rejects when centred on medians and rejects up to 20% of equal variances when centred on
means (simulated); Bartlett's is the test of normal variances, and a divergent seed (non-normal) is a reason
not to pool anyway.

Then the study's comparisons form one family (`family.adjust`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ablations.analysis.family import RULE, adjust
from ablations.analysis.verdicts import ALPHA, DELTA, MIN_DF, Comparison, Estimate, not_measured
from ablations.analysis.verdicts import compare as one_comparison

Values = Mapping[str, Mapping[int, float]]  # variant -> seed -> value
VARIANCE_ALPHA = 0.05


@dataclass(frozen=True)
class VarianceCheck:
    pooled: bool  # the study's comparisons share the model's variance
    p: float  # Bartlett's p (NaN: not tested)
    sds: tuple[tuple[str, float], ...]  # per variant, the standard deviation of its values
    method: str


@dataclass(frozen=True)
class StudyAnalysis:
    baseline: str
    comparisons: tuple[Comparison, ...]
    model: str  # which model, with its degrees of freedom
    pooled: bool
    residual_df: float  # the pooled model's (NaN where each comparison has its own)
    variance: VarianceCheck
    delta: float
    alpha: float
    family_rule: str = RULE

    def comparison(self, variant: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.variant == variant), None)


def clean(values: Values) -> dict[str, dict[int, float]]:
    """Without NaN (or None) values, and without variants left empty."""
    out = {v: {int(s): float(x) for s, x in per.items() if x is not None and not math.isnan(x)} for v, per in values.items()}
    return {v: per for v, per in out.items() if per}


def variance_check(values: Values, alpha: float = VARIANCE_ALPHA) -> VarianceCheck:
    """Whether the variants' values are about equally noisy (Bartlett's test, variants with 2+ values)."""
    from scipy import stats

    data = clean(values)
    groups = {v: np.array(list(per.values())) for v, per in data.items() if len(per) >= 2}
    sds = tuple((v, float(g.std(ddof=1))) for v, g in groups.items())
    if len(groups) < 3:
        return VarianceCheck(True, math.nan, sds, "two variants: the paired t" if len(groups) == 2 else "nothing to check")
    if all(sd == 0 for _, sd in sds):
        return VarianceCheck(True, math.nan, sds, "every variant's values are constant")
    if any(sd == 0 for _, sd in sds):
        return VarianceCheck(False, 0.0, sds, "variances unequal: a variant's values are all the same, others vary")
    p = float(stats.bartlett(*groups.values()).pvalue)
    lo, hi = min(sd for _, sd in sds), max(sd for _, sd in sds)
    words = "variances about equal" if p >= alpha else "variances unequal"
    return VarianceCheck(p >= alpha, p, sds, f"{words}: Bartlett p = {p:.2g} over {len(groups)} variants, sd {lo:.3g} to {hi:.3g}")


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[tuple[int, float], ...]:
    return tuple((s, a[s] - b[s]) for s in sorted(set(a) & set(b)))


def _own_pairs(diffs: tuple[tuple[int, float], ...]) -> tuple[Estimate, float]:
    d = np.array([x for _, x in diffs])
    n = len(d)
    if n < 2:
        return Estimate(float(d.mean()) if n else math.nan, math.nan, max(n - 1, 0)), math.nan
    sd = float(d.std(ddof=1))
    return Estimate(float(d.mean()), sd / math.sqrt(n), n - 1), sd


def _design(data: dict[str, dict[int, float]]):
    variants = list(data)
    seeds = sorted({s for per in data.values() for s in per})
    rows = [(i, seeds.index(s), x) for i, v in enumerate(variants) for s, x in data[v].items()]
    X = np.zeros((len(rows), len(variants) + len(seeds) - 1))
    X[:, 0] = 1.0
    y = np.empty(len(rows))
    for r, (i, j, x) in enumerate(rows):
        if i:
            X[r, i] = 1.0
        if j:
            X[r, len(variants) - 1 + j] = 1.0
        y[r] = x
    return variants, seeds, X, y


def _pooled(data: dict[str, dict[int, float]]):
    """The seed-blocked OLS fit, or None when it cannot separate the variants or has no residual df."""
    import statsmodels.api as sm

    variants, seeds, X, y = _design(data)
    if np.linalg.matrix_rank(X) < X.shape[1] or len(y) - X.shape[1] < 1:
        return None
    return variants, seeds, sm.OLS(y, X).fit()


def _contrast(fit, variants: list[str], a: str, b: str) -> Estimate:
    L = np.zeros(len(fit.params))
    for v, sign in ((a, 1.0), (b, -1.0)):
        i = variants.index(v)
        if i:
            L[i] += sign
    t = fit.t_test(L)
    return Estimate(float(np.squeeze(t.effect)), float(np.squeeze(t.sd)), float(fit.df_resid))


def fit_study(
    values: Values,
    baseline: str,
    compare: Mapping[str, str] | None = None,
    delta: float = DELTA,
    alpha: float = ALPHA,
    *,
    study: str = "",
    metric: str = "",
    lower_is_better: bool = True,
    min_df: int = MIN_DF,
) -> StudyAnalysis:
    """Every variant but the baseline against its reference (the baseline, or `compare[variant]`),
    from one seed-blocked model of the whole study where the variances allow, adjusted as one family."""
    data = clean(values)
    refs = {v: (compare or {}).get(v, baseline) for v in values if v != baseline}
    check = variance_check(data)
    fitted = _pooled(data) if check.pooled and len(data) >= 2 else None
    if fitted is not None:
        variants, seeds, fit = fitted
        df = float(fit.df_resid)
        two = len(variants) == 2
        model = (f"paired t (the seed-blocked model of two variants), {df:g} df" if two else
                 f"seed-blocked OLS over {len(variants)} variants and {len(seeds)} seeds, {df:g} residual df ({check.method})")  # fmt: skip
        sd, per_seed_df = math.sqrt(2 * fit.mse_resid), float(len(variants) - 1)
    else:
        df, sd, per_seed_df = math.nan, math.nan, 1.0
        why = check.method if not check.pooled else "the seed-blocked model cannot separate the variants"
        model = f"paired t per comparison, each on its own pairs' variance ({why})"
    out = []
    for v, ref in refs.items():
        if v not in data or ref not in data:
            missing = v if v not in data else ref
            out.append(not_measured(v, ref, delta, model, study, metric, f"no values for {missing}"))
            continue
        diffs = _paired(data[v], data[ref])
        if fitted is not None:
            est, this_sd, method = _contrast(fit, variants, v, ref), sd, model
        else:
            est, this_sd = _own_pairs(diffs)
            method = f"paired t on its own {len(diffs)} pairs, {max(len(diffs) - 1, 0)} df" + (f" ({check.method})" if not check.pooled else "")
        if not diffs and fitted is None:
            out.append(not_measured(v, ref, delta, method, study, metric, f"no seed with values for both {v} and {ref}"))
            continue
        out.append(one_comparison(v, ref, est, n=len(diffs), delta=delta, method=method, alpha=alpha, sd=this_sd, per_seed=diffs, df_per_seed=per_seed_df,
                           study=study, metric=metric, lower_is_better=lower_is_better, min_df=min_df))  # fmt: skip
    comparisons = adjust(out, alpha, lower_is_better, min_df)
    return StudyAnalysis(baseline, tuple(comparisons), model, fitted is not None, df, check, delta, alpha)


@dataclass(frozen=True)
class SeedPlan:
    variant: str
    reference: str
    seeds: int  # pairs so far
    sd: float  # of a per-seed difference, as the study's model estimates it
    detectable: float  # the smallest |Δ| these seeds find with 80% power (NaN: no interval yet)
    seeds_needed: int | None  # about how many seeds settle ±δ with 80% power
    delta: float
    method: str


def seed_plan(values: Values, baseline: str, compare: Mapping[str, str] | None = None, delta: float = DELTA, alpha: float = ALPHA) -> list[SeedPlan]:
    """Per variant, what its seeds can detect and about how many would settle ±δ (`power`), from the study's model."""
    study = fit_study(values, baseline, compare, delta, alpha)
    return [SeedPlan(c.variant, c.reference, c.n, c.sd, c.detectable, c.seeds_needed, delta, c.method) for c in study.comparisons]
