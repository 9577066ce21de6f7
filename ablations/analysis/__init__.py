"""The suite's statistics as pure functions of numbers (no torch, Lightning or MLflow): one model per study,
four verdicts, families across studies, honest display, censored times to a target, seed planning,
adaptive seeds and effects over the training budget. Errors are fractions in [0, 1], lower is better.

- `verdicts`: Verdict, Estimate, Comparison, decide — the verdict rules (Schuirmann's TOST for equivalence).
- `model`: fit_study, variance_check, seed_plan — the seed-blocked OLS over a study's variants.
- `family`: adjust, levels — Holm's step-down with intervals at the levels it tests at.
- `display`: describe_rate, fmt_interval — logit-scale intervals for error rates, bounds rounded outward.
- `censored`: censored_ratio — a log-normal AFT model with profile-likelihood intervals.
- `power`: detectable_effect, seeds_needed — noncentral t.
- `sequential`: next_round, replay — group-sequential adaptive seeds (Lan–DeMets O'Brien–Fleming spending).
- `curves`: effect_curves — Δ and its verdict at every epoch.
"""

from ablations.analysis.censored import CensoredRatio, censor, censored_ratio
from ablations.analysis.curves import EffectCurve, effect_curves, summarise
from ablations.analysis.display import RateSummary, describe_rate, fmt_interval, fmt_values, round_down, round_up
from ablations.analysis.family import adjust, levels
from ablations.analysis.model import SeedPlan, StudyAnalysis, VarianceCheck, fit_study, seed_plan, variance_check
from ablations.analysis.power import detectable_effect, power_difference, power_equivalence, seeds_needed
from ablations.analysis.sequential import Replay, Round, SeedBounds, next_round, nominal_alphas, replay, runs
from ablations.analysis.verdicts import ALPHA, DELTA, DELTA_LOG_RATIO, MIN_DF, Comparison, Estimate, Verdict, compare, decide, verdict_from_interval

__all__ = [
    "ALPHA", "DELTA", "DELTA_LOG_RATIO", "MIN_DF", "CensoredRatio", "Comparison", "EffectCurve", "Estimate", "RateSummary", "Replay", "Round",
    "SeedBounds", "SeedPlan", "StudyAnalysis", "VarianceCheck", "Verdict", "adjust", "censor", "censored_ratio", "compare", "decide",
    "describe_rate", "detectable_effect", "effect_curves", "fit_study", "fmt_interval", "fmt_values", "levels", "next_round", "nominal_alphas",
    "power_difference", "power_equivalence", "replay", "round_down", "round_up", "runs", "seed_plan", "seeds_needed", "summarise",
    "variance_check", "verdict_from_interval",
]  # fmt: skip
