"""Effects over the training budget: each variant's Δ with its interval at every epoch.

At each epoch, the per-seed validation errors of that epoch go through the study's model (`fit_study`:
the seed-blocked model, its variance check, Holm over the study's comparisons), so an epoch's interval
and verdict are exactly what the report would say had training stopped there. The intervals are
pointwise: each holds at its own epoch, not over all epochs at once, so a verdict at one epoch among many
is descriptive; the last epoch's is the study's verdict. The line summarising a curve names the epoch from
which the last epoch's verdict holds at every later epoch ("worse, established from epoch 4") and the
epochs where a decided direction flips ("the sign changes at epoch 7": better before it, worse from it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ablations.analysis.model import fit_study
from ablations.analysis.verdicts import ALPHA, DELTA, MIN_DF, Verdict


@dataclass(frozen=True)
class EffectCurve:
    variant: str
    reference: str
    epochs: tuple[int, ...]  # 1-based
    delta: tuple[float, ...]  # Δ̂ per epoch (NaN: not measured that epoch)
    lo: tuple[float, ...]  # the interval per epoch (NaN: none shown)
    hi: tuple[float, ...]
    verdicts: tuple[Verdict, ...]
    line: str  # the verdict over the budget, in words


def effect_curves(
    curves: Mapping[str, Mapping[int, Sequence[float]]],
    baseline: str,
    compare: Mapping[str, str] | None = None,
    delta: float = DELTA,
    alpha: float = ALPHA,
    *,
    lower_is_better: bool = True,
    min_df: int = MIN_DF,
) -> list[EffectCurve]:
    """Per variant (but the baseline), Δ and its interval at every epoch, from variant -> seed -> the
    per-epoch validation error (a run that stopped early has a shorter list)."""
    epochs = max((len(c) for per in curves.values() for c in per.values()), default=0)
    rows: dict[str, list] = {}
    for e in range(epochs):
        values = {v: {s: c[e] for s, c in per.items() if len(c) > e} for v, per in curves.items()}
        study = fit_study(values, baseline, compare, delta, alpha, lower_is_better=lower_is_better, min_df=min_df)
        for c in study.comparisons:
            rows.setdefault(c.variant, []).append(c)
    out = []
    for v, cs in rows.items():
        verdicts = tuple(c.verdict for c in cs)
        epoch_list = tuple(range(1, len(cs) + 1))
        out.append(EffectCurve(v, cs[0].reference, epoch_list, tuple(c.estimate for c in cs), tuple(c.lo for c in cs), tuple(c.hi for c in cs),
                               verdicts, summarise(epoch_list, verdicts)))  # fmt: skip
    return out


def summarise(epochs: Sequence[int], verdicts: Sequence[Verdict]) -> str:
    """The verdict over the budget in words: the last epoch's verdict and since when it holds, and where
    a decided direction (better / worse) flips."""
    if not verdicts:
        return "not measured"
    last = verdicts[-1]
    since = len(verdicts) - 1
    while since > 0 and verdicts[since - 1] == last:
        since -= 1
    parts = []
    if last.decided:
        parts.append(f"{last.label}, established from epoch {epochs[since]}" if since else f"{last.label} at every epoch")
    elif last is Verdict.NOT_MEASURED:
        parts.append("not measured at the last epoch")
    else:
        ever = [i for i, v in enumerate(verdicts) if v.decided]
        earlier = f" ({verdicts[ever[-1]].label} at epoch {epochs[ever[-1]]})" if ever else " and at every epoch before"
        parts.append(f"{last.label} at the last epoch{earlier}")
    direction = [(epochs[i], v) for i, v in enumerate(verdicts) if v in (Verdict.BETTER, Verdict.WORSE)]
    flips = [e for (_, a), (e, b) in zip(direction, direction[1:], strict=False) if a != b]
    parts += [f"the sign changes at epoch {e}" for e in flips]
    return "; ".join(parts)
