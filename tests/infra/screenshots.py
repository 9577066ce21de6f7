"""Screenshots of the MLflow UI over a finished study, taken by a real headless Chromium
that comes to it as a new user would: a fresh browser profile (no stored UI settings),
the address and the clicks that `make ui` prints (python -m ablations.tracking.browse).

    python -m tests.infra.screenshots [--study activation] [--seeds 3] [--out docs/img]
                                    [--store URI] [--workdir DIR] [--chromium PATH]

By default it runs a fresh smoke study (`--profile smoke`) against its own
`mlflow server` (SQLite + proxied artifacts in a temporary folder, a free port on
127.0.0.1), so the pictures never depend on what is in your store. With `--store
sqlite:///mlflow.db` (or `--store http://127.0.0.1:5000` for a running `make server`)
it serves (or uses) that store instead and shows its newest study of that name. It
writes, for docs/mlflow.md,

    docs/img/mlflow_overview.png       a new browser that clicks the experiment at once:
                                       the GenAI "Overview" (no runs)
    docs/img/mlflow_home.png           the home page after clicking "Model training"
    docs/img/mlflow_views.png          the experiment's runs page, its "Views" menu open
    docs/img/mlflow_runs.png           the study's view: its runs grouped by variant
                                       (each group's average over seeds), with the
                                       variant, seed and error columns
    docs/img/mlflow_chart.png          the same view in Chart mode: the errors first,
                                       each variant's mean curve with a min-max band
    docs/img/mlflow_report.png         the study's HTML report (report/report.html,
                                       an artifact of its parent run) in the UI's
                                       artifact viewer
    docs/img/report_train_error.png    the report's train-error plot (an artifact
                                       of the parent run, downloaded from the server)

Needs Chromium (Debian: `apt-get install chromium`) and the `playwright` Python
package (`pip install -e '.[test]'`); playwright only drives the system browser,
it never downloads one. `make screenshots` runs this. The browser steps are those of
the page object in tests/infra/mlflow_ui.py, which tests/test_browser.py takes and checks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from core.paths import ROOT
from tests.infra.mlflow_ui import (
    ReportView,
    RunsTable,
    StudyRuns,
    UiSteps,
    browser,
    chromium_path,
    follow_ui_steps,
    new_page,
    open_report,
    overview_without_switch,
    read_ui_steps,
    show_chart,
    study_runs,
)
from tools.mlflow_server import MlflowServer, run_smoke_study

DOCS_IMG = ROOT / "docs" / "img"


# ---------------------------------------------------------------------- the command
@dataclass
class Captured:
    runs: StudyRuns
    shots: dict[str, Path]
    steps: list[str]  # the clicks taken from the home page
    table: RunsTable
    report: ReportView


def ui_steps(base_url: str) -> UiSteps:
    """What `make ui` prints first for the store behind base_url."""
    env = dict(os.environ) | {"MLFLOW_TRACKING_URI": base_url}
    done = subprocess.run([sys.executable, "-m", "ablations.tracking.browse"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"python -m ablations.tracking.browse exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return read_ui_steps(done.stdout)


def capture(base_url: str, study: str, out_dir: Path, chromium: str | None = None) -> Captured:
    """The screenshots of the newest study `study` on the server at base_url, reached by
    the clicks `make ui` prints, each from a new browser profile."""
    runs = study_runs(base_url, study)
    steps = ui_steps(base_url)
    shots = {k: Path(out_dir) / f"mlflow_{k}.png" for k in ("overview", "home", "views", "runs", "chart", "report")}
    with browser(chromium) as b:
        with new_page(b, 1700, 760) as page:
            overview_without_switch(page, steps.address, study, shots["overview"])
        with new_page(b, 1700, 760) as page:
            taken, table = follow_ui_steps(page, steps, study, runs.variants, {k: shots[k] for k in ("home", "views", "runs")})
            page.set_viewport_size({"width": 1700, "height": 1150})
            show_chart(page, shots["chart"])
        with new_page(b, 1600, 1000) as page:
            report = open_report(page, base_url, runs, screenshot=shots["report"])
    return Captured(runs, shots, taken, table, report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="activation", help="the ablation to show (default activation)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the fresh smoke study (default 3)")
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
        t0 = time.time()
        shots = capture(base_url, args.study, args.out, args.chromium)
        plot = args.out / "report_train_error.png"
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        local = MlflowClient(tracking_uri=base_url).download_artifacts(shots.runs.parent_id, "report/train_error.png", str(workdir))
        shutil.copy(local, plot)
        print(f"study run {shots.runs.parent_name} with {len(shots.runs.children)} runs; browser {time.time() - t0:.0f} s")
        print("clicked: " + " -> ".join(shots.steps))
        for path in (*shots.shots.values(), plot):
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
