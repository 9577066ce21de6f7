"""Factorial studies: designs and their aliases, the analysis recovering planted
effects, bad factor blocks stopping before any run, and a smoke study end to end."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ablations.analysis.records import RunResult
from ablations.report.factorial import analyse
from ablations.spec import load_ablation
from ablations.spec.design import parse_design
from core.errors import ConfigError
from tests.helpers import run_cli, show, study

FACTORS = {"model.norm": ["lrn", "batchnorm"], "model.dropout": [0.5, 0.0], "data.augment": ["paper", "none"], "model.pool": ["overlapping", "non_overlapping"]}


def planted_runs(design, planted: dict[tuple, float], seeds: int, noise: float, rng) -> list[RunResult]:
    """Runs whose final val_err1 (in %) is 30 + each planted effect / 2 x its +-1 column + a seed offset + noise."""
    runs = []
    for seed in range(seeds):
        for cell, values in design.cells().items():
            x = {k: 1 if values[k] == design.factors[k][1] else -1 for k in design.factors}
            y = 30 + 0.7 * seed + sum(e / 2 * np.prod([x[k] for k in t]) for t, e in planted.items()) + rng.normal(0, noise)
            runs.append(RunResult(cell, seed, f"{cell}-{seed}", {"val_err1": [y / 100]}))
    return runs


def test_a_half_fraction_missing_a_cell_is_not_analysed():
    """In the 8-cell half fraction the 7 terms need every cell: without one (its seeds all
    failed, or still queued) the effects are confounded and a fit would call wrong ones real.
    A full design that misses a cell can still separate them."""
    half = parse_design(FACTORS, {"fraction": 1}, "x")
    runs = planted_runs(half, {("model.norm",): 6.0, ("model.dropout",): -4.0}, seeds=2, noise=0.3, rng=np.random.default_rng(2))
    assert analyse(runs, half) is not None
    gone = next(iter(half.cells()))
    assert analyse([r for r in runs if r.variant != gone], half) is None
    assert analyse([], half) is None
    full = parse_design(FACTORS, "full", "x")
    runs = planted_runs(full, {("model.norm",): 6.0}, seeds=2, noise=0.3, rng=np.random.default_rng(3))
    effects = {e.term: e for e in analyse([r for r in runs if r.variant != next(iter(full.cells()))], full).effects}
    assert effects[("model.norm",)].lo <= 6.0 <= effects[("model.norm",)].hi


def test_planted_effects_are_recovered_and_zero_effects_are_noise():
    design = parse_design(FACTORS, "full", "x")
    planted = {("model.norm",): -2.5, ("model.dropout",): 1.5, ("model.norm", "model.dropout"): 2.0}
    analysis = analyse(planted_runs(design, planted, seeds=3, noise=0.5, rng=np.random.default_rng(1)), design)
    assert analysis.n == 48 and analysis.residual_df == 48 - 1 - 10 - 2
    assert analysis.residual_sd == pytest.approx(0.5, rel=0.3)
    by_term = {e.term: e for e in analysis.effects}
    assert len(by_term) == 4 + 6  # every main effect and two-factor interaction of a full design
    for term, e in by_term.items():
        truth = planted.get(term, 0.0)
        assert e.lo <= truth <= e.hi, (term, truth, e)
        assert e.real == (truth != 0.0), (term, e)
    # the verdict corrects for the 10 effects tested together (Holm's step-down, written out)
    ps = sorted(e.p for e in analysis.effects)
    m = len(ps)
    adjusted = {p: max(min(1.0, (m - j) * ps[j]) for j in range(i + 1)) for i, p in enumerate(ps)}
    for e in analysis.effects:
        assert e.p_holm == pytest.approx(adjusted[e.p]) and e.real == (e.p_holm < 0.05), e
    assert [e.term for e in analysis.effects][:3] == [("model.norm",), ("model.norm", "model.dropout"), ("model.dropout",)]  # sorted by size
    sources = [a[0] for a in analysis.anova]
    assert "seed (block)" in sources and "norm x dropout" in sources and sources[-1] == "Residual"


def test_a_half_fraction_reports_its_aliases_and_estimates_through_them():
    design = parse_design(FACTORS, {"resolution": 4}, "x")
    assert len(design.matrix) == 8 and design.resolution == 4
    assert design.alias_lines() == [
        "defining relation: I = norm·dropout·augment·pool",
        "norm x dropout = augment x pool",
        "norm x augment = dropout x pool",
        "norm x pool = dropout x augment",
    ]
    # an interaction planted on norm x dropout shows up under its alias group's name
    planted = {("data.augment",): 3.0, ("model.norm", "model.dropout"): -2.0}
    analysis = analyse(planted_runs(design, planted, seeds=3, noise=0.3, rng=np.random.default_rng(2)), design)
    names = {e.name: e for e in analysis.effects}
    assert set(names) == {
        "norm",
        "dropout",
        "augment",
        "pool",
        "norm x dropout = augment x pool",
        "norm x augment = dropout x pool",
        "norm x pool = dropout x augment",
    }
    assert names["norm x dropout = augment x pool"].lo <= -2.0 <= names["norm x dropout = augment x pool"].hi
    assert names["augment"].real and not names["pool"].real


def test_a_resolution_v_half_of_five_factors():
    factors = FACTORS | {"optim.name": ["sgd", "adam"]}
    design = parse_design(factors, {"resolution": 5}, "x")
    assert len(design.matrix) == 16 and design.resolution == 5
    assert design.alias_lines() == ["defining relation: I = norm·dropout·augment·pool·name"]  # nothing up to two-factor interactions aliased


@pytest.mark.parametrize(
    "factors, design, message",
    [
        ({"model.norm": ["lrn", "batchnorm"]}, "full", "at least two config keys"),
        ({"model.norm": ["lrn"], "model.pool": ["overlapping", "non_overlapping"]}, "full", "'model.norm' needs exactly two different levels"),
        ({"model.norm": ["lrn", "batchnorm", "none"], "model.pool": ["overlapping", "non_overlapping"]}, "full", "'model.norm' needs exactly two"),
        (FACTORS, {"resolution": 5}, "no fractional design of 4 factors reaches resolution 5"),
        (FACTORS, {"fraction": 2}, "design.fraction must be one of [1] for 4 factors"),
        (FACTORS, "half", "'design' must be full"),
        (FACTORS, {"resolution": "IV"}, "design.resolution is a whole number .3 for III, 4 for IV, 5 for V., not 'IV'"),
        (FACTORS, {"fraction": None}, "'design' must be full"),
        (FACTORS, {"fraction": 1, "resolution": "IV"}, "design.resolution is a whole number"),
    ],
)
def test_bad_designs_name_the_problem(factors, design, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_design(factors, design, "x")


@pytest.mark.parametrize(
    "block, message",
    [
        ("factors: {model.nrom: [lrn, batchnorm], model.pool: [overlapping, non_overlapping]}\n", "model.nrom"),
        ("factors: {model.norm: [lrn, batchnorm, none], model.pool: [overlapping, non_overlapping]}\n", "needs exactly two different levels"),
        ("factors: {model.norm: [lrn, batchnorm], model.pool: [overlapping, non_overlapping], data.augment: [paper, none]}\ndesign: {resolution: 4}\n",
         "no fractional design of 3 factors reaches resolution 4"),
        ("factors: {model.norm: [lrn, batchnorm], model.pool: [overlapping, non_overlapping]}\nvariants: {a: {}}\n", "not variants:"),
    ],
)  # fmt: skip
def test_a_bad_factors_block_exits_2_before_any_run(store, configs, block, message):
    (configs / "ablations" / "badfactors.yaml").write_text("seeds: 1\n" + block)
    proc = run_cli("ablations.study", "badfactors", "--profile", "smoke")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, show(proc)
    from tests.helpers import all_runs

    assert all_runs(store) == []


def test_the_shipped_factorial_files():
    full, half = load_ablation("factorial"), load_ablation("factorial_half")
    assert len(full.variants) == 16 and len(half.variants) == 8 and half.design.resolution == 4
    assert set(half.variants) < set(full.variants)


@pytest.mark.slow
def test_make_ablate_factorial_smoke(store, configs, tmp_path):
    """`make ablate-<factorial> PROFILE=smoke SEEDS=2` on a 2^(3-1) design (4 cells): the
    design and its aliases printed first, each cell once per seed, tagged with its
    levels, and the effects report."""
    (configs / "ablations" / "fact3.yaml").write_text(
        "seeds: 2\nfactors:\n  model.norm: [lrn, batchnorm]\n  model.dropout: [0.5, 0.0]\n  model.pool: [overlapping, non_overlapping]\ndesign: {fraction: 1}\n"
    )
    proc = run_cli("ablations.study", "fact3", "--profile", "smoke", "--seeds", "2", "--parallel", "2", "trainer.max_epochs=1", timeout=900)
    assert proc.returncode == 0, show(proc)
    out = proc.stdout
    assert out.index("design: 2^(3-1) fractional design of resolution III: 4 cells") < out.index("start  ")
    assert "alias: norm = dropout x pool" in out and "alias: dropout = norm x pool" in out
    _, children = study(store, "fact3")
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    for c in children:
        cell = load_ablation("fact3").variants[c.data.tags["variant"]]
        assert {k: c.data.tags[f"factor.{k}"] for k in cell} == {k: str(v) for k, v in cell.items()}
    text = (tmp_path / "reports" / "fact3" / "report.md").read_text()
    assert "## Effects" in text and "| norm = dropout x pool |" in text and "## Cells" in text
    assert (tmp_path / "reports" / "fact3" / "effects.png").stat().st_size > 1000


def test_the_summary_sets_each_main_effect_beside_the_one_at_a_time_result_for_the_same_change(tmp_path):
    """Matched by key and levels in either direction (a reversed one-at-a-time Δ is negated;
    0.0 and 0 are one level), with whether the two intervals overlap; a factor that no
    one-at-a-time study changed says so, and so does one changed only at another profile's
    scale; no empty one-at-a-time table."""
    import json

    from ablations.report.summary import write_summary

    def stat(mean, lo, hi):  # fractions of error, as the reports store them
        return {"n": 3, "mean": mean, "std": 0.01, "lo": lo, "hi": hi}

    def word(lo, hi):
        return "worse" if lo > 0 else "better" if hi < 0 else "inconclusive"

    def variant(name, changes, delta=None):
        c = None if delta is None else {"variant": name, "reference": "base", "n": 5, "estimate": delta[0], "se": (delta[2] - delta[1]) / 5.5, "df": 4,
                                        "lo": delta[1], "hi": delta[2], "sd": 0.01, "delta": 0.01, "method": "paired t", "metric": "val_err1",
                                        "per_seed": [], "verdict": word(delta[1], delta[2])}  # fmt: skip
        return {"variant": name, "seeds": 3, "variant_hash": "", "final_val_err1": stat(0.3, 0.29, 0.31), "comparison": c, "changes": changes}

    def effect(key, low, high, mean, lo, hi):
        return {"term": [key], "levels": [[low, high]], "effect": mean, "lo": lo, "hi": hi, "verdict": word(lo, hi)}

    def one_at_a_time(name, key, levels, delta, profile="cifar"):
        return {"ablation": name, "baseline": "base", "profile": profile, "variants": [variant("base", {}), variant("changed", {key: levels}, delta)]}

    interaction = {
        "term": ["model.norm", "model.pool"],
        "levels": [["lrn", "batchnorm"], ["overlapping", "non_overlapping"]],
        "effect": 0.5,
        "lo": -1,
        "hi": 2,
        "verdict": "inconclusive",
    }
    studies = {
        "dropout": one_at_a_time("dropout", "model.dropout", ["0.5", "0"], (-0.0167, -0.0308, -0.0025)),
        "pooling": one_at_a_time("pooling", "model.pool", ["non_overlapping", "overlapping"], (-0.0155, -0.0387, 0.0076)),  # the other way round
        "normalization": one_at_a_time("normalization", "model.norm", ["lrn", "batchnorm"], (-0.0228, -0.0265, -0.0192)),
        "augmentation": one_at_a_time("augmentation", "data.augment", ["paper", "none"], (-0.01, -0.02, 0.0), profile="demo"),
        "half": {"ablation": "half", "factorial": True, "profile": "cifar", "design": "a design", "effects": [
            effect("model.dropout", "0.5", "0.0", -1.81, -2.96, -0.67), effect("model.pool", "overlapping", "non_overlapping", 1.77, 0.63, 2.92),
            effect("model.norm", "lrn", "batchnorm", -7.13, -8.28, -5.98), effect("data.augment", "paper", "none", -1.84, -2.99, -0.69), interaction,
        ]},
    }  # fmt: skip
    for name, entry in studies.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(entry))
    lines = write_summary(tmp_path).read_text().splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith(("| model.", "| data."))}
    assert "| dropout/changed | -1.67 [-3.08, -0.25] | better | yes |" in rows["model.dropout: 0.5 → 0.0"]
    assert "| pooling/changed | +1.55 [-0.76, +3.87] | inconclusive | yes |" in rows["model.pool: overlapping → non_overlapping"]
    assert "| normalization/changed | -2.28 [-2.65, -1.92] | better | no: the intervals do not overlap |" in rows["model.norm: lrn → batchnorm"]
    assert "not run with profile cifar here" in rows["data.augment: paper → none"]  # the demo-profile study does not count
    assert len(rows) == 4  # main effects only

    for name in ("dropout", "pooling", "normalization", "augmentation"):
        (tmp_path / name / "summary.json").unlink()
    assert "| study | variant |" not in write_summary(tmp_path).read_text()


def test_unequal_cell_variances_switch_to_hc3_standard_errors():
    """One cell ten times noisier than the rest: Bartlett rejects equal variances, and each effect's
    standard error is HC3's, (X'X)^-1 X' diag(e^2 / (1 - h)^2) X (X'X)^-1, written out here with numpy."""
    design = parse_design(FACTORS, {"fraction": 1}, "x")
    rng = np.random.default_rng(5)
    runs = planted_runs(design, {("model.norm",): 3.0}, seeds=4, noise=0.2, rng=rng)
    noisy = next(iter(design.cells()))
    runs = [RunResult(r.variant, r.seed, r.run_id, {"val_err1": [r.final("val_err1") + rng.normal(0, 0.05)]}) if r.variant == noisy else r for r in runs]
    analysis = analyse(runs, design, "val_err1")
    assert analysis.robust and not analysis.variances.pooled and "Bartlett" in analysis.variances.method

    cells = design.cells()
    rows = [[1.0] + [1.0 if cells[r.variant][k] == design.factors[k][1] else -1.0 for k in design.factors] for r in runs]
    # the fraction's 7 kept terms: 4 main effects and 3 interaction columns (each aliased with another), then seed blocks
    kept = design.alias_groups()
    keys = list(design.factors)
    X = np.array([[1.0] + [np.prod([row[1 + keys.index(k)] for k in group[0]]) for group in kept] + [1.0 * (r.seed == s) for s in (1, 2, 3)]
                  for row, r in zip(rows, runs, strict=True)])  # fmt: skip
    y = np.array([100 * r.final("val_err1") for r in runs])
    xtx = np.linalg.inv(X.T @ X)
    beta = xtx @ X.T @ y
    e = y - X @ beta
    h = np.einsum("ij,jk,ik->i", X, xtx, X)
    cov = xtx @ X.T @ np.diag(e**2 / (1 - h) ** 2) @ X @ xtx
    norm = next(i for i, group in enumerate(kept, start=1) if group[0] == ("model.norm",))
    effect = next(x for x in analysis.effects if x.term == ("model.norm",))
    assert effect.effect == pytest.approx(2 * beta[norm])
    se = 2 * np.sqrt(cov[norm, norm])
    ratio = (effect.hi - effect.lo) / 2 / se  # the interval's half-width over the HC3 se: a t multiplier at one of Holm's levels
    multipliers = [stats.t.ppf(1 - 0.05 / k / 2, analysis.residual_df) for k in range(1, 8)]
    assert any(ratio == pytest.approx(m, rel=1e-6) for m in multipliers), (ratio, multipliers)


def test_equal_cell_variances_keep_the_pooled_fit():
    design = parse_design(FACTORS, {"fraction": 1}, "x")
    analysis = analyse(planted_runs(design, {("model.norm",): 3.0}, seeds=4, noise=0.2, rng=np.random.default_rng(6)), design, "val_err1")
    assert not analysis.robust and analysis.variances.pooled
