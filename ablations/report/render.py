"""A study's report as Markdown, and its summary.json, from the analysis alone (`analysis.study`):
no MLflow, no torch. Errors in %, differences in points; times to a target as ratios."""

from __future__ import annotations

import math

from ablations.analysis.display import RateSummary, fmt_interval, fmt_values
from ablations.analysis.records import TARGET_TRAIN_ERR
from ablations.analysis.stats import Stat
from ablations.analysis.study import LRN_ACTIVE, METRIC_NAMES, TIME_METRIC, StudyResult, VariantSummary
from ablations.analysis.verdicts import Comparison, Verdict

LABELS = {"test_err1": "test top-1 err", "val_err1": "final val top-1 err"}  # a primary metric, as tables name it


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def rate(s: RateSummary) -> str:
    """mean ± sd [interval] from 3 seeds up; the per-seed values under 3."""
    if s.n == 0:
        return "n/a"
    if not s.has_interval:
        return f"{s.mean * 100:.2f} (seeds: {fmt_values(s.values)})" if s.n > 1 else f"{s.mean * 100:.2f} (1 seed)"
    return f"{s.mean * 100:.2f} ± {s.sd * 100:.2f} {fmt_interval(s.lo, s.hi)}"


def stat(s: Stat, pct: bool = False) -> str:
    """A plain mean ± sd (no interval under 3 values)."""
    if s.n == 0 or math.isnan(s.mean):
        return "n/a"
    k = 100 if pct else 1
    return f"{s.mean * k:.2f}" + (f" ± {s.std * k:.2f}" if s.n > 1 else "") + (f" {fmt_interval(s.lo, s.hi, scale=k)}" if s.n >= 3 else "")


def _is_ratio(c: Comparison) -> bool:
    return c.metric == TIME_METRIC


def effect(c: Comparison) -> str:
    """Δ with its interval (at the comparison's adjusted level), or the per-seed differences where no interval is shown."""
    if c.verdict is Verdict.NOT_MEASURED:
        return "n/a"
    if _is_ratio(c):
        lo, hi = (math.exp(c.lo), math.exp(c.hi)) if c.has_interval else (math.nan, math.nan)
        return f"{math.exp(c.estimate):.2f}x" + (f" {fmt_interval(lo, hi, scale=1)}" if c.has_interval else "")
    if not c.has_interval:
        return f"{c.estimate * 100:+.2f} (per seed: {fmt_values([d for _, d in c.per_seed], signed=True)})"
    return f"{c.estimate * 100:+.2f} {fmt_interval(c.lo, c.hi)}"


def _size(x: float, c: Comparison) -> str:
    return f"{math.exp(x):.2f}x" if _is_ratio(c) else f"{x * 100:.2f} points"


def _p(c: Comparison) -> str:
    return f"p {c.p:.2g}" + (f", adjusted {c.p_adjusted:.2g} over {c.family}" if c.family > 1 else "")


def grounds(c: Comparison) -> str:
    """What a decided verdict (better, worse, equivalent) rests on, without its word."""
    level = f"{c.level:.1%} interval" if c.family <= 1 else f"{c.level:.2%} interval, Holm over {c.family}"
    if c.verdict is Verdict.EQUIVALENT:
        return f"within ±{_size(c.delta, c)} ({level} inside it; {_p(c)})"
    return f"({level} excludes {'1x' if _is_ratio(c) else '0'}; {_p(c)})"


def verdict(c: Comparison) -> str:
    """The verdict with the numbers it rests on."""
    if c.verdict is Verdict.NOT_MEASURED:
        return f"not measured ({c.note})" if c.note else "not measured"
    if c.verdict.decided:
        return f"**{c.verdict.label}** {grounds(c)}"
    could = f"these seeds could detect only ±{_size(c.detectable, c)}" if not math.isnan(c.detectable) else (c.note or "no interval")
    needed = f"; about {c.seeds_needed} seeds would settle ±{_size(c.delta, c)}" if c.seeds_needed else ""
    return f"inconclusive: {could}{needed} ({_p(c)})"


def _comparison(result: StudyResult, variant: str, precise_bn: bool = False) -> Comparison | None:
    analysis = result.precise_bn if precise_bn else result.primary
    return analysis.comparison(variant) if analysis else None


def _cells(result: StudyResult, v: VariantSummary, precise_bn: bool = False) -> tuple[str, str]:
    if v.variant == v.reference:
        return "—", "reference" if result.compare else "baseline"
    c = _comparison(result, v.variant, precise_bn)
    return (effect(c), verdict(c)) if c else ("n/a", "not measured")


def how(result: StudyResult) -> list[str]:
    a = result.primary
    delta = f"{result.delta:.2f}x" if result.metric == TIME_METRIC else f"{result.delta * 100:.2f} points"
    return [
        f"Primary metric: **{METRIC_NAMES.get(result.metric, result.metric)}** (the ablation file's `metric:`). "
        f"Smallest effect that matters δ = ±{delta} (`smallest_effect:`). Model: {a.model}. Family: {a.family_rule}. "
        "Verdicts: *better* / *worse* when the interval of Δ (variant − reference) excludes zero; *equivalent* when it lies "
        "inside ±δ (two one-sided tests); else *inconclusive*, with the smallest effect these seeds could detect (80% power) "
        "and about how many seeds would settle ±δ. No interval is shown from fewer than 3 seeds (the per-seed values are), "
        "an error's interval is a t interval on the logit scale, and interval bounds round outward.",
        "",
    ]


def main_table(result: StudyResult) -> list[str]:
    against = "reference" if result.compare else "baseline"
    name = METRIC_NAMES.get(result.metric, result.metric)
    lines = [row(["variant", "seeds", "final val top-1 err", "test top-1 err", f"Δ {name} vs {against}", "verdict"]), "|---|---|---|---|---|---|"]
    for v in result.variants:
        d, word = _cells(result, v)
        lines.append(row([v.variant, v.n, rate(v.final_err1), rate(v.test_err1), d, word]))
    return lines


def speed_table(result: StudyResult) -> list[str]:
    against = "reference" if result.compare else "baseline"
    lines = [
        "## Training speed and overfitting",
        "",
        f"Epochs until the running training error first reaches {TARGET_TRAIN_ERR:.0%} (the paper's Figure 1 measure, interpolated "
        "between readings), with how many seeds reached it; its ratio to the reference's from a log-normal accelerated-failure-time "
        "model in which a seed that never reached it is censored at the epochs it trained (95% profile-likelihood interval); the "
        "training error of the last epoch as logged; the final weights' training error in eval mode without augmentation; the gap "
        "(final val error minus the latter); the median time per epoch.",
        "",
        row(
            [
                "variant",
                f"epochs to {TARGET_TRAIN_ERR:.0%} train err",
                f"ratio to {against}",
                "train top-1 err, last epoch",
                "train top-1 err, eval mode",
                "val − train gap",
                "time per epoch (s)",
            ]
        ),  # fmt: skip
        "|---|---|---|---|---|---|---|",
    ]
    for v in result.variants:
        reached = f"{stat(v.epochs_to)} ({v.reached}/{v.n} reached)"
        lines.append(row([v.variant, reached, ratio(v), rate(v.train_err1), rate(v.clean_train_err1), stat(v.gap, pct=True), stat(v.epoch_time)]))
    return lines


def ratio(v: VariantSummary) -> str:
    r = v.ratio
    if r is None:
        return "—"
    if math.isnan(r.ratio):
        return f"n/a ({r.reached}/{r.n} vs {r.ref_reached}/{r.ref_n} reached)"
    shown = "∞" if math.isinf(r.ratio) else f"{r.ratio:.2f}x"
    return f"{shown} {fmt_interval(r.lo, r.hi, scale=1)} ({r.reached}/{r.n} vs {r.ref_reached}/{r.ref_n} reached)"


def curves_section(result: StudyResult) -> list[str]:
    if not result.curves:
        return []
    lines = ["## Effects over the training budget", "",
             "Δ of the validation error (variant − reference) at every epoch, from the same model as the verdicts but epoch by epoch "
             "(each epoch's interval holds on its own, not across epochs). Plot: `effects.png`.", ""]  # fmt: skip
    lines += [f"- {c.variant} vs {c.reference}: {c.line}" for c in result.curves]
    return lines


def diagnostics_section(result: StudyResult) -> list[str]:
    """Did the toggle act: LRN's α·Σa²/k and tanh's saturated fraction, at the start and end of training."""
    shown = [v for v in result.variants if v.diagnostics]
    if not shown:
        return []
    lines = ["", "## Did the toggle act?", "",
             "Measured by every run on 256 fixed training images, in eval mode, at the start and at the end of training (mean over seeds). "
             "LRN: α·Σa²/k per unit, the activity's share of the paper's denominator k + α·Σa²; where it stays under "
             f"{LRN_ACTIVE:g} for 99% of units, the layer divides by a constant k^β and does not normalise. "
             "tanh: the fraction of outputs with |y| > 0.9 (saturated).", "",
             row(["variant", "layer", "measure", "start", "end"]), "|---|---|---|---|---|"]  # fmt: skip
    for v in shown:
        keys = sorted({k.removesuffix("_start").removesuffix("_end") for k in v.diagnostics})
        for k in keys:
            kind, layer, what = k.split("_", 2)
            label = f"α·Σa²/k, {what.removeprefix('ratio_')}" if kind == "lrn" else "saturated fraction"
            cells = [f"{v.diagnostics[k + s]:.2e}" if kind == "lrn" and k + s in v.diagnostics else f"{v.diagnostics[k + s]:.1%}" if k + s in v.diagnostics
                     else "n/a" for s in ("_start", "_end")]  # fmt: skip
            lines.append(row([v.variant, layer, label, *cells]))
    for v in shown:
        if v.lrn_active is not None:
            lines += ["", f"- {v.variant}: LRN " + ("acted: its denominator moved by more than 1% for at least 1% of units at the end."
                      if v.lrn_active else "was close to a constant scale at the end (α·Σa²/k under "
                      f"{LRN_ACTIVE:g} for 99% of units): a verdict on LRN here is a verdict on that scale.")]  # fmt: skip
    return lines


def precise_bn_section(result: StudyResult, name: str) -> list[str]:
    if result.precise_bn is None:
        return []
    against = "reference" if result.compare else "baseline"
    lines = ["", "## With BatchNorm's statistics recomputed", "",
             "The final weights with BatchNorm's running statistics recomputed over one pass of the training images the clean error uses "
             f"(`make backfill-{name} PRECISE_BN=1`; a network without BatchNorm is evaluated unchanged). Model: {result.precise_bn.model}.", "",
             row(["variant", "final val top-1 err, as trained", "recomputed", f"Δ vs {against}", "verdict", "train top-1 err, eval mode, recomputed"]),
             "|---|---|---|---|---|---|"]  # fmt: skip
    for v in result.variants:
        d, word = _cells(result, v, precise_bn=True)
        lines.append(row([v.variant, rate(v.final_err1), rate(v.precise_bn_err1), d, word, rate(v.precise_bn_train_err1)]))
    return lines


def comparison_json(c: Comparison | None) -> dict | None:
    if c is None:
        return None
    keys = ("variant", "reference", "n", "estimate", "se", "df", "lo", "hi", "level", "p", "p_adjusted", "family", "tost_p", "delta", "detectable",
            "seeds_needed", "method", "sd", "metric")  # fmt: skip
    return {k: getattr(c, k) for k in keys} | {"verdict": c.verdict.label, "per_seed": [list(x) for x in c.per_seed]}


def summary_entry(result: StudyResult, meta: dict, changes: dict[str, dict], hashes: dict[str, str]) -> dict:
    def summary(s: RateSummary) -> dict:
        return {"n": s.n, "mean": s.mean, "sd": s.sd, "lo": s.lo, "hi": s.hi, "values": list(s.values)}

    variants = [
        {
            "variant": v.variant,
            "seeds": v.n,
            "variant_hash": hashes.get(v.variant, ""),
            "final_val_err1": summary(v.final_err1),
            "test_err1": summary(v.test_err1),
            "comparison": comparison_json(_comparison(result, v.variant)),
            "epochs_to_25": {"mean": v.epochs_to.mean, "reached": v.reached, "n": v.n},
            "ratio_epochs": None
            if v.ratio is None
            else {
                "ratio": v.ratio.ratio,
                "lo": v.ratio.lo,
                "hi": v.ratio.hi,
                "reached": v.ratio.reached,
                "ref_reached": v.ratio.ref_reached,
                "method": v.ratio.method,
            },  # fmt: skip
            "clean_train_err1": summary(v.clean_train_err1),
            **(
                {"precise_bn_val_err1": summary(v.precise_bn_err1), "precise_bn_comparison": comparison_json(_comparison(result, v.variant, True))}
                if result.precise_bn
                else {}
            ),  # fmt: skip
            "changes": changes.get(v.variant, {}),
        }
        for v in result.variants
    ]
    return {"ablation": result.name, "baseline": result.baseline, "profile": meta["profile"], "parent_id": meta["parent_id"], "metric": result.metric,
            "delta": result.delta, "model": result.primary.model, "variants": variants}  # fmt: skip
