"""Helpers the tests share: running the suite's commands as a user would, and
reading what they left in a real MLflow store (through MlflowClient, or through
the tracking server's REST API for the server test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from core.paths import ROOT

SHARED = ROOT.parent / "shared" / "datasets"
CIFAR_JPEG = SHARED / "cifar10-jpeg"
FLOWERS17 = SHARED / "flowers17"
SMOKE = ["--profile", "smoke"]


def run_cli(module: str, *args: str, timeout: float = 600, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Runs `python -m module args` as a user would, in a fresh process."""
    full_env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"} | (env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def show(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


def all_runs(store: str) -> list:
    """Every run in the store, whatever its experiment; [] when nothing created the store."""
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).exists():
        return []
    c = client(store)
    ids = [e.experiment_id for e in c.search_experiments()]
    return c.search_runs(ids, max_results=1000) if ids else []


def only_run(store: str, experiment: str | None = None):
    runs = [r for r in all_runs(store) if experiment is None or client(store).get_experiment(r.info.experiment_id).name == experiment]
    assert len(runs) == 1, f"expected one MLflow run, found {len(runs)}: {[(r.info.run_name, r.info.status) for r in runs]}"
    return runs[0]


def study(store: str, name: str) -> tuple[list, list]:
    """(parent runs, child runs) of an ablation's experiment."""
    c = client(store)
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("study") == "true"], [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def history(store: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every logged (step, value), in step order; a retrained epoch would appear twice."""
    return sorted((m.step, m.value) for m in client(store).get_metric_history(run_id, key))


def save_image(path: Path, rgb) -> Path:
    """Writes an HWC uint8 array as an image file (format from the suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def solid(colour, size: int = 8):
    import numpy as np

    return np.broadcast_to(np.asarray(colour, np.uint8), (size, size, 3)).copy()


def flower_colour(c: int) -> tuple[int, int, int]:
    return (c * 15, 255 - c * 15, 60)


def make_flowers17(root: Path, size: int = 8) -> Path:
    """Oxford 17 Flowers in the official archive's layout under root/flowers17/jpg:
    image_0001.jpg .. image_1360.jpg, 80 per class in file order; class c is a solid
    flower_colour(c) picture."""
    folder = root / "flowers17" / "jpg"
    folder.mkdir(parents=True)
    (folder / "files.txt").write_text("\n".join(f"image_{i:04d}.jpg" for i in range(1, 1361)))
    for i in range(1360):
        save_image(folder / f"image_{i + 1:04d}.jpg", solid(flower_colour(i // 80), size))
    return root


def copy_configs(tmp_path: Path) -> Path:
    """A copy of configs/ to add ablation files to (the repository's own is never written)."""
    import shutil

    target = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", target)
    return target


# ------------------------------------------------------------------ the server's REST API, spoken directly


def api(base_url: str, endpoint: str, payload: dict | None = None, params: dict | None = None, timeout: float = 30) -> dict:
    """One call to MLflow's REST API (/api/2.0/mlflow/<endpoint>): GET with params, or
    POST with a JSON payload. Returns the decoded JSON answer."""
    url = f"{base_url.rstrip('/')}/api/2.0/mlflow/{endpoint}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{request.method} {url}: HTTP {err.code}: {err.read()[:500]!r}") from None


def download(base_url: str, run_id: str, path: str, timeout: float = 30) -> bytes:
    """An artifact's bytes, through the server (the UI's /get-artifact endpoint)."""
    url = f"{base_url.rstrip('/')}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}


def rest_run_name(run: dict) -> str:
    return run["info"].get("run_name") or tags_of(run).get("mlflow.runName", "")
