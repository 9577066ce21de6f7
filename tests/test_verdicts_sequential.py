"""ablations.analysis.sequential: adaptive seeds. The spending function by hand, the boundaries against
the published Lan–DeMets table, and simulated studies (no training; seeded, vectorised): the error rate
across repeated looks, the power at a planted effect of δ, and the runs against a fixed design."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from ablations.analysis import SeedBounds, Verdict, next_round, replay, runs
from ablations.analysis.sequential import CODES, looks, nominal_levels, spent

BOUNDS = SeedBounds(3, 10)
STUDIES = 4000


def _null_or_planted(rng, variants: int, effect: float, sd_diff: float) -> np.ndarray:
    """Per-seed differences variant − baseline: each run's noise sd_diff / √2, the baseline's shared."""
    noise = sd_diff / math.sqrt(2)
    base = rng.normal(0, noise, (STUDIES, 1, BOUNDS.max))
    return rng.normal(effect, noise, (STUDIES, variants, BOUNDS.max)) - base


def test_spending_by_hand():
    # α(t) = 4 (1 − Φ(z_{1 − α/4} / √t)); z_0.9875 = 2.24140; at t = 1/2: 4 (1 − Φ(3.16983)) = 4 x 0.000763 = 0.00305
    assert float(spent(0.5)) == pytest.approx(0.00305, abs=1e-5)
    assert float(spent(1.0)) == pytest.approx(0.05)
    assert looks(BOUNDS) == (5, 6, 7, 8, 9, 10)  # no interval from under 4 df
    assert looks(SeedBounds(6, 10)) == (6, 7, 8, 9, 10)


def test_boundaries_match_the_published_table_when_seeds_are_many():
    # Lan–DeMets O'Brien–Fleming, two-sided 5%, 5 equal looks (Jennison & Turnbull 2000, table 7.6; R ldbounds):
    # z = 4.8769, 3.3569, 2.6803, 2.2898, 2.0310. With 200 to 1000 seeds, t is z.
    levels = nominal_levels(0.05, (200, 400, 600, 800, 1000), 1000)
    for level, z in zip(levels[1:], (3.3569, 2.6803, 2.2898, 2.0310)):
        assert level == pytest.approx(2 * stats.norm.sf(z), rel=0.06)
    assert levels[0] < 1e-5  # 1.1e-6 spent: rarely crossed in 2^18 paths
    # with few seeds the t levels differ from the z ones: that is why they are computed for t
    assert nominal_levels(0.05, (5, 6, 7, 8, 9, 10), 10)[-1] < 0.05


def test_null_studies_rarely_say_better_or_worse():
    rng = np.random.default_rng(2026)
    for variants in (1, 2):
        r = replay(_null_or_planted(rng, variants, 0.0, 1.0), BOUNDS, delta=1.0)
        said = np.isin(r.codes, (0, 1)).any(axis=1).mean()  # any comparison of the study
        assert said <= 0.060, (variants, said)
        assert not (r.codes == -1).any()  # every comparison decided or at its maximum


def test_a_planted_effect_of_delta_is_found_with_fewer_runs_than_a_fixed_design():
    rng = np.random.default_rng(7)
    sd = 0.9  # of a per-seed difference, in units of δ
    r = replay(_null_or_planted(rng, 1, 1.0, sd), BOUNDS, delta=1.0)
    found = float((r.codes == 1).mean())  # "worse": the effect is +δ on an error
    assert found >= 0.78
    # the fixed design of the same power (paired t, statsmodels): the fewest seeds with at least that power
    fixed = next(n for n in range(2, 100) if TTestPower().power(1 / sd, n, 0.05) >= found)
    used = runs(r, BOUNDS).mean()
    assert used < 2 * fixed, (used, fixed)


def test_a_planted_effect_beside_a_null_one():
    rng = np.random.default_rng(11)
    d = _null_or_planted(rng, 2, 0.0, 0.9)
    d[:, 0, :] += 1.0  # the first variant δ worse, the second null
    r = replay(d, BOUNDS, delta=1.0)
    assert (r.codes[:, 0] == 1).mean() >= 0.70  # less than alone (83%): it is first tested at α / 2
    assert np.isin(r.codes[:, 1], (0, 1)).mean() <= 0.05  # Holm passes α on: still at most α for the null one


def _values(diffs: dict[str, list[float]], seeds: int, base: float = 0.30) -> dict[str, dict[int, float]]:
    out = {"base": {s: base + 0.001 * s for s in range(seeds)}}
    for v, d in diffs.items():
        out[v] = {s: out["base"][s] + d[s % len(d)] for s in range(seeds)}
    return out


def test_next_round_adds_seeds_only_where_needed():
    start = next_round({"base": {}, "a": {}, "b": {}}, "base", BOUNDS, delta=0.01)
    # min is 3, but the first look is at 5 seeds (4 df for an interval): every variant trains 5 at once
    assert start.add == {"base": (0, 1, 2, 3, 4), "a": (0, 1, 2, 3, 4), "b": (0, 1, 2, 3, 4)} and not start.done
    three = next_round(_values({"a": [0.05, 0.051, 0.049], "b": [0.0, 0.02, -0.02]}, 3), "base", BOUNDS, delta=0.01)
    assert three.add == {"base": (3, 4), "a": (3, 4), "b": (3, 4)}  # the first look is at 5 seeds
    assert all(c.verdict is Verdict.NOT_MEASURED for c in three.comparisons)
    five = next_round(_values({"a": [0.05, 0.051, 0.049], "b": [0.0, 0.02, -0.02]}, 5), "base", BOUNDS, delta=0.01)
    a, b = five.comparisons
    assert a.verdict is Verdict.WORSE and b.verdict is Verdict.INCONCLUSIVE and five.pending == ("b",)
    assert five.add == {"base": (5,), "b": (5,)}  # the decided variant stops; the baseline trains what b needs
    assert a.level == pytest.approx(1 - nominal_levels(0.05 / 2, looks(BOUNDS), 10)[0])  # look 1 at α / 2 (Holm, two comparisons)
    assert b.level == pytest.approx(1 - nominal_levels(0.05, looks(BOUNDS), 10)[0])  # a's rejection passes α on
    assert five.next_alpha["b"] == pytest.approx(nominal_levels(0.05, looks(BOUNDS), 10)[1])
    assert "O'Brien–Fleming" in a.method and "look 1 of 6" in a.method


def test_next_round_stops_at_the_maximum_and_counts_failed_seeds_as_tried():
    values = _values({"b": [0.0, 0.02, -0.02, 0.01]}, 10)
    values["b"][4] = math.nan  # a failed run: tried, so not trained again
    r = next_round(values, "base", BOUNDS, delta=0.01)
    (b,) = r.comparisons
    assert r.done and r.add == {} and b.verdict is Verdict.INCONCLUSIVE and b.n == 9
    assert b.verdict.label == "inconclusive" and math.isfinite(b.detectable) and b.seeds_needed is not None


def test_next_round_agrees_with_replay():
    rng = np.random.default_rng(5)
    for _ in range(20):
        d = rng.normal(0.004, 0.01, (2, 10))
        values = _values({"a": list(d[0]), "b": list(d[1])}, 10)
        r = next_round(values, "base", BOUNDS, delta=0.01)
        rep = replay(d[None], BOUNDS, delta=0.01)
        assert [c.verdict for c in r.comparisons] == [CODES[k] for k in rep.codes[0]]
        for c, lo, hi in zip(r.comparisons, rep.lo[0], rep.hi[0]):
            assert (c.lo, c.hi) == (pytest.approx(lo), pytest.approx(hi))
            assert c.verdict in (Verdict.BETTER, Verdict.WORSE) or not (c.lo > 0 or c.hi < 0)
