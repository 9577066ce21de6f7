"""The report's statistics against values computed independently (by hand, or from
the t distribution's tables), and the verdict words they lead to."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ablations import tracking
from ablations.analysis.records import RunResult
from ablations.analysis.stats import describe, paired, ratio, time_to
from ablations.analysis.study import analyse_study
from ablations.analysis.verdicts import Verdict
from ablations.report.write import render


def test_mean_sd_and_t_interval():
    s = describe([0.1, 0.2, 0.3])
    assert s.n == 3
    assert s.mean == pytest.approx(0.2)
    assert s.std == pytest.approx(0.1)
    # t(0.975, 2) = 4.3027: half-width 4.3027 * 0.1 / sqrt(3) = 0.2484
    assert (s.lo, s.hi) == (pytest.approx(-0.0484, abs=1e-4), pytest.approx(0.4484, abs=1e-4))
    assert s.fmt() == "20.00 ± 10.00 [-4.84, 44.84]"


def test_describe_drops_nans_and_handles_one_value():
    assert describe([0.3, math.nan]).n == 1 and describe([0.3, math.nan]).fmt() == "30.00"
    assert describe([]).fmt() == "n/a"


def test_paired_t_test():
    baseline = {0: 0.30, 1: 0.40, 2: 0.50}
    variant = {0: 0.32, 1: 0.43, 2: 0.51}  # differences 0.02, 0.03, 0.01
    c = paired(variant, baseline)
    assert c.diff.mean == pytest.approx(0.02)
    # t = 0.02 / (0.01 / sqrt(3)) = 3.464, two-sided p with 2 degrees of freedom = 0.0742
    assert c.p_value == pytest.approx(0.0742, abs=1e-4)
    assert c.within_noise


def test_pairing_is_by_seed():
    baseline = {0: 0.30, 1: 0.40, 2: 0.50}
    variant = {0: 0.32, 1: 0.43, 2: 0.51}
    wrong = {0: variant[1], 1: variant[2], 2: variant[0]}  # the same values under other seeds
    assert paired(wrong, baseline).p_value != pytest.approx(paired(variant, baseline).p_value, abs=1e-3)
    assert paired({0: 0.3}, {0: 0.2}) is None  # one pair: no test
    assert paired({0: 0.3, 5: 0.4}, {0: 0.2, 6: 0.1}) is None  # no common seeds beyond one


def test_a_clear_difference_is_not_noise():
    c = paired({0: 0.30, 1: 0.31, 2: 0.32}, {0: 0.20, 1: 0.205, 2: 0.21})
    assert c.p_value < 0.05 and not c.within_noise and c.diff.lo > 0


def test_time_to_a_target():
    assert time_to(list(enumerate([0.9, 0.5, 0.25, 0.2], start=1)), 0.25) == 3
    assert math.isnan(time_to(list(enumerate([0.3, 0.26], start=1)), 0.25))
    # between readings: the straight line from (2, 0.5) to (3, 0.2) reaches 0.25 at 2 + 0.25 / 0.3
    assert time_to([(1, 0.9), (2, 0.5), (3, 0.2)], 0.25) == pytest.approx(2 + 0.25 / 0.3)
    assert time_to([(0.5, 0.2), (1.0, 0.1)], 0.25) == 0.5  # already below at the first reading


def test_ratio_of_times():
    # per-seed ratios 2, 2, 2: geometric mean 2 with no spread
    r = ratio({0: 2.0, 1: 4.0, 2: 6.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert (r.mean, r.lo, r.hi) == (pytest.approx(2.0), pytest.approx(2.0), pytest.approx(2.0))
    # ratios 1 and 4: geometric mean 2; log ratios 0 and ln 4, sd ln4/sqrt2; t(0.975, 1) = 12.706
    r = ratio({0: 1.0, 1: 4.0}, {0: 1.0, 1: 1.0})
    half = 12.7062 * (math.log(4) / math.sqrt(2)) / math.sqrt(2)
    assert r.mean == pytest.approx(2.0)
    assert (r.lo, r.hi) == (pytest.approx(math.exp(math.log(2) - half), rel=1e-3), pytest.approx(math.exp(math.log(2) + half), rel=1e-3))


def _run(variant, seed, val, train, clean=math.nan, step_err=(), precise_bn=None):
    curves = {"val_err1": val, "train_err1": train, "val_err5": val}
    return RunResult(variant, seed, f"{variant}{seed}", curves, list(step_err), clean, precise_bn=precise_bn or {})


META = {"parent_name": "p", "parent_id": "i", "profile": "smoke", "seeds": "0,1,2", "store": "sqlite:///x.db", "log": True}


def _study(results, order, metric="val_err1", delta=0.01):
    return analyse_study("x", results, order, order[0], {}, metric, delta)


def test_analyse_and_the_report_words():
    results = [
        _run("a", 0, [0.5, 0.30], [0.6, 0.24], clean=0.20),
        _run("a", 1, [0.5, 0.40], [0.6, 0.30], clean=0.25),
        _run("a", 2, [0.5, 0.50], [0.6, 0.20], clean=0.30),
        _run("b", 0, [0.5, 0.32], [0.6, 0.5], step_err=[(0.5, 0.5), (1.0, 0.3), (1.5, 0.2)]),
        _run("b", 1, [0.5, 0.43], [0.6, 0.5], step_err=[(0.5, 0.5), (1.0, 0.3), (1.5, 0.2)]),
        _run("b", 2, [0.5, 0.51], [0.6, 0.5], step_err=[(0.5, 0.5), (1.0, 0.3), (1.5, 0.2)]),
    ]
    result = _study(results, ["a", "b"])
    a, b = result.row("a"), result.row("b")
    assert a.final_err1.mean == pytest.approx(0.4) and a.gap.mean == pytest.approx(0.4 - 0.25)
    c = result.primary.comparison("b")
    assert c.p == pytest.approx(scipy_stats.ttest_rel([0.32, 0.43, 0.51], [0.30, 0.40, 0.50]).pvalue)
    # 3 pairs: 2 df, under the 4 an interval needs: inconclusive, with the per-seed differences shown
    assert c.verdict is Verdict.INCONCLUSIVE and not c.has_interval
    # epochs to 25%: a crosses between its epoch readings 1 (0.6) and 2 (0.24, 0.30, 0.20), b from its step readings
    assert a.reached == 2 and a.epochs_to.mean == pytest.approx(((1 + 0.35 / 0.36) + (1 + 0.35 / 0.40)) / 2)
    assert b.epochs_to.mean == pytest.approx(1.0 + 0.5 * 0.05 / 0.1)
    text = render("x", "", result, META, [], [])
    # the mean's interval on the logit scale, written out: t(0.975, 2) sd / sqrt(n) / (m (1 - m)) around logit(m)
    half = scipy_stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3) / (0.4 * 0.6)
    lo, hi = (100 / (1 + math.exp(-(math.log(0.4 / 0.6) + k * half))) for k in (-1, 1))
    assert f"| a | 3 | 40.00 ± 10.00 [{math.floor(lo * 100) / 100:.2f}, {math.ceil(hi * 100) / 100:.2f}] |" in text
    assert "+2.00 (per seed: +2.00, +3.00, +1.00) | inconclusive: no interval from 2 residual degrees of freedom" in text
    assert "{" not in text  # every placeholder filled
    assert "Reproduce: `make ablate-x PROFILE=smoke SEEDS=0,1,2`" in text


def test_a_two_seed_study_shows_per_seed_values_and_no_interval():
    results = [_run(v, s, [0.5, x], [0.6, 0.2]) for (v, s), x in {("a", 0): 0.30, ("a", 1): 0.50, ("b", 0): 0.35, ("b", 1): 0.60}.items()]
    text = render("x", "", _study(results, ["a", "b"]), META, [], [])
    assert "| a | 2 | 40.00 (seeds: 30.00, 50.00) |" in text and "| b | 2 | 47.50 (seeds: 35.00, 60.00) |" in text
    assert "+7.50 (per seed: +5.00, +10.00) | inconclusive" in text and "±" not in text.split("| a | 2 |")[1].split("\n")[0]


def test_a_seed_that_never_reaches_the_target_is_censored_not_dropped():
    # the reference reaches 25% in 2.0, 2.0 and 2.5 epochs; b in 3.0 and 3.0 on two seeds and never in 10 on the third
    results = [_run("a", s, [0.5] * 3, [0.5, 0.25] if s < 2 else [0.5, 0.5, 0.2]) for s in range(3)]
    results += [_run("b", s, [0.5] * 3, [0.6, 0.6, 0.25]) for s in range(2)] + [_run("b", 2, [0.5] * 10, [0.6] * 10)]
    b = _study(results, ["a", "b"], metric="epochs_to_train_err", delta=1.1).row("b")
    assert (b.reached, b.n, b.ratio.reached, b.ratio.ref_reached) == (2, 3, 2, 3)
    dropped = 3.0 / math.exp(np.mean(np.log([2.0, 2.0, 2 + 0.25 / 0.3])))  # the ratio if the censored seed were left out
    assert b.ratio.ratio > dropped  # the censored seed pulls the ratio up, as it must
    text = render("x", "", _study(results, ["a", "b"], metric="epochs_to_train_err", delta=1.1), META, [], [])
    assert "(2/3 reached)" in text and "(2/3 vs 3/3 reached)" in text


def test_a_study_of_several_variants_is_one_model_and_one_family():
    rng = np.random.default_rng(3)
    base = {s: 0.30 + 0.02 * rng.standard_normal() for s in range(6)}
    shift = {"big": 0.10, "none": 0.0, "small": 0.002}
    results = [_run("a", s, [0.5, v], [0.6, 0.2]) for s, v in base.items()]
    results += [_run(n, s, [0.5, base[s] + d + 0.005 * rng.standard_normal()], [0.6, 0.2]) for n, d in shift.items() for s in base]
    result = _study(results, ["a", *shift])
    assert result.primary.pooled and result.primary.residual_df == (4 - 1) * (6 - 1)
    big = result.primary.comparison("big")
    assert big.verdict is Verdict.WORSE and big.family == 3
    text = render("x", "", result, META, [], [])
    assert "| big | 6 |" in text and "**worse**" in text and "Holm over 3" in text


def test_errors_with_batchnorm_statistics_recomputed_get_their_own_comparison():
    # as trained, stale statistics add noise that hides b's 5 points; recomputed, they show
    stale = {0: 0.40, 1: 0.55, 2: 0.45, 3: 0.35, 4: 0.50}
    recomputed = {0: 0.30, 1: 0.31, 2: 0.32, 3: 0.305, 4: 0.315}
    results = [_run("a", s, [0.5, stale[s]], [0.6, 0.2], precise_bn={tracking.PRECISE_BN_VAL_ERR: v}) for s, v in recomputed.items()]
    results += [_run("b", s, [0.5, stale[4 - s]], [0.6, 0.2], precise_bn={tracking.PRECISE_BN_VAL_ERR: v + 0.05}) for s, v in recomputed.items()]
    result = _study(results, ["a", "b"])
    assert result.primary.comparison("b").verdict is Verdict.INCONCLUSIVE
    assert result.precise_bn.comparison("b").verdict is Verdict.WORSE
    text = render("x", "", result, META, [], [])
    assert "## With BatchNorm's statistics recomputed" in text
    # without the measurement the section is left out
    assert "recomputed" not in render("x", "", _study([_run("a", 0, [0.5], [0.6])], ["a"]), META, [], [])


def test_an_adaptive_study_takes_its_verdicts_from_the_sequential_rule():
    from ablations.analysis.sequential import SeedBounds, next_round

    rng = np.random.default_rng(5)
    base = {s: 0.30 + 0.02 * rng.standard_normal() for s in range(5)}
    values = {"a": base, "b": {s: v + 0.05 + 0.003 * rng.standard_normal() for s, v in base.items()}}
    results = [_run(v, s, [0.5, x], [0.6, 0.2]) for v, per in values.items() for s, x in per.items()]
    result = analyse_study("x", results, ["a", "b"], "a", {}, "val_err1", 0.01, adaptive=SeedBounds(5, 8))
    expected = next_round(values, "a", SeedBounds(5, 8), delta=0.01, study="x", metric="val_err1").comparisons[0]
    got = result.primary.comparison("b")
    assert (got.verdict, got.lo, got.hi) == (expected.verdict, expected.lo, expected.hi) and got.verdict is Verdict.WORSE
    assert "adaptive seeds (5 to 8)" in result.primary.model and "O'Brien–Fleming" in result.primary.model
