"""Shipped evidence: a published study's runs in one file (ablations.report.evidence), from
which `make report-NAME FROM=docs/results/NAME` rebuilds its report byte for byte."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from ablations.report import evidence
from ablations.report.write import main as report_main
from core.errors import ConfigError
from core.paths import ROOT
from tests.test_report import FINAL, _crafted_study

PUBLISHED = ROOT / "docs" / "results"
SHIPPED = sorted(p.parent for p in PUBLISHED.glob(f"*/{evidence.FILE}"))


def _rebuild(folder: Path, tmp_path: Path, name: str) -> Path:
    """A copy of a published study's folder holding only its evidence file, rebuilt in place."""
    copy = tmp_path / "rebuilt" / name
    copy.mkdir(parents=True)
    shutil.copy(evidence.path_in(folder), copy)
    assert report_main([name, "--from", str(copy)]) == 0
    return copy


def test_a_published_study_rebuilds_from_its_file_alone(store, tmp_path, monkeypatch, capsys):
    _crafted_study(store)
    docs = tmp_path / "docs"
    assert report_main(["activation", "--publish", str(docs)]) == 0
    published = docs / "activation"
    data = json.loads(gzip.decompress(evidence.path_in(published).read_bytes()))["study"]
    assert len(data["runs"]) == len(FINAL)
    one = data["runs"][0]
    assert one["params"]["steps_per_epoch"] == "10" and one["tags"]["variant"] in ("relu", "tanh")
    assert [s for s, _ in one["metrics"]["train_err1_step"]] == [5, 10, 15, 20]  # per logged step
    assert len(one["metrics"]["val_err1"]) == 2  # per epoch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-such-store.db'}")  # the file alone
    rebuilt = _rebuild(published, tmp_path, "activation")
    for f in ("report.md", "summary.json"):
        assert (rebuilt / f).read_bytes() == (published / f).read_bytes(), f
    assert "| relu | 3 | 40.00 ± 10.00 [19.14, 65.24] |" in (rebuilt / "report.md").read_text()
    assert (rebuilt.parent / "summary.md").is_file()
    from ablations.report.power import main as power_main

    assert power_main(["activation", "--from", str(published)]) == 0  # seed planning from the file too
    assert "seed plan for 'activation' from study activation-crafted (published" in capsys.readouterr().out
    assert not (tmp_path / "no-such-store.db").exists() or "activation" not in (tmp_path / "no-such-store.db").read_bytes().decode(errors="ignore")

    # the file decides: one value changed in it changes the rebuilt report
    data["runs"][0]["metrics"]["val_err1"][-1][1] = 0.99
    changed = tmp_path / "changed" / "activation"
    changed.mkdir(parents=True)
    with gzip.open(evidence.path_in(changed), "wt") as f:
        json.dump({"format": evidence.FORMAT, "study": data}, f)
    assert report_main(["activation", "--from", str(changed)]) == 0
    assert (changed / "report.md").read_bytes() != (published / "report.md").read_bytes()


def test_the_same_study_gives_the_same_bytes(store, tmp_path):
    _crafted_study(store)
    report_main(["activation", "--publish", str(tmp_path / "a")])
    report_main(["activation", "--publish", str(tmp_path / "b")])
    assert evidence.path_in(tmp_path / "a" / "activation").read_bytes() == evidence.path_in(tmp_path / "b" / "activation").read_bytes()


def test_a_folder_without_evidence_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no evidence file .*FROM= takes a published study's folder"):
        evidence.load(tmp_path, "pooling")


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_published_study_rebuilds_byte_identical(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused.db'}")
    rebuilt = _rebuild(folder, tmp_path, folder.name)
    for f in ("report.md", "summary.json"):
        assert (rebuilt / f).read_bytes() == (folder / f).read_bytes(), f"{folder.name}/{f} differs from its rebuild from {evidence.FILE}"


def test_every_published_result_ships_its_evidence():
    """No published table nobody can re-derive: a folder in docs/results with a report has its evidence file."""
    reports = sorted(p.parent.name for p in PUBLISHED.glob("*/report.md"))
    assert reports == [p.name for p in SHIPPED]
