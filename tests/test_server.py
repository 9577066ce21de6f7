"""A real `mlflow server` process (SQLite + proxied artifacts, as `make server`):
a smoke study logs to it over HTTP and everything is read back through its REST
API with plain urllib; and an unreachable server fails fast, naming its URI."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, SMOKE, api, download, rest_run_name, tags_of
from tools.mlflow_server import MlflowServer, free_port, run_smoke_study

EPOCH_METRICS = ["train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "lr", "epoch_time_s", "train_img_per_s", "val_img_per_s"]
PNG = b"\x89PNG\r\n\x1a\n"


def rest_study(base_url: str, name: str) -> tuple[str, dict, list[dict]]:
    """(experiment id, newest parent run, its children), found through the REST API alone."""
    eid = api(base_url, "experiments/get-by-name", params={"experiment_name": name})["experiment"]["experiment_id"]
    search = {"experiment_ids": [eid], "filter": "tags.study = 'true'", "order_by": ["attributes.start_time DESC"], "max_results": 1}
    (parent,) = api(base_url, "runs/search", search)["runs"]
    children = api(base_url, "runs/search", {"experiment_ids": [eid], "filter": f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'"})["runs"]
    return eid, parent, sorted(children, key=rest_run_name)


@pytest.fixture
def backend_store(tmp_path):
    """The tracking server's backend store: a real PostgreSQL server started for the
    test, or where PostgreSQL cannot run, a SQLite file (the browser test serves SQLite
    too, so each backend is covered where it can run)."""
    from tests.infra.postgres_server import PostgresServer, available

    reason = available()
    if reason:
        print(f"PostgreSQL: {reason}; the server runs on SQLite")
        yield f"sqlite:///{tmp_path / 'server.db'}"
        return
    with PostgresServer() as pg:
        yield pg.uri


@pytest.mark.slow
def test_study_through_a_real_tracking_server(tmp_path, backend_store):
    server = MlflowServer(backend_store, artifacts_dir=tmp_path / "mlartifacts", log_path=tmp_path / "server.log")
    t0 = time.monotonic()
    try:
        server.start(timeout=120)
        started = time.monotonic() - t0
        done = run_smoke_study(server.url, "activation", seeds=2, workdir=tmp_path, timeout=600)
        assert f"store {server.url}" in done.stdout
        assert (tmp_path / "reports" / "activation" / "report.md").exists()

        # --- runs, read back through the server's REST API
        exp = api(server.url, "experiments/get-by-name", params={"experiment_name": "activation"})["experiment"]
        assert exp["artifact_location"].startswith("mlflow-artifacts:"), exp  # the server stores the artifacts
        everything = api(server.url, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
        parents = [r for r in everything if tags_of(r).get("study") == "true"]
        assert len(parents) == 1 and len(everything) == 5, [rest_run_name(r) for r in everything]
        parent = parents[0]
        pid = parent["info"]["run_id"]
        assert parent["info"]["status"] == "FINISHED"
        assert tags_of(parent)["ablation"] == "activation"

        _, found_parent, found_children = rest_study(server.url, "activation")
        assert found_parent["info"]["run_id"] == pid
        assert [rest_run_name(r) for r in found_children] == ["relu-seed0", "relu-seed1", "tanh-seed0", "tanh-seed1"]
        for child in found_children:
            tags, name = tags_of(child), rest_run_name(child)
            assert child["info"]["status"] == "FINISHED", name
            assert tags["mlflow.parentRunId"] == pid
            assert tags["ablation"] == "activation"
            assert f"{tags['variant']}-seed{tags['seed']}" == name
            assert len(tags["config_hash"]) >= 8 and tags["git_commit"]
            logged = {m["key"] for m in child["data"]["metrics"]}
            assert set(EPOCH_METRICS) <= logged, (name, sorted(logged))
        assert len({tags_of(c)["config_hash"] for c in found_children}) == 4

        # --- per-epoch history of one child: step = epoch, 2 epochs in the smoke profile
        child = found_children[3]  # tanh-seed1
        cid = child["info"]["run_id"]
        for key in ("val_err1", "train_loss", "lr"):
            history = api(server.url, "metrics/get-history", params={"run_id": cid, "metric_key": key})["metrics"]
            assert sorted(m["step"] for m in history) == [0, 1], (key, history)
            assert all(m["value"] == m["value"] for m in history)  # no NaN

        # --- artifacts: listed by the server and downloadable through it
        listed = {f["path"] for f in api(server.url, "artifacts/list", params={"run_id": cid})["files"]}
        assert {"config.yaml", "architecture.txt", "conv1_filters.png", "checkpoints"} <= listed, listed
        ckpts = {f["path"]: f for f in api(server.url, "artifacts/list", params={"run_id": cid, "path": "checkpoints"})["files"]}
        assert int(ckpts["checkpoints/last.ckpt"]["file_size"]) > 10_000
        assert download(server.url, cid, "conv1_filters.png").startswith(PNG)
        assert b"activation" in download(server.url, cid, "config.yaml")
        report = {f["path"] for f in api(server.url, "artifacts/list", params={"run_id": pid, "path": "report"})["files"]}
        plots = sorted(p for p in report if p.endswith(".png"))
        assert "report/report.md" in report and plots, report
        for plot in plots:
            assert download(server.url, pid, plot).startswith(PNG), plot
        assert b"relu" in download(server.url, pid, "report/report.md")
        # stored by the server in its own artifact folder, not in the repository
        assert list((tmp_path / "mlartifacts").rglob("conv1_filters.png"))
        print(f"server up in {started:.1f} s, whole test {time.monotonic() - t0:.1f} s")
    finally:
        server.stop()
    assert server.proc is None


def test_unreachable_tracking_server_fails_fast(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = dict(os.environ) | {
        "MLFLOW_TRACKING_URI": uri,
        "ABLATION_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "ABLATION_REPORTS": str(tmp_path / "reports"),
        "PYTHONUNBUFFERED": "1",
    }
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ablations.train", *SMOKE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - start
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert seconds < 30, f"took {seconds:.1f} s to give up"
    assert uri in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
