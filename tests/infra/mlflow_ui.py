"""The MLflow UI's page object for the browser test and `make screenshots`: a headless
system Chromium (driven by playwright; it never downloads a browser) with a fresh profile
per page, as a new user comes to the UI, and the steps such a user takes and reads: the
runs table, Chart view, the report in the artifact viewer. Also the study as the server
holds it (read with MlflowClient), the truth the pages are checked against.

Needs Chromium (Debian: `apt-get install chromium`) and the `playwright` Python package
(`pip install -e '.[test]'`)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_MS = 45_000  # one UI step (a page load, a chart); generous: the UI is slow on a busy 2-core machine

# the study's command prints these two lines (ablations/study/runner.py)
STUDY_LINK = re.compile(r"browse it: make ui, then click .*; or open (\S+)")
CHART_LINK = re.compile(r"mean curves over seeds: (\S+)\)")


# ---------------------------------------------------------------------- the study, read with MlflowClient
def run_name(run) -> str:
    return run.info.run_name


@dataclass
class StudyRuns:
    """A study as the server holds it: its experiment, newest parent run and children."""

    experiment_id: str
    parent: object  # mlflow.entities.Run
    children: list = field(default_factory=list)
    view_name: str = ""  # the name of the study's saved view of the runs page (what the UI's "Views" menu lists)

    @property
    def parent_id(self) -> str:
        return self.parent.info.run_id

    @property
    def parent_name(self) -> str:
        return run_name(self.parent)

    @property
    def variants(self) -> list[str]:
        return sorted({r.data.tags["variant"] for r in self.children})

    def of_variant(self, variant: str) -> list:
        return [r for r in self.children if r.data.tags.get("variant") == variant]

    def child(self, name: str):
        for run in self.children:
            if run_name(run) == name:
                return run
        raise KeyError(f"no child run named {name!r} (have {sorted(run_name(r) for r in self.children)})")


def study_runs(base_url: str, study: str) -> StudyRuns:
    """The newest study of that name on the tracking server at base_url."""
    import json

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
    children = [r for r in children if r.data.tags.get("tuning") != "true" and "variant" in r.data.tags]
    view = exp.tags.get(f"mlflow.sharedViewState.{parent.info.run_id}")
    view_name = json.loads(view).get("name", "") if view else ""
    return StudyRuns(exp.experiment_id, parent, sorted(children, key=run_name), view_name)


def printed_links(stdout: str) -> tuple[str, str]:
    """(the runs link, the chart link) that `python -m ablations.study` printed."""
    runs, chart = STUDY_LINK.search(stdout), CHART_LINK.search(stdout)
    if runs is None or chart is None:
        raise LookupError(f"the study printed no link to browse it:\n{stdout[-2000:]}")
    return runs.group(1), chart.group(1)


def metric_histories(base_url: str, runs: StudyRuns, key: str) -> dict[str, dict[str, dict[int, float]]]:
    """{variant: {run id: {step: value}}} of metric `key`, read from the server (a step
    logged twice keeps its last value)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=base_url)
    out: dict[str, dict[str, dict[int, float]]] = {}
    for run in runs.children:
        by_step: dict[int, float] = {}
        for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp):
            by_step[m.step] = m.value
        out.setdefault(run.data.tags["variant"], {})[run.info.run_id] = by_step
    return out


def ui_number(x: float) -> str:
    """A metric value as the runs table prints it: JavaScript's String(x) (shortest
    round-trip digits, like Python's repr; no ".0" on integers; exponents only outside
    1e-6..1e21)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    text = repr(x)
    if "e" not in text:
        return text
    if 1e-6 <= abs(x) < 1e21:
        return format(Decimal(text), "f")
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{'+' if int(exponent) > 0 else '-'}{abs(int(exponent))}"


def ui_duration(ms: int) -> str:
    """A run's duration as the runs table prints it (MLflow's Utils.formatDuration, its divisions
    in its order; JavaScript's toFixed(1) rounds the double's exact value, a tie up)."""
    from decimal import ROUND_HALF_UP

    if ms < 500:
        return f"{ms}ms"
    value, unit = ms / 1e3, "s"
    for limit, divisor, next_unit in ((6e4, 60, "min"), (36e5, 60, "h"), (864e5, 24, "d")):
        if ms < limit:
            break
        value, unit = value / divisor, next_unit
    return f"{Decimal(value).quantize(Decimal('0.1'), ROUND_HALF_UP)}{unit}"


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
    args = ["--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def new_page(b, width: int = 2200, height: int = 1100) -> Iterator:
    """A page in a fresh browser context: a new user's profile, nothing stored, nothing injected.
    (Wide by default: the UI opens its assistant panel on the right on a first visit.)"""
    context = b.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
    finally:
        context.close()


def _shot(page, path: Path | None) -> None:
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    page.mouse.move(1, page.viewport_size["height"] - 1)  # no hover highlights or tooltips
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))


def close_assistant(page, wait_ms: int = 4000) -> bool:
    """Closes the MLflow Assistant panel (open by default on a first visit), as a person
    would, with its close button; waits up to wait_ms for it to appear. True if closed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    button = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    try:
        button.first.wait_for(state="visible", timeout=wait_ms)
        button.first.click(timeout=5000)
        button.first.wait_for(state="hidden", timeout=5000)
        return True
    except PlaywrightTimeout:
        return False


def dismiss_tips(page) -> None:
    """Acknowledges a product tour's tip ("Got it") that blocks the page (the GenAI overview shows one)."""
    with contextlib.suppress(Exception):
        tip = page.get_by_role("button", name="Got it")
        if tip.first.is_visible():
            tip.first.click(timeout=3000)


# ---------------------------------------------------------------------- the runs table
RUN_NAME, DATASET = "attributes.`Run Name`", "attributes.`Dataset`"


def metric_col(key: str) -> str:
    return f"metrics.`{key}`"


def tag_col(key: str) -> str:
    return f"tags.`{key}`"


@dataclass
class Cell:
    text: str
    visible: bool  # on screen: inside the window and not covered (what elementFromPoint finds there)


@dataclass
class RunsTable:
    """The runs table as the page shows it: ag-grid's rows by row-id (a group of runs grouped
    by tag variant is `tag.variant.<value>`, its runs `tag.variant.<value>.<run id>`), each a
    {column id: Cell}, plus the page's URL and the column headers in order."""

    url: str
    rows: dict[str, dict[str, Cell]]
    headers: list[str]

    def group(self, variant: str, key: str = "variant") -> dict[str, Cell] | None:
        return self.rows.get(f"tag.{key}.{variant}")

    def group_runs(self, variant: str, key: str = "variant") -> dict[str, dict[str, Cell]]:
        """{run id: cells} of the runs shown under the group."""
        prefix = f"tag.{key}.{variant}."
        return {row_id[len(prefix) :]: cells for row_id, cells in self.rows.items() if row_id.startswith(prefix)}

    def text(self, row_id: str, col: str) -> str:
        cell = self.rows.get(row_id, {}).get(col)
        return cell.text if cell else ""


_READ_TABLE = r"""() => {
  const rows = {};
  for (const row of document.querySelectorAll('.ag-row[row-id]')) {
    const cells = rows[row.getAttribute('row-id')] ||= {};
    for (const cell of row.querySelectorAll('[role=gridcell][col-id]')) {
      const r = cell.getBoundingClientRect();
      const x = Math.min(Math.max(r.left + 4, 0), innerWidth - 1), y = r.top + r.height / 2;
      const hit = r.width > 0 && r.height > 0 && r.right > 0 && r.left < innerWidth && y >= 0 && y < innerHeight && document.elementFromPoint(x, y);
      cells[cell.getAttribute('col-id')] = {text: cell.innerText.trim().replace(/\s+/g, ' '), visible: !!hit && cell.contains(hit)};
    }
  }
  const headers = [...document.querySelectorAll('.ag-header-cell[col-id]')].map(h => h.getAttribute('col-id'));
  return {rows, headers};
}"""


def read_table(page) -> RunsTable:
    """Reads the runs table once it stops changing (the UI fills it in several passes)."""
    previous = None
    for _ in range(20):
        data = page.evaluate(_READ_TABLE)
        if data == previous:
            break
        previous = data
        page.wait_for_timeout(400)
    rows = {rid: {col: Cell(**c) for col, c in cells.items()} for rid, cells in previous["rows"].items()}
    return RunsTable(page.url, rows, previous["headers"])


def _group_row(page, variant: str, key: str = "variant"):
    return page.locator(f'.ag-row[row-id="tag.{key}.{variant}"]')


def wait_for_groups(page, variants: list[str], key: str = "variant") -> None:
    """Waits for the group rows of the variants; expands a group that shows no runs (its chevron)."""
    for v in variants:
        _group_row(page, v, key).first.wait_for()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for v in variants:
        runs = page.locator(f'.ag-row[row-id^="tag.{key}.{v}."]')
        try:
            runs.first.wait_for(timeout=3000)
        except PlaywrightTimeout:  # a collapsed group: its chevron
            _group_row(page, v, key).locator(f'[col-id="{RUN_NAME}"] [role=button]').first.click()
            runs.first.wait_for()


def open_study(page, link: str, variants: list[str], screenshot: Path | None = None) -> RunsTable:
    """Opens a study's link (its saved view of the runs page), waits for its variant groups
    (expanding them if needed), closes the assistant panel; a screenshot; the table."""
    page.goto(link)
    wait_for_groups(page, variants)
    close_assistant(page)
    table = read_table(page)
    _shot(page, screenshot)
    return table


def show_column(page, label: str, variants: list[str]) -> RunsTable:
    """Adds a column by its name in the "Columns" menu (e.g. the Dataset attribute)."""
    page.get_by_role("button", name="Columns", exact=True).click()
    box = page.get_by_test_id("column-selector-tree").get_by_text(label, exact=True).first
    box.click()
    page.keyboard.press("Escape")
    page.locator(f'.ag-header-cell[col-id="attributes.`{label}`"]').first.wait_for()
    wait_for_groups(page, variants)
    return read_table(page)


@dataclass
class UiSteps:
    """What `make ui` prints first (python -m ablations.tracking.browse): the UI's address, the labels
    its steps say to click, and per experiment its newest study's view and direct link."""

    address: str
    switch: str  # step 2's label: the mode switch ("Model training")
    views: str  # step 4's label: the saved views menu ("Views")
    views_of: dict[str, str]  # experiment -> the name of its newest study's view
    links: dict[str, str]  # experiment -> the link straight to that view
    text: str


def read_ui_steps(stdout: str) -> UiSteps:
    steps = dict(re.findall(r"^ {2}(\d+)\. (.*)$", stdout, re.M))
    studies = re.findall(r'^ {2}(\S+) +"([^"]+)" +(\S+)$', stdout, re.M)
    try:
        address = steps["1"].removeprefix("open ").strip()
        switch, views = (re.search(r'"([^"]+)"', steps[k]).group(1) for k in ("2", "4"))
    except (KeyError, AttributeError):
        raise LookupError(f'make ui printed no steps to follow (1. open ..., 2. click "...", 4. click "..."):\n{stdout}') from None
    return UiSteps(address.rstrip("/"), switch, views, {e: v for e, v, _ in studies}, {e: link for e, _, link in studies}, stdout)


def follow_ui_steps(page, steps: UiSteps, experiment: str, variants: list[str], shots: dict[str, Path] | None = None) -> tuple[list[str], RunsTable]:
    """What `make ui` says, click by click, from the home page: the mode switch's label, the
    experiment, the views menu's label, the study's view. No link is typed but the address;
    nothing is stored beforehand. Screenshots at "home" (after the switch), "views" (the menu
    open) and "runs" (the view), where shots names them. Returns (the steps taken, the table)."""
    shots = shots or {}
    taken = [f"open {steps.address}"]
    page.goto(steps.address + "/")
    experiment_link = page.get_by_role("link", name=experiment, exact=True).first
    experiment_link.wait_for()
    page.get_by_text(steps.switch, exact=True).first.click()
    taken.append(f'click "{steps.switch}"')
    page.wait_for_timeout(500)
    _shot(page, shots.get("home"))
    experiment_link.click()
    taken.append(f'click "{experiment}"')
    try:
        page.wait_for_url(re.compile(r"/experiments/\d+/runs"), timeout=20_000)
    except Exception:
        raise AssertionError(f"after {' -> '.join(taken)} the UI shows {page.url}, not the experiment's runs") from None
    page.locator(".ag-row[row-id]").first.wait_for()  # the runs page as it opens: the parent runs
    page.get_by_role("button", name=steps.views, exact=True).click()
    taken.append(f'click "{steps.views}"')
    item = page.get_by_role("menuitem").filter(has_text=steps.views_of[experiment]).first
    item.wait_for()
    _shot(page, shots.get("views"))
    item.click()
    taken.append(f'click "{steps.views_of[experiment]}"')
    wait_for_groups(page, variants)
    close_assistant(page)
    table = read_table(page)
    _shot(page, shots.get("runs"))
    return taken, table


def overview_without_switch(page, address: str, experiment: str, screenshot: Path | None = None) -> str:
    """A new browser that clicks the experiment on the home page without the switch: where it lands (URL)."""
    page.goto(address + "/")
    page.get_by_role("link", name=experiment, exact=True).first.click()
    page.wait_for_url(re.compile(r"/experiments/\d+/"))
    page.get_by_text("Overview", exact=True).first.wait_for()
    page.wait_for_timeout(1500)
    _shot(page, screenshot)
    return page.url


# ---------------------------------------------------------------------- charts
@dataclass
class Curve:
    """One group's line in a chart: mean (step -> value) and its band's points (step, value)."""

    color: str
    mean: dict[float, float]
    band: list[tuple[float, float]]


_READ_CHART = r"""(card, metric) => {
  const plot = card.querySelector('.js-plotly-plot');
  const legend = [...card.querySelectorAll('span')].filter(s => s.children.length === 0 && s.textContent.endsWith(` (${metric})`)).map(s => {
    const swatch = s.parentElement.querySelector('svg path');
    return [s.textContent.trim(), swatch ? getComputedStyle(swatch).stroke : ''];
  });
  const traces = ((plot && plot.data) || []).map(t => ({
    fill: t.fill || null, mode: t.mode || null, x: t.x || [], y: t.y || [],
    marker: (t.marker && t.marker.color) || null, line: (t.line && t.line.color) || null, fillcolor: t.fillcolor || null}));
  return {legend, traces};
}"""


def _hex(css_color: str) -> str:
    m = re.match(r"rgba?\((\d+),\s*(\d+),\s*(\d+)", css_color)
    return "#{:02x}{:02x}{:02x}".format(*map(int, m.groups())) if m else css_color.lower()


def show_chart(page, screenshot: Path | None = None, search: str | None = None) -> None:
    """Switches the runs page to Chart mode with its toolbar's chart button (optionally typing
    `search` into "Search metric charts"); waits for the charts; a screenshot."""
    page.locator('label:has(input[name="runs-view-mode"][value="CHART"])').click()
    page.locator(".js-plotly-plot").first.wait_for()
    if search:
        page.get_by_placeholder("Search metric charts").fill(search)
    close_assistant(page, wait_ms=500)
    if screenshot is not None:
        page.wait_for_timeout(1500)  # the charts draw after their data
        _shot(page, screenshot)


def chart_titles(page) -> list[str]:
    """The titles (metric names) of Chart view's charts in the order shown, the first section's first."""
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    cards.first.locator("h4").wait_for()
    return cards.locator("h4").evaluate_all("hs => hs.map(h => h.getAttribute('title') || h.textContent.trim())")


def chart_data(page, metric: str) -> dict[str, Curve]:
    """The chart of `metric` in Chart mode, as plotly holds it: {group label: Curve}; a group's
    label is the legend's ("relu (val_err1)" -> "relu"), matched to its traces by color."""
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    card = cards.filter(has=page.locator(f'h4[title="{metric}"]')).first
    for _ in range(30):  # a chart further down is not in the page until scrolled to: scroll the charts with the mouse wheel
        if card.count():
            break
        box = cards.last.bounding_box()
        if box:
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 20)
        page.mouse.wheel(0, 400)
        page.wait_for_timeout(250)
    card.scroll_into_view_if_needed()
    card.locator(".js-plotly-plot").wait_for()
    data: dict = {}
    for _ in range(40):
        data = card.evaluate(_READ_CHART, metric)
        if data["legend"] and any(t["mode"] and "markers" in t["mode"] and t["y"] for t in data["traces"]):
            break
        page.wait_for_timeout(250)
    curves: dict[str, Curve] = {}
    for label, color in data["legend"]:
        name = label.rsplit(f" ({metric})", 1)[0]
        color = _hex(color)
        mean = next((t for t in data["traces"] if t["mode"] and "lines" in t["mode"] and (t["marker"] or t["line"] or "").lower() == color), None)
        band = next((t for t in data["traces"] if t["fill"] and (t["fillcolor"] or "").lower().startswith(color)), None)
        curves[name] = Curve(
            color,
            {x: y for x, y in zip(mean["x"], mean["y"], strict=False) if x is not None and y is not None} if mean else {},
            [(x, y) for x, y in zip(band["x"], band["y"], strict=False) if x is not None and y is not None] if band else [],
        )
    return curves


# ---------------------------------------------------------------------- the report in the artifact viewer
@dataclass
class ReportView:
    url: str
    title: str  # the report's first heading
    rows: list[list[str]]  # its first table's rows, cells split
    visible: dict[str, bool]  # per first cell of a row (the variant): is it on screen in the viewer


def open_report(page, base_url: str, runs: StudyRuns, artifact: str = "report/report.html", screenshot: Path | None = None) -> ReportView:
    """The study's parent run page (model-training view), its Artifacts tab, the report's
    folder and file: the viewer shows the HTML in a sandboxed iframe. Returns what it shows."""
    page.goto(f"{base_url}/#/experiments/{runs.experiment_id}/runs/{runs.parent_id}?workflowType=machine_learning")
    page.get_by_role("tab", name="Artifacts").click()
    close_assistant(page)
    folder, name = artifact.rsplit("/", 1)
    file = page.get_by_text(name, exact=True).first
    with contextlib.suppress(Exception):
        file.wait_for(timeout=3000)
    if not file.is_visible():
        page.get_by_text(folder, exact=True).first.click()
    file.click()
    frame = page.frame_locator("iframe").first
    table = frame.locator("table").first
    table.wait_for()
    title = frame.locator("h1").first.inner_text()
    rows = [[c.strip() for c in r.split("\t")] for r in table.inner_text().splitlines() if r.strip()]
    visible = {}
    for row in rows[1:]:
        visible[row[0]] = frame.get_by_role("cell", name=row[0], exact=True).first.is_visible()
    _shot(page, screenshot)
    return ReportView(page.url, title, rows, visible)
