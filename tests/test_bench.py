"""`make bench` runs end to end: the quick mode prints every row of the table
with positive figures. Timings are not asserted (the quick sizes mean nothing).
The reference it measures against builds, for every toggle, the network the suite builds."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ablations.train.config import load_config
from lightning_modules.layers import PaperLRN
from lightning_modules.networks import build_network
from tests.helpers import run_cli
from tools.bench.common import REFERENCE_TOGGLES
from tools.bench.toggles import TOGGLES, TUTORIAL_REFERENCE
from tools.reference import CrossMapLRN, small_cifar_network, tutorial_network

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
    *[f"{name}: suite / reference" for name in [*TOGGLES, "tutorial 224 px"]],
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
    assert len(goals) == 5 + len(TOGGLES), table  # a goal per toggle; the tutorial's row has none
    for name in TOGGLES:
        assert re.search(rf"^  (PASS|FAIL)  suite / independent reference >= 0.97, {re.escape(name)}, ", table, re.M), name

    figures = json.loads(out.read_text())
    c = figures["cifar"]
    assert c["suite_img_per_s"] > 0 and c["bare_img_per_s"] > 0 and c["ratio"] > 0 and c["against"] == "reference"
    assert figures["cifar_paper"]["augment"] == "paper" and figures["cifar_component"]["against"] == "component"
    assert set(figures["toggles"]) == {*TOGGLES, "tutorial 224 px"}
    assert all(x["ratio"] > 0 and x["against"] == "reference" for x in figures["toggles"].values())
    assert figures["flops"]["peak"] > 0 and figures["channels_last"]["ratio"] > 0
    assert figures["logging"]["call_ms"] > 0
    for size in ("32", "227"):
        for d in figures["data"][size].values():
            assert d["loader_img_per_s"] > 0 and d["pipeline_img_per_s"] > 0
    assert figures["startup"]["existing_store_s"] > 0


def _shapes_and_sizes(net: torch.nn.Module, side: int) -> tuple[tuple[int, ...], list[int]]:
    with torch.no_grad():
        out = net.eval()(torch.zeros(2, 3, side, side))
    return tuple(out.shape), sorted(p.numel() for p in net.parameters())


@pytest.mark.parametrize("toggle", ["relu", *TOGGLES])
def test_the_reference_builds_the_network_the_suite_builds(toggle):
    """Per bench row: the reference's own network has the suite's output and parameter
    tensors (same sizes), so the two loops time the same arithmetic."""
    overrides, layers = TOGGLES.get(toggle, ((), {}))
    suite = build_network(load_config(["model.arch=cifar", *REFERENCE_TOGGLES, *overrides]).model, 10, 32)
    assert _shapes_and_sizes(small_cifar_network(10, **layers), 32) == _shapes_and_sizes(suite, 32)


def test_the_reference_builds_the_tutorial_network():
    layers = {k: v for k, v in TUTORIAL_REFERENCE.items() if k != "arch"}
    suite = build_network(load_config(["model.arch=tutorial"]).model, 10, 224)
    assert _shapes_and_sizes(tutorial_network(10, **layers), 224) == _shapes_and_sizes(suite, 224)


def test_the_references_lrn_is_the_papers():
    x = torch.randn(2, 32, 6, 6) * 3
    assert torch.allclose(CrossMapLRN(32)(x), PaperLRN()(x), rtol=1e-5, atol=1e-6)
