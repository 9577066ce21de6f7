"""`make report-<name>` reads MLflow and writes the report: on a store whose runs carry
known metrics, its figures are those numbers, and it runs without torch."""

from __future__ import annotations

import subprocess
import sys

from ablations import tracking
from core.paths import ROOT
from tests.helpers import client

FINAL = {("relu", 0): 0.30, ("relu", 1): 0.40, ("relu", 2): 0.50, ("tanh", 0): 0.32, ("tanh", 1): 0.43, ("tanh", 2): 0.51}


def _crafted_study(store: str) -> str:
    """An 'activation' study as a real one leaves it, with chosen final val_err1 values."""
    c = client(store)
    exp = tracking.experiment_id("activation")  # as a study creates it: its artifacts beside the store
    parent = c.create_run(exp, run_name="activation-crafted", tags={"study": "true", "ablation": "activation", "profile": "smoke"}).info.run_id
    c.log_param(parent, "variants", "relu,tanh")
    c.log_param(parent, "seeds", "0,1,2")
    for (variant, seed), final in FINAL.items():
        tags = {"mlflow.parentRunId": parent, "ablation": "activation", "variant": variant, "seed": str(seed)}
        run = c.create_run(exp, run_name=f"{variant}-seed{seed}", tags=tags).info.run_id
        c.log_param(run, "steps_per_epoch", "10")
        for epoch, (val, train) in enumerate([(0.8, 0.9), (final, 0.2)]):
            c.log_metric(run, "val_err1", val, step=epoch)
            c.log_metric(run, "train_err1", train, step=epoch)
        for step, err in [(5, 0.6), (10, 0.4), (15, 0.3), (20, 0.2)]:
            c.log_metric(run, "train_err1_step", err, step=step)
        c.set_terminated(run, "FINISHED")
    c.set_terminated(parent, "FINISHED")
    return parent


def test_report_reads_the_runs_and_needs_no_torch(store, tmp_path):
    parent = _crafted_study(store)
    code = "import sys; from ablations.report.write import main; main(['activation']); print('torch loaded:', 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch loaded: False" in proc.stdout
    text = (tmp_path / "reports" / "activation" / "report.md").read_text()
    assert "| relu | 3 | 40.00 ± 10.00 [19.14, 65.24] |" in text  # logit-scale interval, bounds rounded outward (tests/test_stats.py)
    assert "| tanh | 3 | 42.00 ± 9.54 [" in text and "+2.00 (per seed: +2.00, +3.00, +1.00) | inconclusive" in text and "(p 0.074)" in text
    # epochs to 25%: the step readings cross between steps 15 (0.3) and 20 (0.2): step 17.5 of 10 per epoch
    assert "| relu | 1.75 ± 0.00 [1.75, 1.75] (3/3 reached) | — |" in text
    assert "report" in {a.path for a in client(store).list_artifacts(parent)}


def test_what_a_variant_changes_counts_choices_only():
    """A variant's runs reused from a study with other threads (or trained on more devices)
    change only what the ablation file changes; the summary matches studies by it."""
    from ablations.analysis.records import RunResult
    from ablations.report.write import _changes

    common = {"model.norm": "lrn", "seed": "0", "steps_per_epoch": "128", "resolved.channels_last": "True", "data.root": "datasets"}
    base = RunResult("overlapping", 0, "a", {}, params=common | {"model.pool": "overlapping", "trainer.threads": "None"})
    elsewhere = {"trainer.threads": "1", "seed": "1", "steps_per_epoch": "96", "resolved.channels_last": "False", "data.root": "/x"}
    other = RunResult("non_overlapping", 1, "b", {}, params=common | elsewhere | {"model.pool": "non_overlapping"})
    assert _changes([base, other], "non_overlapping", "overlapping") == {"model.pool": ["overlapping", "non_overlapping"]}


def test_the_summary_tests_each_comparison_once_across_studies(tmp_path):
    """Two studies that compare the same two configurations (by variant_hash) give one row, from
    the study with more seeds, in one family with the store's other comparisons."""
    import json

    from ablations.report.summary import write_summary

    def entry(name, variant, n, estimate, hashes):
        c = {"variant": variant, "reference": "base", "n": n, "estimate": estimate, "se": 0.01, "df": n - 1, "lo": 0, "hi": 0, "sd": 0.02,
             "delta": 0.01, "method": "paired t", "metric": "test_err1", "per_seed": [], "verdict": "worse"}  # fmt: skip
        return {"ablation": name, "baseline": "base", "profile": "demo", "variants": [
            {"variant": "base", "variant_hash": hashes[0], "comparison": None, "changes": {}},
            {"variant": variant, "variant_hash": hashes[1], "comparison": c, "changes": {}}]}  # fmt: skip

    studies = {"big": entry("big", "no_x", 5, 0.05, ("h0", "h1")), "small": entry("small", "x_off", 3, 0.04, ("h0", "h1")),
               "other": entry("other", "no_y", 5, 0.06, ("h0", "h2"))}  # fmt: skip
    for name, e in studies.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(e))
    text = write_summary(tmp_path).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(rows) == 2 and "all 2 tested as one family" in text
    assert "| [big](big/report.md) | no_x (also small/x_off) | base | 5 |" in text
    assert "Holm over 2" in text  # adjusted over the store's family, not each study's own
