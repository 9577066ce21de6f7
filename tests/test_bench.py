"""`make bench` runs end to end: the quick mode prints every row of the table
with positive figures. Timings are not asserted (the quick sizes mean nothing)."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import run_cli

ROWS = [
    "cpu",
    "torch threads",
    "suite, no augmentation",
    "independent reference, no augmentation",
    "suite / reference, no augmentation",
    "suite, paper's augmentation",
    "independent reference, paper's augmentation",
    "suite / reference, paper's augmentation",
    "component loop (suite's network, pipeline)",
    "suite / component loop, no augmentation",
    "achieved, suite / reference",
    "measured peak (float32 2048^3 matmul)",
    "cifar profile network, channels_last auto",
    "the same, channels_last=false",
    "speed-up of the default",
    "log_metrics per call",
    "share of a logged step",
    "share of training time (every 50 steps)",
    *[f"{aug} {size} px (stored {stored}): loader / worker" for size, stored in (("32", "32"), ("227", "256")) for aug in ("none", "paper", "extended")],
    "keeps up? paper 32 px, num_workers=0",
    "command -> first training step, existing store",
    "make demo wall time",
]
NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def figure(table: str, label: str) -> float:
    match = re.search(rf"^  {re.escape(label)}\s+{NUMBER}", table, re.M)
    assert match, f"no figure for {label!r} in:\n{table}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.slow
def test_quick_bench_prints_the_whole_table(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "demo_time.txt").write_text("9.5 minutes wall time for `make demo`\n")
    out = tmp_path / "bench.json"
    result = run_cli("tools.bench", "--quick", "--json", str(out), timeout=300, env={"ABLATION_REPORTS": str(tmp_path / "reports")})
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for label in ROWS:
        assert re.search(rf"^  {re.escape(label)}\s", table, re.M), f"row {label!r} missing from:\n{table}"
    for label in [
        "suite, no augmentation",
        "independent reference, paper's augmentation",
        "suite / reference, no augmentation",
        "measured peak (float32 2048^3 matmul)",
        "speed-up of the default",
        "log_metrics per call",
        "command -> first training step, existing store",
    ]:
        assert figure(table, label) > 0, label
    for size, stored in (("32", "32"), ("227", "256")):
        for aug in ("none", "paper", "extended"):
            assert figure(table, f"{aug} {size} px (stored {stored}): loader / worker") > 0
    assert "skipped" in table or "alexnet suite" in table  # the GPU case: measured or said why not
    assert "9.5 minutes wall time" in table
    goals = re.findall(r"^  (PASS|FAIL)  ", table, re.M)
    assert len(goals) == 5, table

    figures = json.loads(out.read_text())
    c = figures["cifar"]
    assert c["suite_img_per_s"] > 0 and c["bare_img_per_s"] > 0 and c["ratio"] > 0 and c["against"] == "reference"
    assert figures["cifar_paper"]["augment"] == "paper" and figures["cifar_component"]["against"] == "component"
    assert figures["flops"]["peak"] > 0 and figures["channels_last"]["ratio"] > 0
    assert figures["logging"]["call_ms"] > 0
    for size in ("32", "227"):
        for d in figures["data"][size].values():
            assert d["loader_img_per_s"] > 0 and d["pipeline_img_per_s"] > 0
    assert figures["startup"]["existing_store_s"] > 0
