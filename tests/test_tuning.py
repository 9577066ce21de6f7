"""Tuning each variant's learning rate before the comparison (TUNE=1): the tuning runs
in MLflow, the values chosen, resuming, and a tuner that picks a planted best."""

from __future__ import annotations

import math
import os
import subprocess

import pytest

from ablations import tracking
from ablations.report import read
from ablations.spec import load_ablation, parse_tune
from ablations.study import tuning
from core.paths import ROOT
from tests.helpers import client, run_cli, show, study

# measured: at 0.02 this learns to about 37% val error in 3 epochs; at 1e-6 it stays at chance (90%)
LEARNS = "model.norm=batchnorm model.dropout=0 data.augment=none data.train_size=2048 data.val_size=256 trainer.max_epochs=3"


def _children(store: str, name: str):
    parents, children = study(store, name)
    tuning_runs = [c for c in children if c.data.tags.get("tuning") == "true"]
    return parents, tuning_runs, [c for c in children if c not in tuning_runs]


@pytest.mark.slow
def test_make_ablate_with_tune_tunes_then_trains_and_a_rerun_trains_nothing(store, tmp_path):
    """`make ablate-activation PROFILE=smoke SEEDS=2 TUNE=1` (one epoch per run, two at a
    time), after the same study at the file's shared rate."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    make = ["make", "-s", "ablate-activation", "PROFILE=smoke", "SEEDS=2", "PARALLEL=2", "ARGS=trainer.max_epochs=1"]
    shared = subprocess.run(make, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert shared.returncode == 0, show(shared)
    tuned = subprocess.run([*make, "TUNE=1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert tuned.returncode == 0, show(tuned)
    parents, tuning_runs, runs = _children(store, "activation")
    parent = next(p for p in parents if p.data.tags.get("tuned") == "true")
    grid = load_ablation("activation").tune.space["optim.lr"]
    # the tuning runs: every candidate of each variant, tagged, at a tuning seed, nested under the study
    assert sorted((r.data.tags["variant"], float(r.data.tags["tune.optim.lr"])) for r in tuning_runs) == sorted(
        (v, lr) for v in ("relu", "tanh") for lr in grid
    )
    assert all(r.data.params["seed"] == "1000" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in tuning_runs)
    # each variant's chosen value on the parent; one FINISHED run per variant and seed at it
    chosen = {v: float(parent.data.params[f"tuned.{v}.optim.lr"]) for v in ("relu", "tanh")}
    assert all(lr in grid for lr in chosen.values())
    at_choice = [r for r in runs if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    assert sorted((r.data.tags["variant"], r.data.tags["seed"]) for r in at_choice) == [("relu", "0"), ("relu", "1"), ("tanh", "0"), ("tanh", "1")]
    assert all(r.info.status == "FINISHED" and float(r.data.params["optim.lr"]) == chosen[r.data.tags["variant"]] for r in at_choice)
    text = (tmp_path / "reports" / "activation" / "report.md").read_text()
    assert "## Tuning" in text and f"| relu | optim.lr={chosen['relu']:g} |" in text
    assert "### At one shared optim.lr and each at its best" in text
    assert (tmp_path / "reports" / "activation" / "sensitivity.png").stat().st_size > 1000

    again = subprocess.run([*make, "TUNE=1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, show(again)
    assert "\nstart  " not in again.stdout and again.stdout.count("\nskip   ") == 8 + 4, again.stdout[-3000:]


@pytest.mark.slow
def test_the_tuner_picks_a_planted_best_and_warns_at_the_edge(store, configs, tmp_path):
    """Three rates with known outcomes: 1e-6 learns nothing, 1e4 diverges (FAILED: it
    loses), 0.02 learns. The tuner must pick 0.02; with 0.02 the highest rate searched,
    it must also warn that the grid should be widened."""
    (configs / "ablations" / "planted.yaml").write_text(
        "description: a planted best learning rate\nbaseline: relu\nseeds: 1\nvariants:\n  relu: {}\n"
        "tune:\n  space: {optim.lr: [1.0e-6, 0.02, 1.0e+4]}\n  seeds: 1\n"
    )
    proc = run_cli("ablations.study", "planted", "--profile", "demo", "--tune", *LEARNS.split(), timeout=900)
    assert proc.returncode == 0, show(proc)
    assert "tuned  relu: optim.lr=0.02" in proc.stdout and "warning" not in proc.stdout, proc.stdout[-3000:]
    _, tuning_runs, _ = _children(store, "planted")
    diverged = next(r for r in tuning_runs if r.data.tags["tune.optim.lr"] == "10000.0")
    assert diverged.info.status == "FAILED" and "non-finite" in diverged.data.tags["failure_reason"]

    (configs / "ablations" / "planted.yaml").write_text(
        "description: a planted best learning rate\nbaseline: relu\nseeds: 1\nvariants:\n  relu: {}\ntune:\n  space: {optim.lr: [1.0e-6, 0.02]}\n"
    )
    edge = run_cli("ablations.study", "planted", "--profile", "demo", "--tune", *LEARNS.split(), timeout=900)
    assert edge.returncode == 0, show(edge)
    assert "warning: relu: the best optim.lr (0.02) is the highest value searched" in edge.stdout
    assert "no run" not in edge.stdout and edge.stdout.count("\nstart  ") == 0  # every run finished before
    assert "**Warning:** relu: the best optim.lr (0.02) is the highest value searched" in (tmp_path / "reports" / "planted" / "report.md").read_text()


def _crafted(store: str, planted: dict[str, dict[float, float | None]]) -> list:
    """Finished tuning runs whose final val_err1 is planted (None: a FAILED run)."""
    c = client(store)
    exp = c.create_experiment("crafted")
    runs = []
    for variant, by_lr in planted.items():
        for lr, err in by_lr.items():
            run = c.create_run(exp, tags={"variant": variant, "tuning": "true", "tune.optim.lr": str(lr)}).info.run_id
            if err is not None:
                c.log_metric(run, "val_err1", err)
            c.set_terminated(run, "FINISHED" if err is not None else "FAILED")
            runs.append(c.get_run(run))
    return runs


def test_choose_per_variant_shared_and_edges(store):
    tune = parse_tune({"space": {"optim.lr": [0.001, 0.01, 0.1, 1.0]}}, "x")
    runs = _crafted(store, {"relu": {0.001: 0.5, 0.01: 0.3, 0.1: 0.2, 1.0: None}, "tanh": {0.001: 0.4, 0.01: 0.25, 0.1: 0.36, 1.0: 0.6}})
    found = tuning.candidates(runs, tune)
    assert {(c.variant, c.values["optim.lr"]): c.score[0] for c in found}[("relu", 1.0)] == math.inf  # FAILED loses
    assert tuning.choose(found, tune, ["relu", "tanh"]) == {"relu": {"optim.lr": 0.1}, "tanh": {"optim.lr": 0.01}}
    # one value for all: the best mean over the variants, 0.01 (0.275) before 0.1 (0.28); 1.0 failed for relu
    shared = parse_tune({"space": {"optim.lr": [0.001, 0.01, 0.1, 1.0]}, "per_variant": False}, "x")
    assert tuning.choose(found, shared, ["relu", "tanh"]) == {"relu": {"optim.lr": 0.01}, "tanh": {"optim.lr": 0.01}}
    assert tuning.at_edge(tune, {"relu": {"optim.lr": 0.1}}) == []
    assert tuning.at_edge(tune, {"relu": {"optim.lr": 1.0}}) == ["relu: the best optim.lr (1) is the highest value searched; widen tune.space.optim.lr past it"]
    assert "lowest" in tuning.at_edge(tune, {"tanh": {"optim.lr": 0.001}})[0]


def test_a_variant_whose_every_candidate_failed_gets_no_value(store):
    """Not the least bad of its failures (the first, as min over equal infinities would give)."""
    tune = parse_tune({"space": {"optim.lr": [0.1, 1.0]}}, "x")
    found = tuning.candidates(_crafted(store, {"relu": {0.1: 0.3, 1.0: None}, "tanh": {0.1: None, 1.0: None}}), tune)
    assert tuning.choose(found, tune, ["relu", "tanh"]) == {"relu": {"optim.lr": 0.1}}
    shared = parse_tune({"space": {"optim.lr": [0.1, 1.0]}, "per_variant": False}, "x")
    assert tuning.choose(found, shared, ["relu", "tanh"]) == {}  # no value trains both


def test_candidate_values_read_back_as_the_grid_wrote_them():
    """Tags hold str(value): the grid's own values come back (False is not bool('False'),
    0.0005 is not int('0.0005') because the grid starts with 0), Optuna's as floats."""
    grid = parse_tune({"space": {"data.ten_crop": [False, True], "optim.weight_decay": [0, 0.0005]}}, "x")
    tags = {"tune.data.ten_crop": "False", "tune.optim.weight_decay": "0.0005"}
    assert read._values(tags, grid) == {"data.ten_crop": False, "optim.weight_decay": 0.0005}
    tags["tune.optim.weight_decay"] = "0"
    assert read._values(tags, grid)["optim.weight_decay"] == 0
    optuna = parse_tune({"space": {"optim.lr": {"min": 0.001, "max": 0.1}}, "search": "optuna"}, "x")
    assert read._values({"tune.optim.lr": "0.0123"}, optuna) == {"optim.lr": 0.0123}


def test_optuna_search_trains_its_trials_and_tells_each_once():
    """Round by round as the study drives it: ask, train (here: a planted score, best at
    lr 0.01), tell everything found so far. It must ask for `trials` candidates per
    variant, not fewer (a told candidate told again counted as a trial of its own), and
    a new search over the same results (a resumed study) must ask for nothing more."""
    tune = parse_tune({"space": {"optim.lr": {"min": 0.0001, "max": 1.0}}, "search": "optuna", "trials": 6}, "x")
    search, found, rounds = tuning.OptunaSearch(tune, ["relu", "tanh"]), [], 0
    while True:
        search.tell(found)
        asked = search.ask()
        if not asked:
            break
        rounds += 1
        for variant, candidates in asked.items():
            for values in candidates:
                found.append(tuning.Candidate(variant, values, [((math.log10(values["optim.lr"]) + 2) ** 2, 0.0)]))
    assert rounds == 6 and len(found) == 12
    for optuna_study in search.studies.values():
        assert len(optuna_study.trials) == 6 and all(t.state.name == "COMPLETE" for t in optuna_study.trials)
    resumed = tuning.OptunaSearch(tune, ["relu", "tanh"])
    resumed.tell(found)
    assert resumed.ask() == {} and all(len(s.trials) == len({tuning._key(c.values) for c in found if c.variant == v}) for v, s in resumed.studies.items())


def _timed(c, exp: str, variant: str, lr: float, errs: list[float]) -> str:
    """A finished tuning run (10 steps per epoch) whose running training error at the end of
    epochs 1, 2, 3 is `errs`; returns its id."""
    run = c.create_run(exp, tags={"variant": variant, "tuning": "true", "tune.optim.lr": str(lr)}).info.run_id
    c.log_param(run, "steps_per_epoch", "10")
    for step, err in zip((10, 20, 30), errs, strict=True):
        c.log_metric(run, "train_err1_step", err, step=step)
    c.set_terminated(run, "FINISHED")
    return run


def test_time_to_target_objective_ranks_by_epochs_then_by_final_error(store):
    tune = parse_tune({"space": {"optim.lr": [0.01, 0.1]}, "objective": "epochs_to_train_err", "target": 0.25}, "x")
    c = client(store)
    exp = c.create_experiment("times")
    scores = {lr: read.score(c.get_run(_timed(c, exp, "a", lr, errs)), tune) for lr, errs in {0.01: [0.5, 0.3, 0.28], 0.1: [0.4, 0.2, 0.1]}.items()}
    assert scores[0.01] == (math.inf, 0.28)  # never reached: ranked by its last training error
    assert scores[0.1] == pytest.approx((1.75, 0.1))  # 0.4 at epoch 1, 0.2 at epoch 2: 0.25 at 1 + 0.15 / 0.2


def test_the_report_shows_the_choice_of_a_variant_that_never_reached_the_target(store, tmp_path):
    """Under the time-to-target objective, a variant none of whose candidates reached the
    target is still tuned, by its final running training error: the report says so, and
    says what that error was, instead of a bare n/a."""
    from ablations.analysis.study import analyse_study
    from ablations.report.read import RunData, StudyData
    from ablations.report.write import tuning_section

    tune = parse_tune({"space": {"optim.lr": [0.01, 0.1]}, "objective": "epochs_to_train_err", "target": 0.25}, "x")
    c = client(store)
    exp = c.create_experiment("never")
    planted = {"a": {0.01: [0.5, 0.3, 0.28], 0.1: [0.4, 0.2, 0.1]}, "b": {0.01: [0.6, 0.5, 0.4], 0.1: [0.5, 0.4, 0.3]}}
    ids = [_timed(c, exp, variant, lr, errs) for variant, by_lr in planted.items() for lr, errs in by_lr.items()]
    study = StudyData("never", "p", "never", {}, {}, [], [RunData.from_mlflow(c.get_run(i)) for i in ids])
    result = analyse_study("never", [], ["a", "b"], "a", {}, "val_err1", 0.01)
    lines, plots = tuning_section("never", tune, study, result, tmp_path)
    text = "\n".join(lines)
    assert "| a | optim.lr=0.1 | 1.75 | 2 |" in text
    assert "| b | optim.lr=0.1 | not reached (running train err 30.0 at the end) | 2 |" in text
    assert "ranks behind every one that did, by its running training error at the end" in text
    assert (tmp_path / plots[0]).stat().st_size > 1000


def test_a_bad_tune_block_exits_2_before_anything_runs(store, configs):
    (configs / "ablations" / "badtune.yaml").write_text("baseline: a\nvariants: {a: {}}\ntune: {space: {optim.lrr: [0.1, 0.2]}}\n")
    proc = run_cli("ablations.study", "badtune", "--profile", "smoke", "--tune")
    assert proc.returncode == 2 and "optim.lrr" in proc.stderr, show(proc)
    proc = run_cli("ablations.study", "pooling", "--profile", "smoke", "--tune")
    assert proc.returncode == 2 and "no tune: block" in proc.stderr, show(proc)
    assert not tracking.newest_study("pooling")
    # the tuning runs' own configs are checked too: a budget with fewer images than a batch
    tiny = "baseline: a\nvariants: {a: {}}\ntune: {space: {optim.lr: [0.1, 0.2]}, budget: {data.train_size: 16}}\n"
    (configs / "ablations" / "tinytune.yaml").write_text(tiny)
    proc = run_cli("ablations.study", "tinytune", "--profile", "smoke", "--tune")
    assert proc.returncode == 2 and "fewer than data.batch_size=32" in proc.stderr, show(proc)
    assert not tracking.newest_study("tinytune")


@pytest.mark.slow
def test_a_study_whose_every_candidate_diverges_fails_clearly(store, configs):
    """Every rate diverges (FAILED, non-finite loss): the study says so, marks its parent
    FAILED and exits 1, instead of training the variant at the first failed rate."""
    (configs / "ablations" / "hopeless.yaml").write_text("baseline: a\nseeds: 1\nvariants: {a: {}}\ntune: {space: {optim.lr: [1.0e+4, 1.0e+5]}, seeds: 1}\n")
    proc = run_cli("ablations.study", "hopeless", "--profile", "smoke", "--tune", "model.norm=none", timeout=300)
    assert proc.returncode == 1, show(proc)
    assert "tuning found no usable value for a" in proc.stdout, show(proc)
    parents, tuning_runs, trained = _children(store, "hopeless")
    assert [p.info.status for p in parents] == ["FAILED"] and not trained
    assert len(tuning_runs) == 2 and all(r.info.status == "FAILED" for r in tuning_runs)
