"""Screenshots of the MLflow UI over a finished study, taken by a real headless Chromium.

    python -m tools.screenshots [--study activation] [--seeds 2] [--out docs/img]
                                    [--store URI] [--workdir DIR] [--chromium PATH]

By default it runs a fresh smoke study (`--profile smoke`) against its own
`mlflow server` (SQLite + proxied artifacts in a temporary folder, a free port on
127.0.0.1), so the pictures never depend on what is in your store. With
`--store sqlite:///mlflow.db` (or `--store http://127.0.0.1:5000` for a running
`make server`) it serves (or uses) that store instead and shows its newest study
of that name. It writes

    docs/img/mlflow_runs.png           the experiment's runs: the study's parent run
                                       expanded to its <variant>-seed<k> children
    docs/img/mlflow_compare.png        MLflow's compare-runs page for two variants
    docs/img/report_train_error.png    the report's train-error plot (an artifact
                                       of the parent run, downloaded from the server)

Needs Chromium (Debian: `apt-get install chromium`) and the `playwright` Python
package (`pip install -e '.[test]'`); playwright only drives the system browser,
it never downloads one. `make screenshots` runs this. The helpers here (the
browser steps) are shared with tests/test_browser.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.paths import ROOT
from tools.mlflow_server import MlflowServer, run_smoke_study

DOCS_IMG = ROOT / "docs" / "img"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# ---------------------------------------------------------------------- the study, read with MlflowClient
def run_name(run) -> str:
    return run.info.run_name


@dataclass
class StudyRuns:
    """A study as the server holds it: its experiment, newest parent run and children."""

    experiment_id: str
    parent: object  # mlflow.entities.Run
    children: list = field(default_factory=list)

    @property
    def parent_name(self) -> str:
        return run_name(self.parent)

    def child(self, name: str):
        for run in self.children:
            if run_name(run) == name:
                return run
        raise KeyError(f"no child run named {name!r} (have {sorted(run_name(r) for r in self.children)})")


def study_runs(base_url: str, study: str) -> StudyRuns:
    """The newest study of that name on the tracking server at base_url."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=base_url)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise LookupError(f"no experiment {study!r} on {base_url}")
    parents = client.search_runs([exp.experiment_id], "tags.study = 'true'", order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise LookupError(f"experiment {study!r} on {base_url} has no study (parent) run")
    parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000)
    return StudyRuns(exp.experiment_id, parent, sorted(children, key=run_name))


# ---------------------------------------------------------------------- browser
def chromium_path(explicit: str | None = None) -> str | None:
    """The system Chromium: --chromium / $CHROMIUM, else chromium (Debian) on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM")):
        if candidate:
            return shutil.which(candidate) or (candidate if Path(candidate).exists() else None)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def browser(executable: str | None = None) -> Iterator:
    """A headless system Chromium driven by playwright (no downloaded browser)."""
    exe = chromium_path(executable)
    if exe is None:
        raise FileNotFoundError("no Chromium found: install it (Debian: apt-get install chromium) or pass --chromium PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ImportError(
            "the playwright package is missing: pip install -e '.[test]' (it drives the system Chromium; no `playwright install` needed)"
        ) from None
    args = ["--disable-dev-shm-usage", "--disable-gpu"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


# browser-side settings of MLflow's UI (localStorage): keep the assistant panel
# closed, and show the columns that matter for a study. Cosmetic only: with
# another MLflow version they may be ignored, the steps below still work.
_COLUMNS = ["tags.`variant`", "tags.`seed`", "metrics.`train_err1`", "metrics.`val_err1`", "metrics.`val_loss`"]


def _ui_settings(experiment_id: str) -> str:
    state = {
        "selectedColumns": _COLUMNS,
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *_COLUMNS],
        "columnWidths": {"attributes.`Run Name`": 280},
    }
    items = {
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
        f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState': json.dumps(state),
    }
    return "".join(f"window.localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in items.items())


def new_page(b, experiment_id: str, width: int = 1600, height: int = 900):
    context = b.new_context(viewport={"width": width, "height": height})
    context.add_init_script(_ui_settings(experiment_id))
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


@dataclass
class RunsView:
    text: str  # the runs table's text, after expanding the parent
    hidden_before: bool  # the children were not shown until the parent was expanded


def show_runs(page, base_url: str, runs: StudyRuns, screenshot: Path | None = None) -> RunsView:
    """Opens the experiment's runs table (model-training view), expands the study's
    parent run to show its children, saves a screenshot."""
    child_names = [run_name(r) for r in runs.children]
    page.goto(f"{base_url}/#/experiments/{runs.experiment_id}/runs?workflowType=machine_learning&orderByKey=attributes.start_time&orderByAsc=true")
    name_cells = page.locator("[role=row] [col-id='attributes.`Run Name`']")
    parent_cell = name_cells.filter(has_text=runs.parent_name).first
    parent_cell.wait_for()
    page.wait_for_timeout(500)  # let the table settle before judging what it shows
    hidden = not any(page.get_by_text(n, exact=True).first.is_visible() for n in child_names)
    if hidden:
        parent_cell.locator("button").first.click()  # the [+] that expands a parent run
    for name in child_names:
        page.get_by_text(name, exact=True).first.wait_for()
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.mouse.move(1, page.viewport_size["height"] - 1)
    page.wait_for_timeout(300)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    return RunsView(page.locator(".ag-root").first.inner_text(), hidden)


def show_compare(
    page, base_url: str, runs: StudyRuns, names: tuple[str, str], screenshot: Path | None = None, metrics: tuple[str, ...] = ("val_err1", "train_err1")
) -> str:
    """Opens MLflow's compare-runs page for two runs (by name), plots `metrics` in
    its parallel-coordinates chart, shows only differing params/tags, saves a
    screenshot of the whole page; returns the page's text."""
    ids = [runs.child(n).info.run_id for n in names]
    compact = dict(separators=(",", ":"))  # the route MLflow's own "Compare" button builds
    page.goto(
        f"{base_url}/#/compare-runs?runs={json.dumps(ids, **compact)}&experiments={json.dumps([runs.experiment_id], **compact)}&workflowType=machine_learning"
    )
    page.get_by_text("Comparing 2 Runs").wait_for()
    for n in names:
        page.get_by_text(n, exact=True).first.wait_for()
    with contextlib.suppress(Exception):  # cosmetic; the page is complete without it
        select = page.get_by_text("Metrics:", exact=True).locator("xpath=following-sibling::div[1]")
        select.locator("[class*=select-selection-item-remove]").first.click(timeout=3000)
        select.click(timeout=3000)
        for m in metrics:
            page.locator("[class*=select-item-option]").filter(has_text=m).first.click(timeout=3000)
        page.keyboard.press("Escape")
    with contextlib.suppress(Exception):
        switches = page.get_by_role("switch")  # "Show diff only" of Parameters, Metrics, Tags
        if switches.count() == 3:
            switches.nth(0).click(timeout=3000)
            switches.nth(2).click(timeout=3000)
        page.get_by_text("Artifacts", exact=True).first.click(timeout=3000)  # collapse the empty previews
    text = page.inner_text("body")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        # the page scrolls inside <main>: grow the window to its full height
        extra, previous = -1, -2
        for _ in range(20):  # wait until the collapse animations are over
            page.wait_for_timeout(250)
            previous, extra = extra, page.evaluate("() => { const m = document.querySelector('main'); return m ? m.scrollHeight - m.clientHeight : 0; }")
            if extra == previous:
                break
        size = page.viewport_size
        page.set_viewport_size({"width": size["width"], "height": min(size["height"] + max(0, extra) + 10, 6000)})
        page.evaluate("() => { const m = document.querySelector('main'); if (m) m.scrollTop = 0; }")
        page.mouse.move(1, 1)
        page.wait_for_timeout(500)
        page.screenshot(path=str(screenshot))
        page.set_viewport_size(size)
    return text


def compare_pair(runs: StudyRuns) -> tuple[str, str]:
    """Two runs to compare: seed 0 of the first two variants."""
    by_variant: dict[str, str] = {}
    for r in sorted(runs.children, key=lambda r: (r.data.tags.get("seed", ""), run_name(r))):
        by_variant.setdefault(r.data.tags.get("variant", run_name(r)), run_name(r))
    names = list(by_variant.values())
    if len(names) < 2:
        names = [run_name(r) for r in runs.children][:2]
    if len(names) < 2:
        raise LookupError("a comparison needs two child runs")
    return names[0], names[1]


@dataclass
class Captured:
    runs: StudyRuns
    runs_png: Path
    compare_png: Path
    compared: tuple[str, str]
    runs_view: RunsView
    compare_text: str


def capture(
    base_url: str, study: str, out_dir: Path, chromium: str | None = None, runs_png: str = "mlflow_runs.png", compare_png: str = "mlflow_compare.png"
) -> Captured:
    """Both screenshots of the newest study `study` on the server at base_url."""
    runs = study_runs(base_url, study)
    pair = compare_pair(runs)
    out_dir = Path(out_dir)
    with browser(chromium) as b:
        page = new_page(b, runs.experiment_id, height=520)
        runs_view = show_runs(page, base_url, runs, out_dir / runs_png)
        page.context.close()
        page = new_page(b, runs.experiment_id, height=900)
        compare_text = show_compare(page, base_url, runs, pair, out_dir / compare_png)
        page.context.close()
    return Captured(runs, out_dir / runs_png, out_dir / compare_png, pair, runs_view, compare_text)


# ---------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="activation", help="the ablation to show (default activation)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the fresh smoke study (default 2)")
    parser.add_argument(
        "--store", default=None, help="use this store instead of a fresh smoke study: sqlite:///mlflow.db, or a running server http://host:port"
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        help="with a --store sqlite:///...: the artifact folder its server wrote (e.g. mlartifacts for `make server`'s mlflow-server.db)",
    )
    parser.add_argument("--out", type=Path, default=DOCS_IMG, help="where the PNGs go (default docs/img)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the fresh study's store, server log and report here (default: a temporary folder, removed)"
    )
    parser.add_argument("--chromium", default=None, help="the Chromium binary (default: chromium on PATH, or $CHROMIUM)")
    args = parser.parse_intermixed_args(argv)

    if chromium_path(args.chromium) is None:
        print("error: no Chromium found; install it (Debian: apt-get install chromium) or pass --chromium PATH", file=sys.stderr)
        return 2
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ablation-screens-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    server: MlflowServer | None = None
    try:
        if args.store and args.store.startswith(("http://", "https://")):
            base_url = args.store.rstrip("/")
        else:
            if args.store:
                server = MlflowServer(args.store, artifacts_dir=args.artifacts and args.artifacts.resolve(), log_path=workdir / "server.log")
            else:
                server = MlflowServer(f"sqlite:///{workdir / 'mlflow.db'}", artifacts_dir=workdir / "mlartifacts", log_path=workdir / "server.log")
            print(f"starting mlflow server on {server.url} ({server.backend_store_uri})", flush=True)
            server.start()
            base_url = server.url
        if not args.store:
            print(f"running a smoke study '{args.study}' with {args.seeds} seeds against {base_url} ...", flush=True)
            t0 = time.time()
            run_smoke_study(base_url, args.study, args.seeds, workdir)
            print(f"  done in {time.time() - t0:.0f} s", flush=True)
        shots = capture(base_url, args.study, args.out, args.chromium)
        plot = args.out / "report_train_error.png"
        from mlflow import MlflowClient

        local = MlflowClient(tracking_uri=base_url).download_artifacts(shots.runs.parent.info.run_id, "report/train_error.png", str(workdir))
        shutil.copy(local, plot)
        print(f"study run {shots.runs.parent_name} with {len(shots.runs.children)} runs; compared {shots.compared[0]} and {shots.compared[1]}")
        for path in (shots.runs_png, shots.compare_png, plot):
            print(f"wrote {path}")
    except (RuntimeError, LookupError, TimeoutError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
