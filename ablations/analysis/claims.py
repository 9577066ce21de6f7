"""A claim of the paper against a study's comparison: replicated, contradicted, inconclusive,
not comparable or not measured.

The comparison is turned so that Δ = without − with (positive: the innovation helps, as the
paper says) and judged at the study's own level (its Holm family) with the claim's size as δ:

- replicated: the interval excludes zero on the claimed side (and says whether it covers the
  claimed size);
- contradicted: it excludes zero on the other side, or lies inside ±size (equivalent to zero
  within a δ no larger than the claimed size: the claimed effect is ruled out);
- inconclusive: neither (with the effect these seeds could detect and the seeds that would settle it);
- not comparable: measured on another network or dataset than the claim was made on (the
  measured verdict is still shown);
- not measured: no published study compares the two variants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

from ablations.analysis.verdicts import Comparison, Estimate, Verdict, at_level


class ClaimVerdict(Enum):
    REPLICATED = "replicated"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"
    NOT_COMPARABLE = "not comparable"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Judgement:
    verdict: ClaimVerdict
    comparison: Comparison | None  # Δ = without − with at the claim's δ; None: not measured
    why: str


def oriented(c: Comparison, flip: bool) -> Comparison:
    """The comparison as without − with (`flip`: it was measured as with − without)."""
    if not flip:
        return c
    fit = Estimate(-c.fit.value, c.fit.se, c.fit.df) if c.fit is not None else None
    return replace(c, variant=c.reference, reference=c.variant, estimate=-c.estimate, lo=-c.hi, hi=-c.lo, fit=fit,
                   per_seed=tuple((s, -d) for s, d in c.per_seed))  # fmt: skip


def judge(c: Comparison | None, *, flip: bool, delta: float, comparable: bool, size: float | None) -> Judgement:
    """`c` as its study reports it (None: not measured); `delta` and `size` on the verdicts' scale
    (a fraction of error, or a log ratio; `size` None: the paper gives none)."""
    if c is None or c.verdict is Verdict.NOT_MEASURED or c.fit is None:
        return Judgement(ClaimVerdict.NOT_MEASURED, None, "no published study compares these variants")
    turned = oriented(c, flip)
    turned = at_level(replace(turned, delta=delta, tost_p=turned.fit.tost_p(delta)), 1 - c.level, c.p_adjusted, c.family)
    if not comparable:
        return Judgement(ClaimVerdict.NOT_COMPARABLE, turned, "measured on another network or dataset than the claim")
    if turned.verdict is Verdict.WORSE:  # without is worse: the innovation helps
        if size is None:
            return Judgement(ClaimVerdict.REPLICATED, turned, "established in the claimed direction (the paper gives no size)")
        if turned.lo <= size <= turned.hi:
            return Judgement(ClaimVerdict.REPLICATED, turned, "established in the claimed direction; the interval covers the claimed size")
        side = "smaller" if turned.hi < size else "larger"
        return Judgement(
            ClaimVerdict.REPLICATED, turned, f"established in the claimed direction, but {side} than claimed (the interval excludes the claimed size)"
        )
    if turned.verdict is Verdict.BETTER:
        return Judgement(ClaimVerdict.CONTRADICTED, turned, "established in the opposite direction")
    if turned.verdict is Verdict.EQUIVALENT:
        return Judgement(ClaimVerdict.CONTRADICTED, turned, "equivalent within ±the claimed size: an effect that large is ruled out,")
    return Judgement(ClaimVerdict.INCONCLUSIVE, turned, "")


def is_ratio(metric: str) -> bool:
    return metric == "epochs_to_train_err"


def size_text(x: float, metric: str) -> str:
    return f"{math.exp(x):.2f}x" if is_ratio(metric) else f"{x * 100:.2f} points"
