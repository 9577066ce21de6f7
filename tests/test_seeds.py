"""Seed planning (make power-NAME) and adaptive seeds (SEEDS=auto): the ablation file's bounds, the words a
round prints, and real small studies in a real MLflow store (the rule's statistics: test_verdicts_sequential)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ablations.analysis import SeedBounds, next_round, seeds_needed
from ablations.report import power
from ablations.spec import load_ablation
from ablations.study import adaptive
from ablations.study.runner import main as study_main
from core.errors import ConfigError
from tests.helpers import client, run_cli, show, study

TINY = ["trainer.max_epochs=1", "data.train_size=32", "data.val_size=32"]


def _write(configs, name: str, text: str) -> str:
    (configs / "ablations" / f"{name}.yaml").write_text(text)
    return name


@pytest.mark.parametrize(
    "seeds, message",
    [
        ("{min: 0, max: 5}", "1 <= min <= max"),
        ("{min: 6, max: 5}", "1 <= min <= max"),
        ("{min: 3}", "seeds: {min: 3, max: 10}"),
        ("{min: 3, max: 10, step: 2}", "seeds: {min: 3, max: 10}"),
        ("{min: 3.5, max: 10}", "two integers"),
    ],
)
def test_bad_seed_bounds_are_refused_naming_the_fix(configs, seeds, message):
    _write(configs, "bad", f"baseline: a\nseeds: {seeds}\nvariants: {{a: {{}}, b: {{model.dropout: 0}}}}\n")
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_ablation("bad")


def test_which_studies_are_adaptive(configs):
    auto = load_ablation(_write(configs, "auto", "baseline: a\nseeds: {min: 3, max: 8}\nvariants: {a: {}, b: {model.dropout: 0}}\n"))
    fixed = load_ablation("dropout")
    assert auto.seed_bounds == (3, 8) and auto.seeds == [0, 1, 2]
    assert adaptive.bounds(auto, None, False) == SeedBounds(3, 8)  # the file's bounds: adaptive by default
    assert adaptive.bounds(auto, [0, 1, 2], False) is None  # SEEDS=3 gives the seeds
    assert adaptive.bounds(fixed, None, False) is None
    assert adaptive.bounds(fixed, None, True) == SeedBounds(3, 10)  # SEEDS=auto, no bounds in the file
    assert adaptive.first_seeds(SeedBounds(3, 8)) == [0, 1, 2, 3, 4]  # no interval from fewer than 4 df
    with pytest.raises(ConfigError, match="NO_WAIT"):
        adaptive.bounds(auto, None, True, no_wait=True)
    few = load_ablation(_write(configs, "few", "baseline: a\nseeds: {min: 2, max: 4}\nvariants: {a: {}, b: {model.dropout: 0}}\n"))
    with pytest.raises(ConfigError, match="max >= 5"):
        adaptive.bounds(few, None, False)


def test_seeds_auto_is_refused_before_any_run_where_it_cannot_work(store, configs):
    _write(configs, "few", "baseline: a\nseeds: {min: 2, max: 4}\nvariants: {a: {}, b: {model.dropout: 0}}\n")
    with pytest.raises(ConfigError, match="max >= 5"):
        study_main(["few", "--profile", "smoke", "--seeds", "auto"])
    with pytest.raises(ConfigError, match="count .* or a list"):
        study_main(["few", "--profile", "smoke", "--seeds", "many"])
    assert not client(store).search_experiments(filter_string="name = 'few'")


def test_a_round_in_words():
    """One comparison decided (equivalent: its values are the baseline's), one still open: only the open
    one and its reference get the next seed, and the words say so."""
    rng = np.random.default_rng(3)
    base = {s: 0.5 + 0.01 * float(rng.normal()) for s in range(5)}
    values = {"base": base, "same": dict(base), "noisy": {s: 0.5 + 0.2 * float(rng.normal()) for s in range(5)}}
    r = next_round(values, "base", SeedBounds(5, 8))
    assert r.add == {"base": (5,), "noisy": (5,)} and r.pending == ("noisy",)
    lines = adaptive.summary(1, r, ratio=False)
    assert lines[0] == "after round 1:"
    assert lines[1].startswith("  same vs base: equivalent at 5 seeds (Δ +0.00 points")
    assert lines[2].startswith("  noisy vs base: inconclusive at 5 seeds")
    assert lines[-1] == "round 2: 1 variant still inconclusive (noisy), training seed 5 of base, noisy"


def test_power_without_a_study_says_what_to_run(store, configs):
    with pytest.raises(ConfigError, match="run `make ablate-dropout` first"):
        power.main(["dropout"])


def _final(run) -> float:
    return run.data.metrics["test_err1"]  # the primary metric (the ablation files name none)


@pytest.mark.slow
def test_power_on_a_pilot_study(store, configs):
    """One seed: a clear error; two seeds: per comparison the seeds it has, the sd of the paired difference
    and the seeds needed for ±δ, as computed by hand from the runs' own test_err1 (the primary metric)."""
    first = run_cli("ablations.study", "dropout", "--profile", "smoke", "--seeds", "1", *TINY)
    assert first.returncode == 0, show(first)
    one = run_cli("ablations.report.power", "dropout")
    assert one.returncode == 2 and "at least 2 seeds" in one.stderr and "p0.5 (1), p0 (1)" in one.stderr, show(one)
    assert "make ablate-dropout SEEDS=3" in one.stderr and "Traceback" not in one.stderr
    second = run_cli("ablations.study", "dropout", "--profile", "smoke", "--seeds", "2", *TINY)
    assert second.returncode == 0 and second.stdout.count("skip ") == 2, show(second)
    out = run_cli("ablations.report.power", "dropout")
    assert out.returncode == 0, show(out)
    _, children = study(store, "dropout")
    final = {(c.data.tags["variant"], int(c.data.tags["seed"])): _final(c) for c in children}
    d = np.array([final["p0", s] - final["p0.5", s] for s in (0, 1)])
    sd = float(d.std(ddof=1))
    row = next(line for line in out.stdout.splitlines() if line.startswith("| p0 | p0.5 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2"
    assert float(cells[3].split()[0]) == pytest.approx(100 * sd, abs=0.006)
    assert cells[5] == str(seeds_needed(sd, 0.01)), out.stdout  # a family of one: α = 5%
    assert "δ = ±1 points" in out.stdout


@pytest.mark.slow
def test_adaptive_seeds_end_to_end_and_rerun_skips(store, configs):
    """{min: 5, max: 6}: every variant trains seeds 0-4; a variant identical to the baseline is equivalent
    at 5 seeds and gets no more; the other gets seed 5 (with its reference) exactly when the rule, fed the
    runs' own values, says it is still inconclusive. A rerun trains nothing."""
    _write(
        configs,
        "seq",
        "description: adaptive seeds\nbaseline: base\nseeds: {min: 5, max: 6}\nvariants:\n  base: {}\n  same: {}\n  fast: {optim.lr: 0.05}\n",
    )
    result = run_cli("ablations.study", "seq", "--profile", "smoke", "--parallel", "2", *TINY)
    assert result.returncode == 0, show(result)
    parents, children = study(store, "seq")
    assert len(parents) == 1
    parent = parents[0]
    facts = json.loads(parent.data.tags["adaptive_seeds"])
    assert (facts["min"], facts["max"], facts["looks"]) == (5, 6, [5, 6]) and "O'Brien–Fleming" in facts["rule"]
    assert parent.data.params["seeds"] == "auto"
    seeds = {v: sorted(int(c.data.tags["seed"]) for c in children if c.data.tags["variant"] == v) for v in ("base", "same", "fast")}
    assert seeds["same"] == [0, 1, 2, 3, 4]
    values = {v: {s: _final(c) for c in children if c.data.tags["variant"] == v for s in [int(c.data.tags["seed"])] if s < 5} for v in seeds}
    r = next_round(values, "base", SeedBounds(5, 6))
    assert [c.verdict.label for c in r.comparisons][0] == "equivalent"
    more = "fast" in r.pending
    assert seeds["fast"] == seeds["base"] == list(range(6 if more else 5)), (seeds, r.pending)
    assert "after round 1:" in result.stdout and "same vs base: equivalent at 5 seeds" in result.stdout
    if more:
        assert "round 2: 1 variant still inconclusive (fast), training seed 5 of base, fast" in result.stdout
    assert all(not math.isnan(x) for per in values.values() for x in per.values())

    again = run_cli("ablations.study", "seq", "--profile", "smoke", "--parallel", "2", *TINY)
    assert again.returncode == 0, show(again)
    assert "start " not in again.stdout and again.stdout.count("skip ") == len(children), show(again)
