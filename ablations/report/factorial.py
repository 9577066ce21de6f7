"""The analysis of a factorial study: every main effect and two-factor interaction
the design can estimate, from all its runs at once.

A linear model of the per-run response (the study's primary metric: the test top-1 error,
or the final val_err1 for runs from before the test split; in points of error) on the
factors coded -1 (low) / +1 (high), their two-factor interactions, and the seed as
a block, fitted by ordinary least squares (statsmodels). An effect is the change in
the response from a factor's low level to its high level, averaged over every other
factor: twice the coefficient. Its 95% interval comes from the model's residual
error. Every effect is tested at once, so the verdict corrects for their number:
better / worse when its interval at Holm's level excludes zero (the chance of calling any
effect that is zero real stays at 5%), equivalent within ±1 point, else inconclusive. Aliased effects (a fractional design cannot
tell them apart) are estimated once, under their first name, and labelled with the
others. A Type II ANOVA table and the residual standard deviation go with them.

The model's one residual variance assumes the cells are about equally noisy. Bartlett's test
of the model's residuals, cell by cell, checks it (ablations.analysis.model.variance_check); where it fails, the effects'
standard errors are heteroskedasticity-consistent (HC3, MacKinnon & White 1985: each run's own
squared residual, inflated by its leverage) instead of pooled, still with t on the residual
degrees of freedom, and the report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablations.analysis.family import levels
from ablations.analysis.model import VarianceCheck, variance_check
from ablations.analysis.records import RunResult
from ablations.analysis.stats import describe
from ablations.analysis.verdicts import Estimate, Verdict, decide
from ablations.report import plots
from ablations.report.render import LABELS
from ablations.spec.design import Design, term_name

DELTA_POINTS = 1.0  # the smallest effect that matters, in points of error (the suite's default δ)


@dataclass
class Effect:
    term: tuple[str, ...]  # config keys: one (a main effect) or two (an interaction)
    name: str  # with its aliases, in short names
    effect: float  # points of error, high - low
    lo: float
    hi: float
    p: float
    p_holm: float  # adjusted for the number of effects tested together
    verdict: Verdict = Verdict.INCONCLUSIVE  # from the interval at Holm's level for it, with δ = 1 point

    @property
    def real(self) -> bool:
        return self.verdict in (Verdict.BETTER, Verdict.WORSE)


@dataclass
class Analysis:
    effects: list[Effect]
    anova: list[tuple[str, float, float, float, float]]  # (source, sum of squares, df, F, p)
    residual_sd: float
    residual_df: int
    n: int
    variances: VarianceCheck | None = None  # Bartlett over the cells
    robust: bool = False  # HC3 standard errors (the cells' variances differ)


def value(r: RunResult, response: str) -> float:
    """A run's response: test_err1 from its test split, else a per-epoch metric's last value."""
    return r.test.get(response, math.nan) if response.startswith("test_") else r.final(response)


def response_of(results: list[RunResult], metric: str) -> str:
    """The study's metric; runs from before the test split have none: their val split was the test split."""
    return "val_err1" if metric.startswith("test_") and not any(r.test for r in results) else metric


def _frame(results: list[RunResult], design: Design, response: str):
    import pandas as pd

    cells = design.cells()
    rows = []
    for r in results:
        values = cells.get(r.variant)
        if values is None or math.isnan(value(r, response)):
            continue
        signs = {f"x{i}": (1.0 if values[k] == design.factors[k][1] else -1.0) for i, k in enumerate(design.factors)}
        rows.append({"y": 100 * value(r, response), "seed": r.seed, "cell": r.variant, **signs})
    return pd.DataFrame(rows)


def analyse(results: list[RunResult], design: Design, response: str = "val_err1") -> Analysis | None:
    """The model fit, or None when the runs cannot estimate it: no residual degrees of
    freedom, or effects the finished runs cannot tell apart (a cell without a finished run
    in a fraction that needs them all: a fit would report every effect wrong)."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    df = _frame(results, design, response)
    if df.empty:
        return None
    var = {k: f"x{i}" for i, k in enumerate(design.factors)}
    kept = design.alias_groups()
    terms = [":".join(var[k] for k in group[0]) for group in kept]
    block = " + C(seed)" if df["seed"].nunique() > 1 else ""
    if len(df) <= len(terms) + 1 + (df["seed"].nunique() - 1 if block else 0):
        return None
    model = smf.ols("y ~ " + " + ".join(terms) + block, data=df)
    fit = model.fit()
    if np.linalg.matrix_rank(fit.model.exog) < fit.model.exog.shape[1]:
        return None
    resid = df.assign(r=fit.resid)  # per cell, the model's residuals: the seed blocks and the effects taken out
    check = variance_check({c: dict(zip(g["seed"], g["r"], strict=True)) for c, g in resid.groupby("cell")})
    robust = not check.pooled
    if robust:  # the cells' variances differ: each run's own residual, not the pooled variance
        fit = model.fit(cov_type="HC3", use_t=True)
    holm, alphas = levels([float(fit.pvalues[t]) for t in terms])
    effects = []
    for group, t, p_holm, a in zip(kept, terms, holm, alphas, strict=True):
        name = " = ".join(term_name(g, design.short) for g in group)
        est, se = 2 * float(fit.params[t]), 2 * float(fit.bse[t])
        lo, hi = Estimate(est, se, float(fit.df_resid)).interval(a)
        effects.append(Effect(group[0], name, est, lo, hi, float(fit.pvalues[t]), p_holm, decide(est, se, float(fit.df_resid), DELTA_POINTS, a)))
    table = anova_lm(fit, typ=2)
    names = {t: " = ".join(term_name(g, design.short) for g in group) for group, t in zip(kept, terms, strict=True)} | {"C(seed)": "seed (block)"}
    anova = [(names.get(i, i), float(r["sum_sq"]), float(r["df"]), float(r.get("F", math.nan)), float(r.get("PR(>F)", math.nan))) for i, r in table.iterrows()]
    effects.sort(key=lambda e: -abs(e.effect))
    return Analysis(effects, anova, float(np.sqrt(fit.mse_resid)), int(fit.df_resid), len(df), check, robust)


def _cells_table(results: list[RunResult], design: Design, response: str) -> list[str]:
    short = design.short
    lines = ["| cell | " + " | ".join(short.values()) + f" | seeds | {LABELS.get(response, response)} |", "|---" * (len(short) + 3) + "|"]
    for cell, values in design.cells().items():
        stat = describe([value(r, response) for r in results if r.variant == cell])
        lines.append(f"| {cell} | " + " | ".join(str(v) for v in values.values()) + f" | {stat.n} | {stat.fmt()} |")
    return lines


def section(results: list[RunResult], design: Design, folder: Path, name: str, metric: str = "test_err1") -> tuple[list[str], list[str], Analysis | None]:
    """The factorial report's body (Markdown lines), its plots, and the analysis."""
    response = response_of(results, metric)
    levels = ", ".join(f"{design.short[k]}: {lo} → {hi}" for k, (lo, hi) in design.factors.items())
    lines = [f"A {design.describe()} over {levels} (low → high); every cell trained with each seed.", ""]
    if design.alias_lines():
        lines += ["Aliases (effects this fraction cannot tell apart; each is estimated once, under the first name):", ""]
        lines += [f"- {a}" for a in design.alias_lines()] + [""]
    analysis = analyse(results, design, response)
    files: list[str] = []
    if analysis is None:
        lines += [
            "No analysis: the finished runs cannot separate the effects (a cell without a finished run, see the table of "
            "cells) or leave no degrees of freedom for the noise. Run the study again to train what failed, or add seeds (SEEDS=...).",
            "",
        ]
    else:
        lines += [
            "## Effects",
            "",
            f"Effect of going from a factor's low to its high level on the {LABELS.get(response, response)}, in points, averaged over "
            f"the other factors (a linear model with seed as a block; {analysis.n} runs, residual standard deviation "
            f"{analysis.residual_sd:.2f} points on {analysis.residual_df} degrees of freedom; {_noise(analysis)}). Sorted by size. The {len(analysis.effects)} "
            "effects are tested together (Holm): each interval is at the level Holm tests its effect at; an effect is better / worse "
            f"when its interval excludes 0, equivalent when it lies within ±{DELTA_POINTS:g} point, else inconclusive.",
            "",
            "| effect | points of error [Holm-level interval] | p | p, Holm | verdict |",
            "|---|---|---|---|---|",
        ]
        for e in analysis.effects:
            verdict = e.verdict.label
            lines.append(f"| {e.name} | {e.effect:+.2f} [{e.lo:+.2f}, {e.hi:+.2f}] | {e.p:.2g} | {e.p_holm:.2g} | {verdict} |")
        lines += ["", "Type II analysis of variance:", "", "| source | sum of squares | df | F | p |", "|---|---|---|---|---|"]
        for source, ss, dof, f, p in analysis.anova:
            f_text, p_text = ("", "") if math.isnan(f) else (f"{f:.2f}", f"{p:.2g}")
            lines.append(f"| {source} | {ss:.2f} | {dof:g} | {f_text} | {p_text} |")
        plots.effects([e.name for e in analysis.effects], [e.effect for e in analysis.effects], [e.lo for e in analysis.effects],
                      [e.hi for e in analysis.effects], folder / "effects.png", f"{name}: effects on {LABELS.get(response, response)}")  # fmt: skip
        files.append("effects.png")
        for e in [e for e in analysis.effects if len(e.term) == 2 and e.real]:
            file = f"interaction_{design.short[e.term[0]]}_{design.short[e.term[1]]}.png"
            plots.interaction(_interaction_means(results, design, e.term, response), design.short[e.term[0]], design.short[e.term[1]],
                              folder / file, f"{name}: {e.name}")  # fmt: skip
            files.append(file)
    lines += ["", "## Cells", "", *_cells_table(results, design, response), "", "## Plots", "", *[f"![{f}]({f})" for f in files]]
    return lines, files, analysis


def _noise(a: Analysis) -> str:
    check = a.variances.method if a.variances is not None else "not checked"
    if a.robust:
        return f"{check} across cells, so the standard errors are HC3 (robust to unequal variances), not pooled"
    return f"{check} across cells: one pooled variance"


def _interaction_means(results: list[RunResult], design: Design, term: tuple[str, str], response: str) -> dict[str, dict[str, float]]:
    """Mean response (in %) at each level of term[1] (a line) across the levels of term[0]."""
    cells = design.cells()
    a, b = term
    out: dict[str, dict[str, float]] = {}
    for b_level in design.factors[b]:
        out[str(b_level)] = {}
        for a_level in design.factors[a]:
            ys = [100 * value(r, response) for r in results if r.variant in cells and cells[r.variant][a] == a_level and cells[r.variant][b] == b_level]
            out[str(b_level)][str(a_level)] = float(np.mean(ys)) if ys else math.nan
    return out
