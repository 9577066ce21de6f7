"""The report's statistics against values computed independently (by hand, or from
the t distribution's tables), and the verdict words they lead to."""

from __future__ import annotations

import math

import pytest

from ablations import tracking
from ablations.analysis.stats import describe, paired, ratio, time_to
from ablations.report.write import RunResult, VariantRow, analyse, render, verdict


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


def test_analyse_and_the_report_words():
    results = [
        _run("a", 0, [0.5, 0.30], [0.6, 0.24], clean=0.20),
        _run("a", 1, [0.5, 0.40], [0.6, 0.30], clean=0.25),
        _run("a", 2, [0.5, 0.50], [0.6, 0.20], clean=0.30),
        _run("b", 0, [0.5, 0.32], [0.6, 0.5], step_err=[(0.5, 0.5), (1.0, 0.3), (1.5, 0.2)]),
        _run("b", 1, [0.5, 0.43], [0.6, 0.5], step_err=[(0.5, 0.5), (1.0, 0.3), (1.5, 0.2)]),
        _run("b", 2, [0.5, 0.51], [0.6, 0.5], step_err=[(0.5, 0.5), (1.0, 0.3), (1.5, 0.2)]),
    ]
    a, b = analyse(results, ["a", "b"], "a")
    assert a.final_err1.mean == pytest.approx(0.4) and a.gap.mean == pytest.approx(0.4 - 0.25)
    assert b.vs_baseline.p_value == pytest.approx(0.0742, abs=1e-4)
    assert verdict(a, "a") == "baseline" and verdict(b, "a") == "within noise (p = 0.074)"
    # epochs to 25%: a crosses between its epoch readings 1 (0.6) and 2 (0.24, 0.30, 0.20), b from its step readings
    assert a.epochs_to_25.n == 2 and a.epochs_to_25.mean == pytest.approx(((1 + 0.35 / 0.36) + (1 + 0.35 / 0.40)) / 2)
    assert b.epochs_to_25.mean == pytest.approx(1.0 + 0.5 * 0.05 / 0.1)
    text = render("x", "", "a", [a, b], {"parent_name": "p", "parent_id": "i", "profile": "smoke", "seeds": "0,1,2"}, [])
    assert "| b | 3 | 42.00 ± 9.54 [18.30, 65.70] | 2.00 ± 1.00 [-0.48, 4.48] |" in text
    assert "its ratio to the baseline's" in text and "{" not in text  # every placeholder filled
    assert "Reproduce: `make ablate-x PROFILE=smoke SEEDS=0,1,2`" in text


def test_a_variant_that_never_reaches_the_target_gets_a_lower_bound_on_its_ratio():
    # the reference reaches 25% in 2.0 and 2.5 epochs; b trains 5 epochs on seed 0 without reaching it
    # (bound 5 / 2 = 2.5) and 10 on seed 1 (bound 10 / 2.5 = 4): every pair's ratio exceeds 2.5
    results = [
        _run("a", 0, [0.5, 0.4], [0.5, 0.25]),
        _run("a", 1, [0.5, 0.4], [0.5, 0.5, 0.2]),
        _run("b", 0, [0.5] * 5, [0.6] * 5),
        _run("b", 1, [0.5] * 10, [0.6] * 10),
    ]
    a, b = analyse(results, ["a", "b"], "a")
    assert a.epochs_to_25.mean == pytest.approx((2.0 + 2 + 0.25 / 0.3) / 2)
    assert b.ratio_epochs.n == 0 and b.censored_pairs == 2
    assert b.ratio_floor == pytest.approx(min(5 / 2.0, 10 / (2 + 0.25 / 0.3)))
    text = render("x", "", "a", [a, b], {"parent_name": "p", "parent_id": "i", "profile": "smoke", "seeds": "0,1"}, [])
    assert f"| b | n/a (0/2 seeds) | > {b.ratio_floor:.2f}x in 2 pairs where only the a reached it |" in text
    # one seed of b reaches it: that pair gives the ratio, the other the bound
    results[2] = _run("b", 0, [0.5] * 3, [0.6, 0.3, 0.2])
    b = analyse(results, ["a", "b"], "a")[1]
    assert b.ratio_epochs.n == 1 and b.censored_pairs == 1 and b.ratio_floor == pytest.approx(10 / (2 + 0.25 / 0.3))


def test_a_real_difference_gets_its_size_and_direction():
    row = VariantRow("b", 3, *[describe([0.1])] * 11)
    row.vs_baseline = paired({0: 0.30, 1: 0.31, 2: 0.32}, {0: 0.20, 1: 0.205, 2: 0.21})
    assert verdict(row, "a").startswith("10.50 points higher error than a (p = ")


def test_a_study_of_several_variants_adjusts_for_how_many_it_compares():
    # three variants against one baseline; differences (by seed) chosen for their paired p-values
    base = {0: 0.30, 1: 0.31, 2: 0.32}
    diffs = {"big": [0.100, 0.105, 0.110], "edge": [0.03, 0.04, 0.06], "none": [0.01, -0.02, 0.015]}
    results = [_run("a", s, [0.5, v], [0.6, 0.2]) for s, v in base.items()]
    results += [_run(name, s, [0.5, base[s] + d[s]], [0.6, 0.2]) for name, d in diffs.items() for s in base]
    rows = {r.variant: r for r in analyse(results, ["a", *diffs], "a")}
    p = {name: rows[name].vs_baseline.p_value for name in diffs}
    assert p["big"] < 0.01 and 0.02 < p["edge"] < 0.05 and p["none"] > 0.3  # "edge" is real on its own
    # Holm's step-down, written out: the k-th smallest p times (m - k + 1), kept non-decreasing
    ordered = sorted(p, key=p.get)
    expected, running = {}, 0.0
    for k, name in enumerate(ordered):
        running = max(running, min(1.0, (3 - k) * p[name]))
        expected[name] = running
    for name in diffs:
        assert rows[name].vs_baseline.p_adjusted == pytest.approx(expected[name]) and rows[name].vs_baseline.family == 3
    assert expected["edge"] >= 0.05  # so correcting turns it into noise
    assert verdict(rows["big"], "a").startswith("10.50 points higher error than a (p = ")
    assert verdict(rows["edge"], "a") == f"within noise (p = {p['edge']:.2g}, adjusted {expected['edge']:.2g} for 3 comparisons)"
    assert not rows["big"].vs_baseline.within_noise and rows["edge"].vs_baseline.within_noise


def test_errors_with_batchnorm_statistics_recomputed_get_their_own_comparison():
    # as trained, stale statistics add noise that hides b's 5 points; recomputed, they show
    stale, recomputed = {0: 0.40, 1: 0.55, 2: 0.45}, {0: 0.30, 1: 0.31, 2: 0.32}
    results = [_run("a", s, [0.5, stale[s]], [0.6, 0.2], precise_bn={tracking.PRECISE_BN_VAL_ERR: v}) for s, v in recomputed.items()]
    results += [_run("b", s, [0.5, stale[2 - s]], [0.6, 0.2], precise_bn={tracking.PRECISE_BN_VAL_ERR: v + 0.05}) for s, v in recomputed.items()]
    a, b = analyse(results, ["a", "b"], "a")
    assert b.precise_bn_err1.mean == pytest.approx(0.36) and b.precise_bn_train_err1.n == 0
    assert verdict(b, "a").startswith("within noise")
    assert verdict(b, "a", precise_bn=True).startswith("5.00 points higher error than a (p = ")
    text = render("x", "", "a", [a, b], {"parent_name": "p", "parent_id": "i", "profile": "smoke", "seeds": "0,1,2"}, [])
    assert "## With BatchNorm's statistics recomputed" in text and "| b | 46.67 ± 7.64 [27.69, 65.64] | 36.00 ± 1.00" in text
    # without the measurement the section is left out
    assert "recomputed" not in render(
        "x", "", "a", analyse([_run("a", 0, [0.5], [0.6])], ["a"], "a"), {"parent_name": "p", "parent_id": "i", "profile": "", "seeds": "0"}, []
    )
