"""Ablation studies end to end: expansion, MLflow grouping, skip on re-run, failures, reports."""

from __future__ import annotations

import subprocess
import uuid

import lightning as L
import pytest
from mlflow import MlflowClient

from ablations import tracking
from ablations.spec import available, load_ablation, parse_seeds
from ablations.study.plan import expand
from ablations.train import assemble
from core.errors import ConfigError
from core.paths import ROOT
from tests.helpers import copy_configs, run_cli, study

REQUIRED = {"activation", "normalization", "pooling", "dropout", "augmentation", "groups", "init", "leave_one_out"}


def test_the_required_ablations_ship():
    assert set(available()) >= REQUIRED


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if load_ablation(n).profile == "tutorial" else n for n in available()])
def test_every_ablation_validates_and_each_variant_trains_a_step(name):
    """Each file expands to valid configs under its own profile (on small synthetic data,
    offline), baseline first, no two variants alike, and every variant runs a training step."""
    ablation = load_ablation(name)
    small = ["data.name=shapes", "data.train_size=64", "data.val_size=32", "data.batch_size=32"]
    runs = expand(ablation, profile=ablation.profile, args=small, seeds=[0])
    assert [r.variant for r in runs][0] == ablation.baseline
    assert len({r.config.hash() for r in runs}) == len(ablation.variants), "two variants have the same config"
    for spec in runs:
        cfg = spec.config
        dm = assemble.datamodule(cfg)
        dm.setup("fit")
        module = assemble.module(cfg, dm)
        trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, datamodule=dm)
        assert trainer.state.finished, spec.name


def test_precedence_variant_beats_args():
    runs = expand(load_ablation("activation"), profile="smoke", args=["model.activation=gelu", "model.dropout=0"], seeds=[0])
    assert [r.config.model.activation for r in runs] == ["relu", "tanh"]
    assert all(r.config.model.dropout == 0.0 for r in runs)


def test_seeds_parsing():
    assert parse_seeds(3, "x") == [0, 1, 2]
    assert parse_seeds("0,4", "x") == [0, 4]
    assert parse_seeds("2", "x") == [0, 1]
    with pytest.raises(ConfigError):
        parse_seeds(0, "x")


@pytest.mark.parametrize(
    "text, message",
    [
        ("variants: {a: {model.dropout: 0}}\n", "baseline"),
        ("baseline: a\nvariants: {a: {model.dropout: 0}, b: {model.dropuot: 0}}\n", "model.dropuot"),
        ("baseline: a\nvariants: {a: {}}\nextra: 1\n", "extra"),
        ("baseline: a\nvariants: []\n", "variants"),
        ("baseline: a\nvariants: {a: {}}\ndemo: no thanks\n", "'demo' must be true or false"),
    ],
)
def test_bad_ablation_files_exit_2_before_mlflow(store, configs, text, message):
    (configs / "ablations" / "broken.yaml").write_text(text)
    result = run_cli("ablations.study", "broken", "--profile", "smoke")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not MlflowClient(store).search_experiments(filter_string="name = 'broken'")


def _report_row(text: str, variant: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {variant} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_study_end_to_end_and_rerun_skips(store, tmp_path):
    """`make ablate-activation PROFILE=smoke SEEDS=2`: one parent, four FINISHED children, a
    report whose figures are those of the runs; running it again trains nothing new."""
    result = run_cli("ablations.study", "activation", "--profile", "smoke", "--seeds", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(store)
    parents, children = study(store, "activation")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["ablation"] == "activation"
    assert sorted(c.info.run_name for c in children) == ["relu-seed0", "relu-seed1", "tanh-seed0", "tanh-seed1"]
    for c in children:
        t = c.data.tags
        assert c.info.status == "FINISHED"
        assert t["mlflow.parentRunId"] == parent.info.run_id
        assert t["ablation"] == "activation" and t["variant"] in ("relu", "tanh") and t["seed"] in ("0", "1")
        assert t["config_hash"] and t["git_commit"]
        assert c.data.params["model.activation"] == t["variant"]
        assert 0.0 <= c.data.metrics[tracking.CLEAN_TRAIN_ERR] <= 1.0  # measured by the run itself
    report = tmp_path / "reports" / "activation" / "report.md"
    text = report.read_text()
    # the report's figures are the runs' own: mean final val_err1 over seeds, and the paired difference
    final = {(c.data.tags["variant"], int(c.data.tags["seed"])): c.data.metrics["val_err1"] for c in children}
    test = {(c.data.tags["variant"], int(c.data.tags["seed"])): c.data.metrics["test_err1"] for c in children}
    relu, tanh = _report_row(text, "relu"), _report_row(text, "tanh")
    assert relu[1] == "2" and tanh[1] == "2"
    assert float(relu[2].split()[0]) == pytest.approx(100 * (final["relu", 0] + final["relu", 1]) / 2, abs=0.006)
    # the verdicts' metric is the test error: the difference of the two seeds' test errors, and no interval from two
    diff = ((test["tanh", 0] - test["relu", 0]) + (test["tanh", 1] - test["relu", 1])) / 2
    assert float(tanh[4].split()[0]) == pytest.approx(100 * diff, abs=0.006) and "per seed" in tanh[4] and "[" not in tanh[4]
    assert "Reproduce: `make ablate-activation PROFILE=smoke SEEDS=0,1`" in text
    for png in ("train_error.png", "val_error.png", "val_error_curves.png"):
        assert (report.parent / png).stat().st_size > 1000
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert (tmp_path / "reports" / "summary.md").exists()

    again = run_cli("ablations.study", "activation", "--profile", "smoke", "--seeds", "2")
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("skip ") == 4
    parents, children = study(store, "activation")
    assert len(parents) == 2 and len(children) == 4  # a new parent, no new child

    # an identical config in another study is reused, not retrained
    other = run_cli("ablations.study", "init", "--profile", "smoke", "--seeds", "1", "model.init=default")
    assert "reuse" in other.stdout, other.stdout
    assert 'Reproduce: `make ablate-init PROFILE=smoke SEEDS=0 ARGS="model.init=default"`' in (tmp_path / "reports" / "init" / "report.md").read_text()
    _, copies = study(store, "init")
    reused = [c for c in copies if "reused_from" in c.data.tags]
    assert reused
    for c in reused:  # the copy carries its source's measurements
        assert c.data.metrics[tracking.CLEAN_TRAIN_ERR] == client.get_run(c.data.tags["reused_from"]).data.metrics[tracking.CLEAN_TRAIN_ERR]


@pytest.mark.slow
def test_a_diverging_variant_fails_alone_and_a_new_file_is_a_new_study(store, configs, tmp_path):
    """A new YAML file is a new ablation; its diverging variant is marked FAILED with the
    reason, the others finish, the study exits non-zero and lists the failure."""
    (configs / "ablations" / "lr_probe.yaml").write_text(
        "description: a new toggle value, and a learning rate that diverges\n"
        "baseline: relu\nseeds: 1\nvariants:\n  relu: {}\n  gelu: {model.activation: gelu}\n  diverge: {optim.lr: 1.0e+6, model.norm: none}\n"
    )
    result = run_cli("ablations.study", "lr_probe", "--profile", "smoke")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "FAILED diverge-seed0" in result.stdout
    _, children = study(store, "lr_probe")
    status = {c.info.run_name: c for c in children}
    assert status["relu-seed0"].info.status == "FINISHED" and status["gelu-seed0"].info.status == "FINISHED"
    failed = status["diverge-seed0"]
    assert failed.info.status == "FAILED"
    assert "non-finite" in failed.data.tags["failure_reason"]
    assert failed.data.tags["diverged"] == "true"
    assert (tmp_path / "reports" / "lr_probe" / "report.md").exists()


@pytest.mark.slow
def test_make_target_for_a_dropped_in_file(store, tmp_path):
    """Dropping a YAML file into the ablations folder makes `make ablate-<name>` work, no
    Makefile edit (a copy of configs/ here, through ABLATION_CONFIGS)."""
    configs = copy_configs(tmp_path)
    name = f"tmp_{uuid.uuid4().hex[:8]}"
    (configs / "ablations" / f"{name}.yaml").write_text(
        "description: dropped in\nbaseline: a\nseeds: 1\nvariants:\n  a: {}\n  b: {model.pool: non_overlapping}\n"
    )
    env = {"ABLATION_CONFIGS": str(configs)}
    import os

    listed = subprocess.run(["make", "-s", "ablations"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ | env)
    assert name in listed.stdout
    result = subprocess.run(
        ["make", f"ablate-{name}", "PROFILE=smoke", "ARGS=trainer.max_epochs=1"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ | env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    _, children = study(store, name)
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert all(c.data.params["trainer.max_epochs"] == "1" for c in children)  # ARGS reached every run
    assert not (ROOT / "configs" / "ablations" / f"{name}.yaml").exists()


def test_a_log_is_followed_to_its_last_line_written_before_the_writer_ended(tmp_path):
    """How a study watches a training process it cannot pipe (forked, or a cluster job):
    lines as they come, a line finished across two writes, and the last words (with no
    newline) written just before the process ended."""
    import threading

    from ablations.study.launch import follow

    log, done = tmp_path / "train.log", threading.Event()

    def write():
        with open(log, "w") as f:
            for part in ["epoch 1/2\nepo", "ch 2/2\n", "error: the last words"]:
                f.write(part)
                f.flush()
        done.set()

    writer = threading.Timer(0.3, write)  # the log does not exist yet when following starts
    writer.start()
    assert list(follow(log, lambda: not done.is_set(), poll_s=0.01)) == ["epoch 1/2", "epoch 2/2", "error: the last words"]
    writer.join()


def test_a_sqlite_store_keeps_its_artifacts_beside_it(store, tmp_path, monkeypatch):
    """Not in the folder a command happened to start in (MLflow's ./mlruns)."""
    monkeypatch.chdir(tmp_path / "..")
    tracking.configure()
    exp = MlflowClient().get_experiment(tracking.experiment_id("pooling"))
    assert exp.artifact_location == (tmp_path / "mlruns" / "pooling").as_uri()


class _CannotStart:
    """A launcher whose processes cannot start (as a fork fails when memory runs out):
    the suite's own launcher interface, so that an error inside one run's thread can be
    made to happen."""

    name, slots = "local", 2

    def train(self, spec, run_id):
        raise OSError("cannot allocate memory")

    def flush(self):
        return []

    def stop(self):
        pass


def test_an_error_in_one_run_fails_that_run_not_the_study(store):
    """The error becomes the run's FAILED outcome with its reason; every other run still
    gets its turn, the parent ends FAILED (not RUNNING) and the study exits 1."""
    from ablations.study.runner import Study

    s = Study("pooling", "smoke", seeds=[0], launcher=_CannotStart())
    assert s.run() == 1
    parents, children = study(store, "pooling")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert len(children) == 2 and all(c.info.status == "FAILED" for c in children)
    assert all("could not start: OSError: cannot allocate memory" in c.data.tags["failure_reason"] for c in children)
    assert {c.data.tags.get("variant") for c in children} == {"overlapping", "non_overlapping"}


def test_no_training_process_starts_after_the_launcher_was_stopped(store):
    """Ctrl-C stops the processes that run; a run whose thread was about to start one when
    it came must not start it (the study would wait for that whole run to train)."""
    import signal

    from ablations.study.launch import LocalLauncher

    launcher = LocalLauncher(parallel=2)
    launcher.stop()
    spec = expand(load_ablation("pooling"), profile="smoke", args=[], seeds=[0])[0]
    ended = launcher.train(spec, "no-run")
    assert ended.code == -signal.SIGINT and "before this run started" in ended.tail
    assert sorted(launcher._free) == [0, 1]  # its slot is back


def test_variants_runs_a_subset_with_its_baseline_and_references():
    """VARIANTS=a,b: those variants, the baseline, and each one's reference (compare:); a name the file
    lacks is a clear error before anything runs."""
    from ablations.spec import load_ablation
    from ablations.study.runner import only

    normalization = load_ablation("normalization")
    sub = only(normalization, ["none_paper_inputs"])
    assert list(sub.variants) == ["lrn", "lrn_paper_inputs", "none_paper_inputs"]  # the baseline, the pair's reference, the variant
    assert sub.compare == {"none_paper_inputs": "lrn_paper_inputs"} and sub.reference("none_paper_inputs") == "lrn_paper_inputs"
    assert list(only(normalization, ["none"]).variants) == ["lrn", "none"] and only(normalization, ["none"]).compare == {}
    with pytest.raises(ConfigError, match="VARIANTS=nonee: no variant nonee in .*normalization.yaml; its variants are lrn, batchnorm, none"):
        only(normalization, ["nonee"])
