"""Times to a target with seeds that never reached it: censored, not dropped.

A seed that trained E epochs without reaching the target is right-censored at E: its time is known only to
exceed E. The ratio of a variant's time to its reference's comes from a log-normal accelerated-failure-time
model (Kalbfleisch & Prentice 2002, ch. 2-3): log T = μ + β·[variant] + σ·ε, ε standard normal, one σ for
both (the variant's times are the reference's stretched by e^β), fitted by maximum likelihood with the
censored seeds contributing P(T > E) (scipy; the likelihood is concave in Olsen's (1978) parametrisation
(μ/σ, 1/σ, β/σ), so the optimum found is the optimum). The ratio is e^β̂.

Its interval is the profile-likelihood interval of β (Venzon & Moolgavkar 1988), calibrated for few seeds:
the likelihood-ratio statistic LR(b) is turned into t = ±√(df (e^(LR/N) − 1)), N seeds, df = N − 2, which
is exactly the two-sample t statistic on log times when nothing is censored (then the interval is that
t-test's, computed in closed form); with censoring the calibration is an approximation. Unlike a Wald
interval it stays finite where it can: when no seed of the variant reached the target, β̂ is infinite (the
likelihood keeps rising with β) but the interval's lower bound is not, and the ratio reads "> lower bound".

The model ignores the pairing by seed (a seed does not fix a network's initialisation across variants with
different layers, so pairs gain little here); a rank test would, but with 3 pairs no rank test reaches 5%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from ablations.analysis.verdicts import ALPHA, Estimate

METHOD = "log-normal accelerated-failure-time model, seeds that never reached censored at the epochs trained; profile-likelihood interval (t-calibrated)"
METHOD_UNCENSORED = "log-normal accelerated-failure-time model, every seed reached: the two-sample t interval of the log times"
SPAN = 30.0  # |log ratio| beyond which a bound is infinite (a ratio of e^30)


@dataclass(frozen=True)
class CensoredRatio:
    ratio: float  # the variant's time over the reference's, e^β̂ (inf: the variant never reached, 0: the reference never did)
    lo: float  # at `level`; an infinite bound where the data give none
    hi: float
    level: float
    p: float  # two-sided, for a ratio of 1
    n: int  # the variant's seeds
    reached: int  # how many of them reached the target
    ref_n: int
    ref_reached: int
    method: str
    fit: Estimate  # β on the log scale, for verdicts and families (`ratio_comparison`)


def censor(times: Mapping[int, float], trained: Mapping[int, float]) -> tuple[list[float], list[bool]]:
    """Per seed, the time to the target where reached (NaN in `times`: not reached), else the epochs trained."""
    out, reached = [], []
    for s in sorted(times):
        t = times[s]
        hit = t is not None and not math.isnan(t)
        out.append(float(t) if hit else float(trained[s]))
        reached.append(hit)
    return out, reached


class _Likelihood:
    """The censored normal log-likelihood of y = log T in Olsen's parametrisation θ = (γ, h, η) = (μ, 1, β) / σ:
    z = h·y − γ − η·x; a seed that reached adds log φ(z) + log h, a censored one log P(Z > z). Concave in θ,
    so Newton's method (scipy's trust-region, exact Hessian) finds the maximum."""

    def __init__(self, y: np.ndarray, x: np.ndarray, event: np.ndarray):
        self.y, self.x, self.event = y, x, event

    def _max(self, A: np.ndarray, ev: np.ndarray, theta0: list[float]) -> tuple[float, np.ndarray]:
        """max over θ of the log-likelihood with z = A θ (θ[1] = h)."""
        k = ev.sum()

        def parts(theta):
            z = A @ theta
            log_sf = special.log_ndtr(-z)  # log P(Z > z)
            mills = np.exp(-0.5 * z**2 - 0.5 * math.log(2 * math.pi) - log_sf)  # φ(z) / P(Z > z)
            d1 = np.where(ev, -z, -mills)  # d ll / d z
            d2 = np.where(ev, -1.0, -mills * (mills - z))
            return z, log_sf, d1, d2

        def neg(theta):
            if theta[1] <= 0:
                return math.inf
            z, log_sf, _, _ = parts(theta)
            return -float(np.sum(-0.5 * z[ev] ** 2) + k * math.log(theta[1]) + np.sum(log_sf[~ev]))

        def grad(theta):
            _, _, d1, _ = parts(theta)
            g = A.T @ d1
            g[1] += k / theta[1]
            return -g

        def hess(theta):
            _, _, _, d2 = parts(theta)
            H = A.T @ (d2[:, None] * A)
            H[1, 1] -= k / theta[1] ** 2
            return -H

        res = optimize.minimize(neg, theta0, jac=grad, hess=hess, method="trust-exact")
        return -float(res.fun), res.x

    def _start(self, u: np.ndarray) -> list[float]:
        s = max(float(np.std(u)), 1e-3)
        return [float(np.mean(u)) / s, 1 / s]

    def profile(self, b: float, mask: np.ndarray | None = None) -> float:
        """max over (μ, σ) of the log-likelihood with β = b; with `mask`, of those seeds alone (β unused)."""
        u = self.y - b * self.x if mask is None else self.y[mask]
        ev = self.event if mask is None else self.event[mask]
        A = np.column_stack([-np.ones_like(u), u])
        return self._max(A, ev, self._start(u))[0]

    def joint(self) -> tuple[float, float]:
        """(max log-likelihood, β̂) over all of (γ, h, η)."""
        y, x = self.y, self.x
        A = np.column_stack([-np.ones_like(y), y, -x])
        g, h = self._start(y[x == 0])
        top, theta = self._max(A, self.event, [g, h, float(y[x == 1].mean() - y[x == 0].mean()) * h])
        return top, float(theta[2] / theta[1])


def _bound(g, inside: float, target: float, direction: float, step: float) -> float:
    """Where the decreasing statistic g crosses `target`, walking from `inside` (a point of the interval)
    in `direction` (−1: the lower bound, target > 0; +1: the upper, target < 0); infinite past SPAN."""
    crossed = (lambda v: v >= target) if direction < 0 else (lambda v: v <= target)
    prev = inside
    while step <= SPAN:
        edge = inside + direction * step
        if crossed(g(edge)):
            a, b = sorted((prev, edge))
            return float(optimize.brentq(lambda t: g(t) - target, a, b, xtol=1e-9))
        prev, step = edge, step * 2
    return direction * math.inf


def _fit(y: np.ndarray, x: np.ndarray, event: np.ndarray) -> Estimate:
    n = len(y)
    df = n - 2
    if event.all():
        a, b = y[x == 1], y[x == 0]
        pooled = (np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2)) / df
        return Estimate(float(a.mean() - b.mean()), math.sqrt(pooled * (1 / len(a) + 1 / len(b))), df)
    lik = _Likelihood(y, x, event)
    var_events, ref_events = bool(event[x == 1].any()), bool(event[x == 0].any())
    if var_events and ref_events:
        top, beta = lik.joint()
    else:  # one side never reached: β̂ = ±∞ and the supremum is the other side's model alone
        beta = math.inf if ref_events else -math.inf
        top = lik.profile(0.0, mask=(x == 0) if ref_events else (x == 1))
    scale = max(float(np.std(y[event])) if event.sum() > 1 else 0.0, 0.05)

    def statistic(b: float) -> float:
        lr = max(0.0, 2 * (top - lik.profile(b)))
        return math.copysign(math.sqrt(df * math.expm1(lr / n)), beta - b) if lr > 0 else 0.0

    def interval(alpha: float) -> tuple[float, float]:
        crit = float(stats.t.ppf(1 - alpha / 2, df))
        if math.isfinite(beta):
            inside = beta
        else:  # a finite point inside the interval: walk toward β̂ until the statistic drops below crit
            sign = 1.0 if beta > 0 else -1.0
            inside = float(y[x == 1].max() - y[x == 0].min()) if sign > 0 else float(y[x == 1].min() - y[x == 0].max())
            while abs(statistic(inside)) >= crit and abs(inside) < SPAN:
                inside += sign * scale
        lo = _bound(statistic, inside, crit, -1.0, scale) if not (math.isinf(beta) and beta < 0) else -math.inf
        hi = _bound(statistic, inside, -crit, 1.0, scale) if not (math.isinf(beta) and beta > 0) else math.inf
        return lo, hi

    return Estimate(beta, math.nan, df, statistic=statistic, interval_fn=interval)


def censored_ratio(
    variant_times: Sequence[float], variant_reached: Sequence[bool], ref_times: Sequence[float], ref_reached: Sequence[bool], alpha: float = ALPHA
) -> CensoredRatio:
    """The variant's time to the target over the reference's, with its 1 − alpha interval; a time whose
    `reached` is False is the epochs that seed trained without reaching the target (censored there)."""
    vt, rt = np.asarray(variant_times, float), np.asarray(ref_times, float)
    ve, re_ = np.asarray(variant_reached, bool), np.asarray(ref_reached, bool)
    if len(vt) != len(ve) or len(rt) != len(re_):
        raise ValueError("each time needs its reached flag")
    if np.any(vt <= 0) or np.any(rt <= 0):
        raise ValueError("times to a target must be positive")
    counts = dict(n=len(vt), reached=int(ve.sum()), ref_n=len(rt), ref_reached=int(re_.sum()))
    y = np.log(np.concatenate([vt, rt]))
    x = np.concatenate([np.ones(len(vt)), np.zeros(len(rt))])
    event = np.concatenate([ve, re_])
    if len(vt) == 0 or len(rt) == 0 or len(y) < 3 or not event.any():
        nan = math.nan
        return CensoredRatio(nan, nan, nan, 1 - alpha, nan, **counts, method=METHOD, fit=Estimate(nan, nan, 0))
    fit = _fit(y, x, event)
    lo, hi = fit.interval(alpha)
    return CensoredRatio(math.exp(fit.value) if not math.isinf(fit.value) else (math.inf if fit.value > 0 else 0.0),
                         math.exp(lo), math.exp(hi), 1 - alpha, fit.p(), **counts,
                         method=METHOD_UNCENSORED if event.all() else METHOD, fit=fit)  # fmt: skip
