"""ablations.analysis.censored: the ratio of times to a target with censored seeds, against scipy's
two-sample t when nothing is censored, and against a brute-force grid of the censored log-normal
likelihood (no optimiser, another parametrisation) when something is."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from ablations.analysis import DELTA_LOG_RATIO, Verdict, censor, censored_ratio, compare

REF = [7.0, 7.5, 7.9]  # epochs to 25%, every seed reached


def test_nothing_censored_is_the_two_sample_t_on_log_times():
    r = censored_ratio([10.0, 11.0, 12.0], [True] * 3, REF, [True] * 3)
    t = stats.ttest_ind(np.log([10.0, 11.0, 12.0]), np.log(REF), equal_var=True)
    lo, hi = t.confidence_interval(0.95)
    assert r.ratio == pytest.approx(math.exp(np.mean(np.log([10, 11, 12])) - np.mean(np.log(REF))))
    assert (r.lo, r.hi, r.p) == (pytest.approx(math.exp(lo)), pytest.approx(math.exp(hi)), pytest.approx(t.pvalue))
    assert (r.reached, r.n, r.ref_reached, r.ref_n) == (3, 3, 3, 3) and "every seed reached" in r.method


def _grid_profile(y, x, event, b, mus, sigmas):
    """max over a (μ, σ) grid of the censored normal log-likelihood of y - b x (log-times)."""
    u = (y - b * x)[None, None, :]
    z = (u - mus[:, None, None]) / sigmas[None, :, None]
    ll = np.where(event, stats.norm.logpdf(z) - np.log(sigmas)[None, :, None], stats.norm.logsf(z)).sum(-1)
    return ll.max()


def _grid_bound(y, x, event, top, lo, hi, cutoff, mus, sigmas):
    """Where 2 (top - grid profile) crosses the cutoff between lo (above it) and hi (below)."""
    return optimize.brentq(lambda b: 2 * (top - _grid_profile(y, x, event, b, mus, sigmas)) - cutoff, lo, hi, xtol=1e-6)


def test_a_variant_that_never_reached_gives_a_lower_bound():
    # Figure 1's case: the reference reached 25% in about 7.5 epochs, the variant in none of 3 seeds of 20 epochs
    r = censored_ratio([20.0] * 3, [False] * 3, REF, [True] * 3)
    assert r.ratio == math.inf and r.hi == math.inf and (r.reached, r.n) == (0, 3)
    # below 20 over the reference's typical time: three seeds beyond 20 epochs do not prove a median beyond 20
    assert 1 < r.lo < 20 / stats.gmean(REF)
    # by grid: the supremum is the reference's own normal fit (the censored seeds' P(T > 20) -> 1 as β grows);
    # N = 6, df = 4: cutoff 6 log(1 + t(0.975, 4)^2 / 4)
    y, x, event = np.log([20.0] * 3 + REF), np.array([1.0] * 3 + [0.0] * 3), np.array([False] * 3 + [True] * 3)
    ref = np.log(REF)
    top = stats.norm.logpdf(ref, ref.mean(), ref.std()).sum()  # the normal MLE (σ with divisor n)
    cutoff = 6 * math.log(1 + stats.t.ppf(0.975, 4) ** 2 / 4)
    mus, sigmas = np.linspace(1.7, 2.3, 201), np.exp(np.linspace(math.log(0.01), math.log(1.0), 201))
    grid = _grid_bound(y, x, event, top, 0.0, 2.0, cutoff, mus, sigmas)
    assert math.log(r.lo) == pytest.approx(grid, abs=1e-4), (math.log(r.lo), grid)
    c = compare("tanh", "relu", r.fit, n=3, delta=DELTA_LOG_RATIO, method=r.method)
    assert c.verdict is Verdict.WORSE  # slower, whatever the unknown upper bound


def test_one_seed_that_never_reached_is_censored_not_dropped():
    times, reached = censor({0: 10.0, 1: 11.0, 2: math.nan}, {0: 20, 1: 20, 2: 12})
    assert (times, reached) == ([10.0, 11.0, 12.0], [True, True, False])
    r = censored_ratio(times, reached, REF, [True] * 3)
    assert (r.reached, r.n) == (2, 3) and "censored at the epochs trained" in r.method
    dropped = censored_ratio([10.0, 11.0], [True] * 2, REF, [True] * 3)
    as_if_reached = censored_ratio(times, [True] * 3, REF, [True] * 3)
    # the seed still running at 12 epochs pulls the ratio up: above dropping it, and above pretending it reached 25% at 12
    assert r.ratio > as_if_reached.ratio > dropped.ratio
    # the maximum likelihood estimate against a grid over (μ, σ, β)
    y, x = np.log(times + REF), np.array([1.0] * 3 + [0.0] * 3)
    event = np.array(reached + [True] * 3)
    mus, sigmas = np.linspace(1.8, 2.3, 201), np.exp(np.linspace(math.log(0.01), math.log(0.5), 201))
    best = optimize.minimize_scalar(lambda b: -_grid_profile(y, x, event, b, mus, sigmas), bounds=(0.2, 0.6), method="bounded", options={"xatol": 1e-5}).x
    assert math.log(r.ratio) == pytest.approx(best, abs=2e-3)
    top, cutoff = _grid_profile(y, x, event, best, mus, sigmas), 6 * math.log(1 + stats.t.ppf(0.975, 4) ** 2 / 4)
    assert math.log(r.lo) == pytest.approx(_grid_bound(y, x, event, top, best - 1.0, best, cutoff, mus, sigmas), abs=2e-3)
    assert 1 < r.lo < r.ratio < r.hi < math.inf


def test_a_reference_that_never_reached_gives_an_upper_bound():
    r = censored_ratio([5.0, 6.0, 7.0], [True] * 3, [20.0] * 3, [False] * 3)
    assert r.ratio == 0 and r.lo == 0 and 0 < r.hi < 1
    assert compare("fast", "slow", r.fit, n=3, delta=DELTA_LOG_RATIO, method=r.method).verdict is Verdict.BETTER


def test_nothing_reached_is_not_measured():
    r = censored_ratio([20.0] * 3, [False] * 3, [20.0] * 3, [False] * 3)
    assert math.isnan(r.ratio) and math.isnan(r.lo)
    with pytest.raises(ValueError):
        censored_ratio([10.0], [True, False], REF, [True] * 3)
