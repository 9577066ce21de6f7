"""Factorial studies: designs and their aliases, the analysis recovering planted
effects, bad factor blocks stopping before any run, and a smoke study end to end."""

from __future__ import annotations

import numpy as np
import pytest

from ablations.design import parse_design
from ablations.factorial import analyse
from ablations.runs import RunResult
from ablations.spec import load_ablation
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
