"""A one-at-a-time study analysed: per variant its figures, and per comparison its verdict on the
study's primary metric, from one model of the whole study (`model.fit_study`), or, for times to a
target, from the censored-data model (`censored`). Pure: records in (`records.RunResult`), typed
results out; the report renders them and reads nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ablations.analysis.censored import CensoredRatio, censored_ratio
from ablations.analysis.curves import EffectCurve, effect_curves
from ablations.analysis.display import RateSummary, describe_rate
from ablations.analysis.family import adjust
from ablations.analysis.model import StudyAnalysis, VarianceCheck, fit_study
from ablations.analysis.records import TARGET_TRAIN_ERR, RunResult
from ablations.analysis.sequential import SeedBounds, next_round
from ablations.analysis.stats import Stat, describe
from ablations.analysis.verdicts import ALPHA, Comparison, compare

PRECISE_BN_VAL_ERR = "val_err1_precise_bn"  # the metrics ablations.train.backfill --precise-bn logs
PRECISE_BN_TRAIN_ERR = "train_clean_err1_precise_bn"
TIME_METRIC = "epochs_to_train_err"
LRN_ACTIVE = 0.01  # α·Σa²/k above this for 1% of an LRN layer's units: its denominator moves by more than 1%
METRIC_NAMES = {"val_err1": "final val top-1 error", "test_err1": "test top-1 error", TIME_METRIC: f"epochs to {TARGET_TRAIN_ERR:.0%} train error"}


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    reference: str
    n: int
    final_err1: RateSummary
    best_err1: RateSummary
    final_err5: RateSummary
    test_err1: RateSummary
    train_err1: RateSummary
    clean_train_err1: RateSummary
    gap: Stat  # final val error minus the clean training error
    epochs_to: Stat  # over the seeds that reached the target
    reached: int  # seeds that reached it
    epoch_time: Stat
    ratio: CensoredRatio | None  # epochs to the target, over the reference's (None: the reference itself)
    precise_bn_err1: RateSummary
    precise_bn_train_err1: RateSummary
    diagnostics: dict[str, float] = field(default_factory=dict)  # each lrn_*/tanh_* metric, mean over seeds

    @property
    def lrn_active(self) -> bool | None:
        """Whether an LRN layer's denominator moved by more than 1% for 1% of its units at the end (None: no LRN)."""
        ends = [v for k, v in self.diagnostics.items() if k.startswith("lrn_") and k.endswith("_ratio_p99_end")]
        return None if not ends else max(ends) > LRN_ACTIVE


@dataclass(frozen=True)
class StudyResult:
    name: str
    baseline: str
    order: list[str]
    compare: dict[str, str]
    metric: str
    delta: float  # on the metric's scale: an error difference, or a ratio for times
    variants: list[VariantSummary]
    primary: StudyAnalysis  # the verdicts, on the primary metric
    precise_bn: StudyAnalysis | None  # on the val error with BatchNorm's statistics recomputed, when measured
    curves: list[EffectCurve] = field(default_factory=list)  # Δ of the val error at every epoch

    def row(self, variant: str) -> VariantSummary:
        return next(v for v in self.variants if v.variant == variant)


def final_value(r: RunResult, metric: str) -> float:
    if metric == "test_err1":
        return r.test.get("test_err1", math.nan)
    return r.final(metric)


def _per_seed(runs: Mapping[int, RunResult], fn) -> dict[int, float]:
    return {s: fn(r) for s, r in runs.items()}


def _time_comparisons(by_seed: dict[str, dict[int, RunResult]], refs: dict[str, str], delta_ratio: float, name: str) -> list[Comparison]:
    out = []
    for v, ref in refs.items():
        cr = _ratio(by_seed[v], by_seed.get(ref, {}))
        if cr is None or math.isnan(cr.fit.value):
            continue
        out.append(compare(v, ref, cr.fit, n=min(cr.n, cr.ref_n), delta=math.log(delta_ratio), method=cr.method, study=name, metric=TIME_METRIC))
    return adjust(out)


def _ratio(mine: Mapping[int, RunResult], theirs: Mapping[int, RunResult]) -> CensoredRatio | None:
    """Epochs to the target, variant over reference; a seed that never reached it is censored at
    the epochs it trained."""
    if not mine or not theirs:
        return None

    def times(runs):
        t = [(r.epochs_to(), r.epochs_trained) for r in runs.values() if r.epochs_trained]
        return [x if not math.isnan(x) else e for x, e in t], [not math.isnan(x) for x, _ in t]

    (vt, ve), (rt, re_) = times(mine), times(theirs)
    if not vt or not rt:
        return None
    return censored_ratio(vt, ve, rt, re_)


def analyse_study(
    name: str,
    results: list[RunResult],
    order: list[str],
    baseline: str,
    compare_to: Mapping[str, str] | None,
    metric: str,
    delta: float,
    adaptive: SeedBounds | None = None,
) -> StudyResult:
    """Per variant its figures; per comparison its verdict on `metric`. A study whose seeds were adaptive
    (`adaptive`: its bounds) takes its verdicts from the group-sequential rule that chose the seeds
    (`sequential.next_round`), not from a fixed-seed analysis of the same runs."""
    compare_to = dict(compare_to or {})
    if metric == "test_err1" and not any(r.test for r in results):
        metric = "val_err1"  # runs from before the test split (data.splits=train_val): their val split was the dataset's test split
    by_seed = {v: {r.seed: r for r in results if r.variant == v} for v in order}
    refs = {v: compare_to.get(v, baseline) for v in order if v != baseline}
    variants = []
    for v in order:
        runs = by_seed[v]
        rs = list(runs.values())
        ref = compare_to.get(v, baseline)
        epochs = [r.epochs_to() for r in rs]

        def rate(fn, runs=runs):
            return describe_rate({s: x for s, x in _per_seed(runs, fn).items() if not math.isnan(x)})

        variants.append(
            VariantSummary(
                variant=v,
                reference=ref,
                n=len(rs),
                final_err1=rate(lambda r: r.final("val_err1")),
                best_err1=rate(lambda r: r.best("val_err1")),
                final_err5=rate(lambda r: r.final("val_err5")),
                test_err1=rate(lambda r: r.test.get("test_err1", math.nan)),
                train_err1=rate(lambda r: r.final("train_err1")),
                clean_train_err1=rate(lambda r: r.clean_train_err1),
                gap=describe([r.final("val_err1") - r.clean_train_err1 for r in rs]),
                epochs_to=describe(epochs),
                reached=sum(not math.isnan(x) for x in epochs),
                epoch_time=describe([float(np.median(r.curves["epoch_time_s"])) if r.curves.get("epoch_time_s") else math.nan for r in rs]),
                ratio=None if v == ref else _ratio(runs, by_seed.get(ref, {})),
                precise_bn_err1=rate(lambda r: r.precise_bn.get(PRECISE_BN_VAL_ERR, math.nan)),
                precise_bn_train_err1=rate(lambda r: r.precise_bn.get(PRECISE_BN_TRAIN_ERR, math.nan)),
                diagnostics={k: float(np.mean([r.diagnostics[k] for r in rs if k in r.diagnostics])) for k in sorted({k for r in rs for k in r.diagnostics})},
            )
        )
    if metric == TIME_METRIC:
        comparisons = _time_comparisons(by_seed, refs, delta, name)
        primary = StudyAnalysis(baseline, tuple(comparisons), comparisons[0].method if comparisons else "log-normal AFT", False, math.nan,
                                VarianceCheck(False, math.nan, (), "each comparison its own censored fit"), math.log(delta), ALPHA)  # fmt: skip
    else:
        values = {v: {s: final_value(r, metric) for s, r in runs.items()} for v, runs in by_seed.items()}
        primary = fit_study(values, baseline, compare_to, delta, study=name, metric=metric)
        if adaptive is not None:
            final = next_round(values, baseline, adaptive, compare_to, delta, study=name, metric=metric)
            primary = replace(primary, comparisons=final.comparisons, model=f"adaptive seeds ({adaptive.min} to {adaptive.max}): {final.rule}",
                              family_rule="as the adaptive rule says (Holm across comparisons, each rejection's α passed on)")  # fmt: skip
    precise = None
    if any(r.precise_bn for r in results):
        values = {v: _per_seed(runs, lambda r: r.precise_bn.get(PRECISE_BN_VAL_ERR, math.nan)) for v, runs in by_seed.items()}
        precise = fit_study(values, baseline, compare_to, delta if metric != TIME_METRIC else 0.01, study=name, metric=PRECISE_BN_VAL_ERR)
    curves = effect_curves({v: {s: r.curves.get("val_err1", []) for s, r in runs.items()} for v, runs in by_seed.items()}, baseline, compare_to,
                           delta if metric != TIME_METRIC else 0.01)  # fmt: skip
    return StudyResult(name, baseline, order, compare_to, metric, delta, variants, primary, precise, curves)
