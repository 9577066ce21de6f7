"""The MLflow UI in a real headless Chromium (the system's, driven by playwright)
over a finished smoke study served by a real `mlflow server`: the variant runs
sit under their study's parent run, and the compare-runs page shows two of them.
The browser steps are those of `python -m tools.screenshots`."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from tools.mlflow_server import MlflowServer, run_smoke_study
from tools.screenshots import capture, chromium_path, run_name

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no Chromium binary (Debian: apt-get install chromium); .ci/run installs it")


def _looks_like_a_page(path, min_height):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 1200 and im.height >= min_height, (path, im.size)
        colors = im.convert("RGB").resize((200, 200)).getcolors(maxcolors=200 * 200)
        assert colors is not None and len(colors) > 30, f"{path} looks blank"


@pytest.mark.slow
def test_mlflow_ui_shows_the_study_and_compares_runs(tmp_path):
    t0 = time.monotonic()
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", artifacts_dir=tmp_path / "mlartifacts", log_path=tmp_path / "server.log")
    try:
        server.start(timeout=120)
        # one seed per variant keeps this test short; test_server.py runs two
        run_smoke_study(server.url, "activation", seeds=1, workdir=tmp_path, timeout=600)
        trained = time.monotonic() - t0
        shots = capture(server.url, "activation", tmp_path / "screenshots")
    finally:
        server.stop()

    parent = shots.runs.parent_name
    assert parent.startswith("activation-")
    assert sorted(run_name(r) for r in shots.runs.children) == ["relu-seed0", "tanh-seed0"]

    # experiment view: the children appear only once their parent row is expanded
    view = shots.runs_view
    assert view.hidden_before, "the variant runs were listed before their parent was expanded"
    for name in (parent, "relu-seed0", "tanh-seed0"):
        assert name in view.text, (name, view.text)
    lines = [line.strip() for line in view.text.splitlines()]
    assert lines.index(parent) < lines.index("relu-seed0") < lines.index("tanh-seed0")  # nested rows follow the parent
    assert "val_err1" in view.text and "variant" in view.text

    # compare-runs page: both runs, their differing parameter, the metric names
    assert shots.compared == ("relu-seed0", "tanh-seed0")
    text = shots.compare_text
    assert "Comparing 2 Runs" in text
    for expected in ("relu-seed0", "tanh-seed0", "model.activation", "val_err1", "train_err1", "train_loss", "epoch_time_s"):
        assert expected in text, (expected, text[:3000])
    for run in shots.runs.children:
        assert run.info.run_id in text

    _looks_like_a_page(shots.runs_png, 400)
    _looks_like_a_page(shots.compare_png, 1200)
    print(f"server + study {trained:.0f} s, browser {time.monotonic() - t0 - trained:.0f} s; screenshots in {shots.runs_png.parent}")
