"""The MLflow UI in a real headless Chromium (the system's, driven by playwright), as a
new user meets it: a fresh browser profile (nothing stored, nothing injected), a real
`mlflow server` holding a finished smoke study, and the links the suite prints.

From the link the study prints: its runs grouped by variant, each run's seed and
val_err1 (as the store holds them) and its dataset; in Chart view each variant's mean
curve over seeds, with a band. The same view reached from `python -m ablations.browse`'s
link and, by clicking, from the UI's home page. The study's HTML report in the artifact
viewer. The browser steps are the page object in tests/infra/mlflow_ui.py, which `python -m tools.screenshots` takes too for the
README's screenshots."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import pytest
from PIL import Image

from core.paths import ROOT
from tests.infra.mlflow_ui import (
    DATASET,
    RUN_NAME,
    browser,
    chart_data,
    chromium_path,
    metric_col,
    metric_histories,
    new_page,
    open_from_home,
    open_report,
    open_study,
    printed_links,
    run_name,
    show_chart,
    show_column,
    study_runs,
    tag_col,
    ui_number,
)
from tools.mlflow_server import MlflowServer, run_smoke_study

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no Chromium binary (Debian: apt-get install chromium); .ci/run installs it")

SEEDS = 3


def _looks_like_a_page(path, min_height=400):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 1200 and im.height >= min_height, (path, im.size)
        colors = im.convert("RGB").resize((200, 200)).getcolors(maxcolors=200 * 200)
        assert colors is not None and len(colors) > 30, f"{path} looks blank"


def _assert_grouped(table, runs, where):
    """The runs table shows the study: one group per variant (on screen), under it each of the variant's runs."""
    for variant in runs.variants:
        group = table.group(variant)
        assert group is not None, f"{where}: no group row for variant {variant!r}; rows: {sorted(table.rows)}"
        assert f"Group: {variant}" in group[RUN_NAME].text and group[RUN_NAME].visible, (where, variant, group[RUN_NAME])
        assert set(table.group_runs(variant)) == {r.info.run_id for r in runs.of_variant(variant)}, (where, variant, sorted(table.rows))


def _browse_link(base_url: str, study: str) -> str:
    """The link `python -m ablations.browse` (what `make ui` prints first) gives the study."""
    env = dict(os.environ) | {"MLFLOW_TRACKING_URI": base_url}
    done = subprocess.run([sys.executable, "-m", "ablations.browse"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    links = [line.split()[1] for line in done.stdout.splitlines() if line.split()[:1] == [study]]
    assert len(links) == 1, done.stdout
    return links[0]


@pytest.mark.slow
def test_a_new_user_finds_the_study_in_the_mlflow_ui(tmp_path):
    pytest.importorskip("playwright", reason="the playwright package drives the system Chromium: pip install -e '.[test]'")
    shots = tmp_path / "screenshots"
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        timings[name] = time.monotonic() - t0 - sum(timings.values())

    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", artifacts_dir=tmp_path / "mlartifacts", log_path=tmp_path / "server.log")
    try:
        server.start(timeout=120)
        lap("server")
        done = run_smoke_study(server.url, "activation", seeds=SEEDS, workdir=tmp_path, timeout=600, extra=("trainer.max_epochs=2",))
        lap("study")
        link, chart_link = printed_links(done.stdout)
        runs = study_runs(server.url, "activation")  # the truth, read from the store with MlflowClient
        assert link.startswith(server.url + "/#/experiments/") and f"viewStateShareKey={runs.parent_id}" in link, link
        assert chart_link == link + "&compareRunsMode=CHART"
        assert runs.variants == ["relu", "tanh"]
        for variant in runs.variants:
            assert sorted(r.data.tags["seed"] for r in runs.of_variant(variant)) == ["0", "1", "2"]
        val_err = metric_histories(server.url, runs, "val_err1")
        browse_link = _browse_link(server.url, "activation")
        lap("store")

        with browser() as b:
            # --- (b) the study's link: its runs grouped by variant, with seeds, val_err1 and dataset
            with new_page(b) as page:
                table = open_study(page, link, runs.variants, shots / "runs.png")
                _assert_grouped(table, runs, "study link")
                for col in ("tags.`variant`", tag_col("seed"), metric_col("val_err1"), metric_col("train_err1"), metric_col("train_clean_err1")):
                    assert col in table.headers, (col, table.headers)
                assert "attributes.`Description`" in table.headers, table.headers
                for variant in runs.variants:
                    shown = table.group_runs(variant)
                    for run in runs.of_variant(variant):
                        cells = shown[run.info.run_id]
                        assert cells[RUN_NAME].text == run_name(run) and cells[RUN_NAME].visible, cells[RUN_NAME]
                        assert cells[tag_col("seed")].text == run.data.tags["seed"] and cells[tag_col("seed")].visible
                        val = cells[metric_col("val_err1")]
                        assert val.text == ui_number(run.data.metrics["val_err1"]) and val.visible, (run_name(run), val, run.data.metrics["val_err1"])
                    # the group's row: the average over its seeds
                    average = table.group(variant)[metric_col("val_err1")].text
                    assert average.endswith("(average)"), average
                    expected = statistics.fmean(r.data.metrics["val_err1"] for r in runs.of_variant(variant))
                    assert float(average.split()[0]) == pytest.approx(expected, abs=1e-12), (variant, average, expected)
                # the Dataset column is not among the view's columns: add it as a person would ("Columns" menu)
                table = show_column(page, "Dataset", runs.variants)
                for variant in runs.variants:
                    for run_id, cells in table.group_runs(variant).items():
                        assert "shapes-train" in cells[DATASET].text and cells[DATASET].visible, (run_id, cells.get(DATASET))
                lap("runs table")

                # --- (c) Chart view (its button in the toolbar): each variant's mean curve over seeds, and its band
                show_chart(page, shots / "chart.png")
                curves = chart_data(page, "val_err1")
                for variant in runs.variants:
                    assert variant in curves, (variant, list(curves))
                    by_run = val_err[variant]
                    steps = sorted(set().union(*by_run.values()))
                    assert len(by_run) == SEEDS and steps == [0, 1], by_run
                    expected = {s: statistics.fmean(h[s] for h in by_run.values()) for s in steps}
                    assert sorted(curves[variant].mean) == steps, (variant, curves[variant])
                    for s in steps:
                        assert curves[variant].mean[s] == pytest.approx(expected[s], abs=1e-12), (variant, s, curves[variant].mean, expected)
                    band = curves[variant].band
                    assert band, f"no band trace for {variant}"
                    for s in steps:  # the band spans the seeds: min and max at each step
                        at_step = [y for x, y in band if x == s]
                        for bound in (min(h[s] for h in by_run.values()), max(h[s] for h in by_run.values())):
                            assert any(y == pytest.approx(bound, abs=1e-12) for y in at_step), (variant, s, bound, band)
                lap("chart")

            # --- (d) the link `python -m ablations.browse` prints, and clicks from the home page
            assert browse_link == link, (browse_link, link)
            with new_page(b) as page:
                _assert_grouped(open_study(page, browse_link, runs.variants, shots / "browse.png"), runs, "ablations.browse link")
            lap("browse link")
            with new_page(b) as page:
                steps_taken, table = open_from_home(page, server.url, "activation", runs.view_name, runs.variants, shots / "home.png")
                _assert_grouped(table, runs, "from the home page: " + " -> ".join(steps_taken))
                assert f"viewStateShareKey={runs.parent_id}" in table.url, table.url
            lap("home page")

            # --- (e) the parent run's report/report.html in the artifact viewer
            with new_page(b) as page:
                report = open_report(page, server.url, runs, "report/report.html", shots / "report.png")
            assert report.title == "Ablation: activation", report
            assert report.rows[0][0] == "variant" and [row[0] for row in report.rows[1:]] == runs.variants, report.rows
            assert all(report.visible.values()), report.visible
            lap("report")
    finally:
        server.stop()

    for name in ("runs", "chart", "browse", "home", "report"):
        _looks_like_a_page(shots / f"{name}.png")
    print(", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {time.monotonic() - t0:.0f} s; screenshots in {shots}")
    print("home page path: " + " -> ".join(steps_taken))
