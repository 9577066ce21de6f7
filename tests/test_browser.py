"""The MLflow UI in a real headless Chromium (the system's, driven by playwright), as a
new user meets it: a fresh browser profile (nothing stored, nothing injected), a real
`mlflow server` holding finished smoke studies, and what the suite prints.

The way in is what `make ui` prints (python -m ablations.tracking.browse), click by click from
the home page: the mode switch, the experiment, "Views", the study. There, the study's
runs grouped by variant with the error columns, each run's seed and val_err1 (as the
store holds them), its dataset, and for a run reused from another study that run's
training time and where it came from; in Chart view the errors first, each variant's
mean curve over seeds with a band. The link the study prints opens the same view. The
study's HTML report in the artifact viewer. The page object (tests/infra/mlflow_ui.py)
is the one `python -m tests.infra.screenshots` takes the docs' screenshots with."""

from __future__ import annotations

import re
import statistics
import time

import pytest
from PIL import Image

from ablations import tracking
from ablations.tracking import browse
from core.paths import ROOT
from tests.helpers import copy_configs, run_cli
from tests.infra.mlflow_ui import (
    DATASET,
    RUN_NAME,
    browser,
    chart_data,
    chart_titles,
    chromium_path,
    follow_ui_steps,
    metric_col,
    metric_histories,
    new_page,
    open_report,
    open_study,
    printed_links,
    read_ui_steps,
    run_name,
    show_chart,
    show_column,
    study_runs,
    tag_col,
    ui_duration,
    ui_number,
)
from tools.mlflow_server import MlflowServer, run_smoke_study

SEEDS = 3
DURATION, DESCRIPTION = "duration", "attributes.`Description`"  # the runs table's column ids
ERROR_COLUMNS = [metric_col("val_err1"), metric_col("train_err1"), metric_col(tracking.CLEAN_TRAIN_ERR)]
# an ablation of the baseline alone: the activation study then reuses its runs (relu), and trains tanh
RELU_ONLY = "description: the baseline alone, for the activation study to reuse\nbaseline: relu\nvariants:\n  relu: {model.activation: relu}\n"


def _looks_like_a_page(path, min_height=400):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 1200 and im.height >= min_height, (path, im.size)
        colors = im.convert("RGB").resize((200, 200)).getcolors(maxcolors=200 * 200)
        assert colors is not None and len(colors) > 30, f"{path} looks blank"


def _assert_grouped(table, runs, where):
    """The runs table shows the study: one group per variant (on screen), under it each of the variant's runs."""
    for variant in runs.variants:
        group = table.group(variant)
        assert group is not None, (
            f"{where}: no group row for variant {variant!r}; rows: {sorted(table.rows)}. The study's view is an experiment tag in the "
            f"UI's own format ({tracking.VIEW}<parent run id>, ablations/tracking.py save_study_view): has this MLflow changed it?"
        )
        assert f"Group: {variant}" in group[RUN_NAME].text and group[RUN_NAME].visible, (where, variant, group[RUN_NAME])
        assert set(table.group_runs(variant)) == {r.info.run_id for r in runs.of_variant(variant)}, (where, variant, sorted(table.rows))


def test_the_readme_and_docs_give_the_clicks_make_ui_prints():
    """The labels `make ui` says to click are those the README and docs/mlflow.md give; the docs' pictures exist."""
    labels = [re.search(r'"([^"]+)"', browse.STEPS[i]).group(1) for i in (0, 2)]
    assert labels == [tracking.SWITCH, tracking.VIEWS]
    docs = ROOT / "docs" / "mlflow.md"
    for path in (ROOT / "README.md", docs):
        text = path.read_text()
        for label in labels:
            assert f'"{label}"' in text, (path, label)
    assert "docs/mlflow.md" in (ROOT / "README.md").read_text()
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", docs.read_text()):
        assert (docs.parent / target).is_file(), target


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="no Chromium binary (Debian: apt-get install chromium); .ci/run installs it")
def test_a_new_user_clicks_from_the_home_page_to_a_study_as_make_ui_says(tmp_path):
    pytest.importorskip("playwright", reason="the playwright package drives the system Chromium: pip install -e '.[test]'")
    shots = tmp_path / "screenshots"
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        timings[name] = time.monotonic() - t0 - sum(timings.values())

    configs = copy_configs(tmp_path)
    (configs / "ablations" / "relu_only.yaml").write_text(RELU_ONLY)
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", artifacts_dir=tmp_path / "mlartifacts", log_path=tmp_path / "server.log")
    try:
        server.start(timeout=120)
        lap("server")
        env, extra = {"ABLATION_CONFIGS": str(configs)}, ("trainer.max_epochs=2",)
        run_smoke_study(server.url, "relu_only", seeds=SEEDS, workdir=tmp_path, timeout=600, extra=extra, env=env)
        done = run_smoke_study(server.url, "activation", seeds=SEEDS, workdir=tmp_path, timeout=600, extra=extra, env=env)
        lap("studies")
        link, chart_link = printed_links(done.stdout)
        runs = study_runs(server.url, "activation")  # the truth, read from the store with MlflowClient
        assert chart_link == link + "&compareRunsMode=CHART"
        assert runs.variants == ["relu", "tanh"]
        for variant in runs.variants:
            assert sorted(r.data.tags["seed"] for r in runs.of_variant(variant)) == ["0", "1", "2"]
        from mlflow import MlflowClient

        store = MlflowClient(tracking_uri=server.url)
        sources = {r.info.run_id: store.get_run(r.data.tags[tracking.REUSED_FROM]) for r in runs.children if tracking.REUSED_FROM in r.data.tags}
        assert {runs.child(f"relu-seed{s}").info.run_id for s in range(SEEDS)} == set(sources), "relu's runs should be reused from relu_only"
        val_err = metric_histories(server.url, runs, "val_err1")
        # what `make ui` prints first: the steps, each study's view and its link
        printed = run_cli("ablations.tracking.browse", env={"MLFLOW_TRACKING_URI": server.url}, timeout=120)
        assert printed.returncode == 0, printed.stdout + printed.stderr
        steps = read_ui_steps(printed.stdout)
        assert steps.address == server.url and steps.views_of["activation"] == runs.view_name, printed.stdout
        assert steps.links["activation"] == link, (steps.links, link)
        lap("store")

        with browser() as b:
            # --- the steps `make ui` prints, clicked in a new browser from the home page
            with new_page(b) as page:
                taken, table = follow_ui_steps(page, steps, "activation", runs.variants, {k: shots / f"{k}.png" for k in ("home", "views", "runs")})
                where = "from the home page: " + " -> ".join(taken)
                _assert_grouped(table, runs, where)
                assert f"viewStateShareKey={runs.parent_id}" in table.url, table.url
                for col in (tag_col("variant"), tag_col("seed"), *ERROR_COLUMNS, DESCRIPTION, DURATION):
                    assert col in table.headers, (where, col, table.headers)
                for variant in runs.variants:
                    shown = table.group_runs(variant)
                    for run in runs.of_variant(variant):
                        cells = shown[run.info.run_id]
                        assert cells[RUN_NAME].text == run_name(run) and cells[RUN_NAME].visible, cells[RUN_NAME]
                        assert cells[tag_col("seed")].text == run.data.tags["seed"] and cells[tag_col("seed")].visible
                        for col in ERROR_COLUMNS:
                            key = col.split("`")[1]
                            assert cells[col].text == ui_number(run.data.metrics[key]) and cells[col].visible, (run_name(run), col, cells[col])
                        # a reused run: the training time of the run it reused, and where it came from
                        trained = sources.get(run.info.run_id, run)
                        assert cells[DURATION].text == ui_duration(trained.info.end_time - trained.info.start_time), (run_name(run), cells[DURATION])
                        if run.info.run_id in sources:
                            source = sources[run.info.run_id]
                            assert cells[DESCRIPTION].text.startswith(f"reused from {run_name(source)} (run {source.info.run_id[:8]}…"), cells[DESCRIPTION]
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

                # --- Chart view (its button in the toolbar): the errors first; each variant's mean curve over seeds, and its band
                show_chart(page, shots / "chart.png")
                logged = set().union(*(r.data.metrics for r in runs.children))
                leading = [m for m in tracking.LEADING_CHARTS if m in logged]
                titles = chart_titles(page)
                assert titles[: len(leading)] == leading, titles
                curves = chart_data(page, "val_err1")
                for variant in runs.variants:
                    assert variant in curves, (variant, list(curves))
                    by_run = val_err[variant]
                    steps_logged = sorted(set().union(*by_run.values()))
                    assert len(by_run) == SEEDS and steps_logged == [0, 1], by_run
                    expected = {s: statistics.fmean(h[s] for h in by_run.values()) for s in steps_logged}
                    assert sorted(curves[variant].mean) == steps_logged, (variant, curves[variant])
                    for s in steps_logged:
                        assert curves[variant].mean[s] == pytest.approx(expected[s], abs=1e-12), (variant, s, curves[variant].mean, expected)
                    band = curves[variant].band
                    assert band, f"no band trace for {variant}"
                    for s in steps_logged:  # the band spans the seeds: min and max at each step
                        at_step = [y for x, y in band if x == s]
                        for bound in (min(h[s] for h in by_run.values()), max(h[s] for h in by_run.values())):
                            assert any(y == pytest.approx(bound, abs=1e-12) for y in at_step), (variant, s, bound, band)
                lap("chart")

            # --- the link the study (and make ui) prints opens the same view
            with new_page(b) as page:
                _assert_grouped(open_study(page, link, runs.variants, shots / "link.png"), runs, "the printed link")
            lap("link")

            # --- the parent run's report/report.html in the artifact viewer
            with new_page(b) as page:
                report = open_report(page, server.url, runs, "report/report.html", shots / "report.png")
            assert report.title == "Ablation: activation", report
            assert report.rows[0][0] == "variant" and [row[0] for row in report.rows[1:]] == runs.variants, report.rows
            assert all(report.visible.values()), report.visible
            lap("report")
    finally:
        server.stop()

    for name in ("home", "views", "runs", "chart", "link", "report"):
        _looks_like_a_page(shots / f"{name}.png")
    print(", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {time.monotonic() - t0:.0f} s; screenshots in {shots}")
    print("home page path: " + " -> ".join(taken))
