"""The paper's claims as data (ablations.spec.claims) and the scoreboard's verdicts (ablations.analysis.claims)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from ablations.analysis.claims import ClaimVerdict, judge
from ablations.analysis.verdicts import Estimate, compare
from ablations.report import render as render_md
from ablations.report.summary import SCOREBOARD_END, SCOREBOARD_START, scoreboard, write_scoreboard
from ablations.spec import load_ablation
from core.errors import ConfigError
from core.paths import ROOT


def _c(estimate: float, se: float, df: float = 8, variant: str = "none", reference: str = "lrn"):
    """A comparison of Δ = variant − reference (fractions of error) from a t-based fit."""
    return compare(variant, reference, Estimate(estimate, se, df), n=int(df) + 1, delta=0.01, method="paired t")


def _interval(estimate: float, se: float, df: float) -> tuple[float, float]:
    half = stats.t.ppf(0.975, df) * se  # computed here, independently of Estimate.interval
    return estimate - half, estimate + half


@pytest.mark.parametrize(
    ("estimate", "se", "flip", "size", "verdict", "why"),
    [
        (0.020, 0.004, False, 0.02, ClaimVerdict.REPLICATED, "covers the claimed size"),  # [1.1, 2.9] points holds 2
        (0.005, 0.001, False, 0.02, ClaimVerdict.REPLICATED, "smaller than claimed"),  # [0.27, 0.73] excludes 2
        (-0.020, 0.004, False, 0.02, ClaimVerdict.CONTRADICTED, "opposite direction"),  # lower error without LRN
        (0.001, 0.002, False, 0.02, ClaimVerdict.CONTRADICTED, "ruled out"),  # [-0.36, 0.56] inside ±2
        (0.010, 0.010, False, 0.02, ClaimVerdict.INCONCLUSIVE, ""),  # [-1.3, 3.3]: neither
        (-0.020, 0.004, True, 0.02, ClaimVerdict.REPLICATED, "covers"),  # measured as with − without: turned
    ],
)
def test_a_claim_is_judged_from_the_interval_of_without_minus_with(estimate, se, flip, size, verdict, why):
    c = _c(estimate, se) if not flip else _c(estimate, se, variant="lrn", reference="none")
    j = judge(c, flip=flip, delta=size, comparable=True, size=size)
    assert j.verdict is verdict and why in j.why
    lo, hi = _interval(-estimate if flip else estimate, se, 8)
    assert j.comparison.lo == pytest.approx(lo) and j.comparison.hi == pytest.approx(hi)
    assert j.comparison.variant == "none" and j.comparison.reference == "lrn"  # always without vs with


def test_the_claims_size_is_its_delta():
    """The same data: equivalent within a claimed 2 points, inconclusive for a claimed 0.4 (its δ), with
    the seeds that would settle ±0.4 from the two-sided t power computed here."""
    c = _c(0.001, 0.002)
    assert judge(c, flip=False, delta=0.02, comparable=True, size=0.02).verdict is ClaimVerdict.CONTRADICTED
    j = judge(c, flip=False, delta=0.004, comparable=True, size=0.004)
    assert j.verdict is ClaimVerdict.INCONCLUSIVE and j.comparison.delta == 0.004
    assert j.comparison.tost_p == pytest.approx(max(stats.t.sf((0.001 + 0.004) / 0.002, 8), stats.t.cdf((0.001 - 0.004) / 0.002, 8)))
    assert j.comparison.seeds_needed > 9


def test_another_network_or_dataset_is_not_comparable_and_nothing_is_not_measured():
    j = judge(_c(0.02, 0.004), flip=False, delta=0.014, comparable=False, size=0.014)
    assert j.verdict is ClaimVerdict.NOT_COMPARABLE and j.comparison.verdict.label == "worse"
    assert judge(None, flip=False, delta=0.01, comparable=True, size=None).verdict is ClaimVerdict.NOT_MEASURED


def test_a_ratio_claim_uses_the_log_ratio():
    """Figure 1: tanh 6x slower. Measured ×1.2 [1.1, 1.3]: established, far smaller than claimed."""
    c = compare("tanh", "relu", Estimate(math.log(1.2), 0.03, 8), n=9, delta=math.log(1.1), method="AFT")
    j = judge(c, flip=False, delta=math.log(6), comparable=True, size=math.log(6))
    assert j.verdict is ClaimVerdict.REPLICATED and "smaller than claimed" in j.why


def _entry(estimate: float, se: float, dataset: str = "imagefolder:cifar10-jpeg") -> dict:
    c = render_md.comparison_json(_c(estimate, se))
    return {"ablation": "normalization", "network": "cifar", "dataset": dataset, "variants": [{"variant": "none", "comparison": c}]}


def test_the_scoreboard_has_a_row_per_declared_claim(tmp_path):
    rows = scoreboard([_entry(0.02, 0.004)])
    normalization = [r for r in rows if "[normalization]" in r]
    assert len(normalization) == 3  # ImageNet's 1.4, CIFAR-10's 13% -> 11%, and that at the paper's input scale
    imagenet, cifar, paper_inputs = normalization
    assert "not comparable (measured here: without it worse, the claimed direction; **worse**" in imagenet  # made on AlexNet and ImageNet
    assert "**replicated**" in cifar and "covers the claimed size" in cifar and "`cifar`, cifar10-jpeg" in cifar
    assert "not measured: the study has no comparison of these variants" in paper_inputs
    assert any("`pooling`" in r and "not measured: no study of it here" in r for r in rows)
    assert len(rows) - 2 == sum(len(load_ablation(p.stem).claims) for p in (ROOT / "configs" / "ablations").glob("*.yaml"))
    assert "not comparable" in next(r for r in scoreboard([_entry(0.02, 0.004, "shapes")]) if "13% test error" in r)


def test_the_readme_block_is_rewritten_between_its_markers(tmp_path):
    (tmp_path / "normalization").mkdir()
    (tmp_path / "normalization" / "summary.json").write_text(json.dumps(_entry(0.02, 0.004)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{SCOREBOARD_START}\nold\n{SCOREBOARD_END}\n\nafter\n")
    assert write_scoreboard(readme, tmp_path, link="docs/results/")
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{SCOREBOARD_END}\n\nafter\n") and "(docs/results/normalization/report.md)" in text


def test_the_readme_carries_the_scoreboard_of_the_published_results(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert write_scoreboard(readme, ROOT / "docs" / "results", link="docs/results/"), "README.md has no scoreboard markers"
    assert readme.read_text() == (ROOT / "README.md").read_text(), "the README's scoreboard is stale: run `make publish-NAME` or rebuild it"


@pytest.mark.parametrize(
    ("claim", "match"),
    [
        ({"quote": "q", "section": "3", "network": "alexnet", "dataset": "imagenet", "with": "relu", "without": "nope"}, "'without' must name a variant"),
        ({"quote": "q", "section": "3", "network": "vgg", "dataset": "imagenet", "with": "relu", "without": "tanh"}, "network must be one of"),
        ({"quote": "q", "section": "3", "network": "alexnet", "dataset": "imagenet", "with": "relu", "without": "tanh", "size": 140}, "points of error"),
        ({"quote": "q", "network": "alexnet"}, "a claim has quote, section"),
    ],
)
def test_a_bad_claim_is_a_clear_error(claim, match, tmp_path):
    folder = tmp_path / "ablations"
    folder.mkdir()
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "demo.yaml").write_text("{}\n")
    text = json.dumps({"baseline": "relu", "variants": {"relu": {"model.activation": "relu"}, "tanh": {"model.activation": "tanh"}}, "claims": [claim]})
    (folder / "x.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_ablation("x", Path(tmp_path))


def test_the_summary_ends_with_the_scoreboard_after_the_comparisons(tmp_path):
    from ablations.report.summary import CLAIMS_HEADING, write_summary

    (tmp_path / "normalization").mkdir()
    (tmp_path / "normalization" / "summary.json").write_text(json.dumps(_entry(0.02, 0.004)))
    comparisons, _, board = write_summary(tmp_path).read_text().partition(CLAIMS_HEADING)
    assert "| [normalization](normalization/report.md) | none | lrn |" in comparisons  # what the demo prints
    assert "**replicated**" in board and "| “" not in comparisons


def test_an_untuned_figure1_study_says_it_was_not_tuned():
    c = compare("tanh", "relu", Estimate(math.log(1.1), 0.05, 4), n=5, delta=math.log(1.1), method="AFT", metric="epochs_to_train_err")
    entry = {"ablation": "figure1", "network": "cifar", "dataset": "cifar10", "tuned": False,
             "variants": [{"variant": "tanh", "comparison": render_md.comparison_json(c)}]}  # fmt: skip
    row = next(r for r in scoreboard([entry]) if "[figure1]" in r)
    assert "one shared learning rate: not tuned per network" in row and "claimed 6x" in row
    assert "not tuned" not in next(r for r in scoreboard([entry | {"tuned": True}]) if "[figure1]" in r)


def test_an_undecided_row_says_when_the_interval_leaves_out_the_claimed_size():
    """Δ = -0.5 points, t interval about [-2.3, +1.3]: neither established nor inside ±2, but above it lies the claimed +2."""
    lo, hi = _interval(-0.005, 0.008, 8)
    assert lo < -0.02 < hi < 0.02
    row = next(r for r in scoreboard([_entry(-0.005, 0.008)]) if "13% test error" in r and "none vs lrn" in r)
    assert "inconclusive" in row and "the claimed 2 points lies above the interval" in row
