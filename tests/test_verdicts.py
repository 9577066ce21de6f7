"""ablations.analysis: each statistic against values worked by hand or computed here by an independent
scipy / statsmodels call (a formula-API OLS, ttest_rel, ttost_paired, multipletests, TTestPower), never
through the package's own code path."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from ablations.analysis import (
    Verdict,
    adjust,
    decide,
    describe_rate,
    detectable_effect,
    effect_curves,
    fit_study,
    fmt_interval,
    levels,
    seed_plan,
    seeds_needed,
    summarise,
)

BASE = {0: 0.300, 1: 0.320, 2: 0.310, 3: 0.330, 4: 0.290, 5: 0.305}


def _study(offsets: dict[str, float], noise: float, seeds: int, rng_seed: int = 0) -> dict[str, dict[int, float]]:
    rng = np.random.default_rng(rng_seed)
    seed_effect = rng.normal(0, noise, seeds)
    return {v: {s: float(0.3 + off + seed_effect[s] + rng.normal(0, noise)) for s in range(seeds)} for v, off in offsets.items()}


def test_two_variants_the_model_is_the_paired_t():
    variant = {0: 0.280, 1: 0.290, 2: 0.300, 3: 0.300, 4: 0.270, 5: 0.290}
    c = fit_study({"base": BASE, "a": variant}, "base").comparisons[0]
    a, b = list(variant.values()), list(BASE.values())
    ref = stats.ttest_rel(a, b)
    assert (c.estimate, c.p, c.df) == (pytest.approx(np.mean(a) - np.mean(b)), pytest.approx(ref.pvalue), ref.df)
    lo, hi = ref.confidence_interval(0.95)
    assert (c.lo, c.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert c.verdict is Verdict.BETTER and c.family == 1 and c.level == pytest.approx(0.95)


def test_pooled_model_delta_and_interval_against_a_formula_fit():
    values = _study({"base": 0.0, "a": 0.004, "b": -0.02, "c": 0.03}, noise=0.008, seeds=5)
    study = fit_study(values, "base")
    assert study.pooled and study.residual_df == 12  # (4 - 1)(5 - 1)
    assert "seed-blocked OLS over 4 variants and 5 seeds, 12 residual df" in study.model
    frame = pd.DataFrame([{"y": x, "variant": v, "seed": s} for v, per in values.items() for s, x in per.items()])
    fit = smf.ols("y ~ C(variant, Treatment('base')) + C(seed)", data=frame).fit()
    adjusted = multipletests([fit.pvalues[f"C(variant, Treatment('base'))[T.{v}]"] for v in "abc"], method="holm")[1]
    for c, p_holm in zip(study.comparisons, adjusted):
        term = f"C(variant, Treatment('base'))[T.{c.variant}]"
        # balanced and complete: the contrast is the difference of the variants' means
        assert c.estimate == pytest.approx(np.mean(list(values[c.variant].values())) - np.mean(list(values["base"].values())))
        assert (c.estimate, c.se, c.p) == (pytest.approx(fit.params[term]), pytest.approx(fit.bse[term]), pytest.approx(fit.pvalues[term]))
        assert c.p_adjusted == pytest.approx(p_holm)
        lo, hi = fit.conf_int(alpha=1 - c.level).loc[term]
        assert (c.lo, c.hi) == (pytest.approx(lo), pytest.approx(hi))
        assert (c.lo > 0 or c.hi < 0) == (c.p_adjusted < 0.05)
    # σ by hand: the two-way residuals' sum of squares over (V - 1)(n - 1)
    Y = np.array([[values[v][s] for s in range(5)] for v in values])
    resid = Y - Y.mean(1, keepdims=True) - Y.mean(0, keepdims=True) + Y.mean()
    assert study.comparisons[0].sd == pytest.approx(math.sqrt(2 * (resid**2).sum() / 12))
    by = {c.variant: c.verdict for c in study.comparisons}
    assert by["b"] is Verdict.BETTER and by["c"] is Verdict.WORSE


def test_unequal_variances_use_each_comparisons_own_pairs():
    rng = np.random.default_rng(3)
    sds = {"base": 0.0076, "quiet": 0.0080, "noisy": 0.183}  # the demo factorial's range: 0.76 to 18.3 points
    values = {v: {s: float(np.clip(0.4 + rng.normal(0, sd), 0, 1)) for s in range(6)} for v, sd in sds.items()}
    study = fit_study(values, "base")
    p = stats.bartlett(*[list(per.values()) for per in values.values()]).pvalue
    assert not study.pooled and study.variance.p == pytest.approx(p) and p < 0.05
    assert "paired t per comparison" in study.model and "variances unequal: Bartlett p" in study.model
    for c in study.comparisons:
        ref = stats.ttest_rel(list(values[c.variant].values()), list(values["base"].values()))
        assert (c.p, c.df) == (pytest.approx(ref.pvalue), 5) and "own 6 pairs" in c.method


def test_tost_against_statsmodels():
    variant = {0: 0.301, 1: 0.318, 2: 0.312, 3: 0.331, 4: 0.288, 5: 0.306}
    c = fit_study({"base": BASE, "a": variant}, "base", delta=0.01).comparisons[0]
    p, _, _ = ttost_paired(np.array(list(variant.values())), np.array(list(BASE.values())), -0.01, 0.01)
    assert c.tost_p == pytest.approx(p)
    # one interval decides: inside ±δ at 95% is TOST at 2.5% a side
    assert c.verdict is Verdict.EQUIVALENT and c.tost_p < 0.025 and c.lo > -0.01 and c.hi < 0.01


def test_decide_by_hand():
    # t(0.975, 10) = 2.2281: 0.03 ± 0.0223 = [0.0077, 0.0523]
    assert decide(0.03, 0.01, 10) is Verdict.WORSE
    assert decide(-0.03, 0.01, 10) is Verdict.BETTER
    assert decide(0.03, 0.01, 10, lower_is_better=False) is Verdict.BETTER
    assert decide(0.001, 0.002, 10) is Verdict.EQUIVALENT  # [-0.0035, 0.0055] inside ±0.01
    assert decide(0.001, 0.005, 10) is Verdict.INCONCLUSIVE  # [-0.0101, 0.0121]
    assert decide(0.03, 0.001, 3) is Verdict.INCONCLUSIVE  # under 4 residual df: no interval
    assert decide(math.nan, 0.01, 10) is Verdict.NOT_MEASURED
    # Bonferroni-like level: at alpha 0.01, t(0.995, 10) = 3.1693: 0.03 ± 0.0317 holds 0
    assert decide(0.03, 0.01, 10, alpha=0.01) is Verdict.INCONCLUSIVE


def test_inconclusive_gives_detectable_effect_and_seeds_needed():
    variant = {0: 0.310, 1: 0.300, 2: 0.330, 3: 0.320, 4: 0.300, 5: 0.320}
    c = fit_study({"base": BASE, "a": variant}, "base").comparisons[0]
    assert c.verdict is Verdict.INCONCLUSIVE
    sd = float(np.std(np.array(list(variant.values())) - np.array(list(BASE.values())), ddof=1))
    assert c.sd == pytest.approx(sd)
    assert c.detectable == pytest.approx(TTestPower().solve_power(nobs=6, alpha=0.05, power=0.8) * sd, rel=1e-6)
    assert c.seeds_needed == seeds_needed(sd, 0.01)


def test_detectable_effect_and_seeds_needed():
    assert detectable_effect(2.0, 8) == pytest.approx(TTestPower().solve_power(nobs=8, alpha=0.05, power=0.8) * 2.0, rel=1e-6)
    n = seeds_needed(1.0, 1.0)
    # the normal approximation by hand: n = ((z 0.975 + z 0.9) sd / δ)^2 = (1.9600 + 1.2816)^2 = 10.5, plus a little for t
    assert 11 <= n <= 13
    # finding δ is the easier half: TTestPower needs fewer seeds for it
    assert TTestPower().power(1.0, n, 0.05) >= 0.8
    # showing equivalence when Δ = 0, simulated: the 95% interval inside ±δ in at least 80% at n, not at n - 1
    rng = np.random.default_rng(0)
    for k, expect in ((n, True), (n - 1, False)):
        d = rng.normal(0, 1.0, (100_000, k))
        half = stats.t.ppf(0.975, k - 1) * d.std(1, ddof=1) / math.sqrt(k)
        inside = np.mean((np.abs(d.mean(1)) + half) < 1.0)
        assert (inside >= 0.8) == expect, (k, inside)
    assert seeds_needed(0.0, 1.0) == 5  # no noise: the fewest seeds with 4 df
    assert seeds_needed(math.nan, 1.0) is None


def test_holm_step_down_levels_by_hand():
    adjusted, alphas = levels([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5: 4 x 0.01 = 0.04 rejects; 3 x 0.03 = 0.09 does not, so the rest are tested at 0.05 / 3
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert alphas == pytest.approx([0.0125, 0.05 / 3, 0.05 / 3, 0.05 / 3])
    assert levels([0.001, 0.002]) == (pytest.approx([0.002, 0.002]), pytest.approx([0.025, 0.05]))
    rng = np.random.default_rng(2)
    for _ in range(8):  # against statsmodels (0.1 s a call: it collects garbage), ties included; a level passes exactly what Holm rejects
        p = list(np.round(rng.uniform(0, 0.06, rng.integers(1, 8)), 3))
        adjusted, alphas = levels(p)
        reject, expected = multipletests(p, alpha=0.05, method="holm")[:2]
        assert adjusted == pytest.approx(list(expected))
        assert [pi <= a for pi, a in zip(p, alphas)] == list(reject)


def test_one_family_across_studies():
    studies = {
        "lrn": {"base": BASE, "lrn": {0: 0.290, 1: 0.300, 2: 0.300, 3: 0.310, 4: 0.280, 5: 0.290}},
        "pool": {"base": BASE, "pool": {0: 0.305, 1: 0.325, 2: 0.310, 3: 0.335, 4: 0.295, 5: 0.310}},
        "drop": {"base": BASE, "drop": {0: 0.330, 1: 0.345, 2: 0.342, 3: 0.360, 4: 0.318, 5: 0.333}},
    }
    comparisons = [c for name, values in studies.items() for c in fit_study(values, "base", study=name).comparisons]
    family = adjust(comparisons)
    raw = [stats.ttest_rel(list(values[name].values()), list(values["base"].values())).pvalue for name, values in studies.items()]
    assert [c.p for c in family] == pytest.approx(raw)
    assert [c.p_adjusted for c in family] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    assert all(c.family == 3 for c in family)
    for c in family:
        assert (c.lo > 0 or c.hi < 0) == (c.p_adjusted < 0.05)
        assert c.level in (pytest.approx(1 - 0.05 / 3), pytest.approx(1 - 0.05 / 2), pytest.approx(0.95))
    assert family[2].verdict is Verdict.WORSE  # drop: +2.6 points in every seed
    with pytest.raises(ValueError, match="once"):
        adjust(comparisons + comparisons[:1])


def test_two_seeds_show_values_not_intervals():
    study = fit_study({"base": {0: 0.30, 1: 0.32}, "a": {0: 0.25, 1: 0.26}}, "base")
    c = study.comparisons[0]
    assert c.verdict is Verdict.INCONCLUSIVE and not c.has_interval and math.isnan(c.detectable)
    assert c.per_seed == (pytest.approx((0, -0.05)), pytest.approx((1, -0.06)))
    assert "no interval from 1 residual degrees of freedom" in c.note
    assert c.family == 0 and math.isnan(c.p_adjusted)  # no verdict possible: in no family
    r = describe_rate({1: 0.32, 0: 0.30})
    assert not r.has_interval and r.values == (0.30, 0.32) and r.mean == pytest.approx(0.31)
    assert fmt_interval(r.lo, r.hi) == ""


def test_a_comparison_with_no_values_is_not_measured():
    c = fit_study({"base": BASE, "a": {0: math.nan}}, "base").comparisons[0]
    assert c.verdict is Verdict.NOT_MEASURED and c.verdict.label == "not measured"


def test_rate_interval_on_the_logit_scale():
    r = describe_rate([0.10, 0.12, 0.14])
    # by hand: mean 0.12, sd 0.02, se 0.011547; t(0.975, 2) = 4.3027; logit(0.12) = -1.99243;
    # half-width 4.30265 * 0.011547 / (0.12 * 0.88) = 0.47048 -> expit(-2.46291) = 0.07850, expit(-1.52195) = 0.17918
    assert (r.mean, r.sd) == (pytest.approx(0.12), pytest.approx(0.02))
    assert (r.lo, r.hi) == (pytest.approx(0.07850, abs=1e-5), pytest.approx(0.17918, abs=1e-5))
    near_zero = describe_rate([0.0, 0.001, 0.004])
    assert 0 < near_zero.lo < near_zero.mean < near_zero.hi < 1  # a t interval on the raw scale would go below 0
    assert describe_rate([0.0, 0.0, 0.0]).lo == 0.0
    with pytest.raises(ValueError):
        describe_rate([12.0, 13.0, 14.0])  # percent, not a fraction


def test_bounds_round_outward():
    assert fmt_interval(0.12344, 0.23451, digits=1) == "[12.3, 23.5]"
    assert fmt_interval(0.1, 0.2) == "[10.00, 20.00]"  # float noise (0.1 * 100 = 10.000000000000002) is not rounded up
    assert fmt_interval(-0.00123, 0.00121) == "[-0.13, 0.13]"
    assert fmt_interval(0.0, 0.00001) == "[0.00, 0.01]"
    assert fmt_interval(2.54, math.inf, scale=1) == "[2.54, ∞]"


def test_seed_plan_per_variant():
    values = _study({"base": 0.0, "a": 0.0, "b": 0.0}, noise=0.01, seeds=4, rng_seed=5)
    plan = {p.variant: p for p in seed_plan(values, "base")}
    study = fit_study(values, "base")
    assert set(plan) == {"a", "b"}
    for c in study.comparisons:
        assert (plan[c.variant].detectable, plan[c.variant].seeds_needed) == (c.detectable, c.seeds_needed)
        assert plan[c.variant].seeds_needed == seeds_needed(c.sd, 0.01, 1 - c.level, df_per_seed=2)


def test_effects_over_epochs():
    rng = np.random.default_rng(1)
    # a variant 3 points worse from epoch 3 on; another 3 points better until epoch 3, then 3 points worse
    offsets = {"base": [0] * 6, "late": [0, 0, 0.03, 0.03, 0.03, 0.03], "flip": [-0.03, -0.03, -0.03, 0.03, 0.03, 0.03]}
    curves = {v: {s: [0.5 - 0.02 * e + off[e] + rng.normal(0, 0.002) for e in range(6)] for s in range(5)} for v, off in offsets.items()}
    by = {c.variant: c for c in effect_curves(curves, "base")}
    assert by["late"].verdicts[2:] == (Verdict.WORSE,) * 4 and by["late"].line == "worse, established from epoch 3"
    assert by["flip"].line == "worse, established from epoch 4; the sign changes at epoch 4"
    at3 = fit_study({v: {s: c[2] for s, c in per.items()} for v, per in curves.items()}, "base").comparison("late")
    assert (by["late"].delta[2], by["late"].lo[2]) == (pytest.approx(at3.estimate), pytest.approx(at3.lo))
    assert summarise((1, 2, 3), (Verdict.BETTER, Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE)) == "inconclusive at the last epoch (better at epoch 1)"
