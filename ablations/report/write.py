"""The comparison report of a study: statistics over seeds, plots, a verdict per variant.

    python -m ablations.report NAME     # the newest study of that ablation

Reads the study's runs from MLflow (it trains and evaluates nothing, and imports
no torch) and writes reports/NAME/report.md with PNG plots, logs them to the
study's parent run, then rewrites reports/summary.md across every ablation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablations import tracking
from ablations.analysis import tuning
from ablations.analysis.records import TARGET_TRAIN_ERR, RunResult
from ablations.analysis.stats import Comparison, Stat, describe, holm, paired, ratio
from ablations.report import factorial, plots
from ablations.report.read import candidates, read_run
from ablations.report.summary import write_summary
from ablations.spec import Tune, load_ablation
from core import paths
from core.errors import ConfigError, run_command
from core.keys import is_choice


def _link(parent) -> str:
    """The deep link to the study's saved view in the MLflow UI, or "" if it has none."""
    eid, pid = parent.info.experiment_id, parent.info.run_id
    tags = tracking.retry(tracking.client().get_experiment, eid).tags
    return tracking.study_link(eid, pid) if tracking.VIEW + pid in tags else ""


def collect(name: str, parent_id: str | None = None) -> tuple[list[RunResult], dict]:
    """The FINISHED runs of the ablation's newest study (or of `parent_id`), and the study's facts."""
    parent = tracking.get_run(parent_id) if parent_id else tracking.newest_study(name)
    if parent is None:
        raise ConfigError(f"no '{name}' study in {tracking.tracking_uri()}: run `make ablate-{name}` first")
    # (stores written before 609e4e4 also hold aggregate runs, tagged aggregate=true)
    runs = [r for r in tracking.study_children(parent) if r.info.status == "FINISHED" and r.data.tags.get("aggregate") != "true"]
    runs = [r for r in runs if r.data.tags.get(tracking.TUNING) != "true"]
    params = parent.data.params
    meta = {
        "parent_id": parent.info.run_id,
        "parent_name": parent.info.run_name,
        "profile": parent.data.tags.get(tracking.PROFILE, ""),
        "variants": [v for v in params.get("variants", "").split(",") if v],
        "overrides": params.get("overrides", ""),
        "seeds": params.get("seeds", ""),
        "tuned": parent.data.tags.get(tracking.TUNED) == "true",
        "link": _link(parent),
    }
    return [read_run(r) for r in runs], meta


@dataclass
class VariantRow:
    variant: str
    n: int
    final_err1: Stat
    best_err1: Stat
    final_err5: Stat
    best_err5: Stat
    train_err1: Stat
    clean_train_err1: Stat
    gap: Stat
    epochs_to_25: Stat
    epoch_time: Stat
    precise_bn_err1: Stat  # final val top-1 error with BatchNorm's statistics recomputed (n = 0: not measured)
    precise_bn_train_err1: Stat
    vs_baseline: Comparison | None = None
    vs_baseline_precise_bn: Comparison | None = None
    ratio_epochs: Stat | None = None  # epochs to 25%, variant / reference
    ratio_floor: float = math.nan  # where only the reference reached 25%: the smallest epochs trained / the reference's epochs to 25%
    censored_pairs: int = 0  # how many such pairs
    reference: str = ""  # the variant it is measured against: the baseline, or the file's compare

    def comparison(self, precise_bn: bool = False) -> Comparison | None:
        """Against its reference on the final validation error (with `precise_bn`: with
        BatchNorm's statistics recomputed)."""
        return self.vs_baseline_precise_bn if precise_bn else self.vs_baseline

    def delta_cell(self, precise_bn: bool = False) -> str:
        c = self.comparison(precise_bn)
        return "—" if self.variant == self.reference else (c.diff.fmt() if c else "n/a")


def _per_seed(runs: dict[int, RunResult], value: Callable[[RunResult], float]) -> dict[int, float]:
    return {s: value(r) for s, r in runs.items()}


def _final_val(r: RunResult) -> float:
    return r.final("val_err1")


def _precise_bn_val(r: RunResult) -> float:
    return r.precise_bn.get(tracking.PRECISE_BN_VAL_ERR, math.nan)


def analyse(results: list[RunResult], order: list[str], baseline: str, compare: dict[str, str] | None = None) -> list[VariantRow]:
    """Per variant, its statistics and its paired comparison with its reference (the
    baseline unless `compare` names another variant)."""
    by_seed = {v: {r.seed: r for r in results if r.variant == v} for v in order}
    rows = []
    for v in order:
        rs = list(by_seed[v].values())
        ref = (compare or {}).get(v, baseline)
        row = VariantRow(
            variant=v,
            n=len(rs),
            final_err1=describe([r.final("val_err1") for r in rs]),
            best_err1=describe([r.best("val_err1") for r in rs]),
            final_err5=describe([r.final("val_err5") for r in rs]),
            best_err5=describe([r.best("val_err5") for r in rs]),
            train_err1=describe([r.final("train_err1") for r in rs]),
            clean_train_err1=describe([r.clean_train_err1 for r in rs]),
            gap=describe([r.final("val_err1") - r.clean_train_err1 for r in rs]),
            epochs_to_25=describe([r.epochs_to() for r in rs]),
            precise_bn_err1=describe([_precise_bn_val(r) for r in rs]),
            precise_bn_train_err1=describe([r.precise_bn.get(tracking.PRECISE_BN_TRAIN_ERR, math.nan) for r in rs]),
            epoch_time=describe([float(np.median(r.curves["epoch_time_s"])) if r.curves.get("epoch_time_s") else math.nan for r in rs]),
            reference=ref,
        )
        base = by_seed.get(ref, {})
        if v != ref and base:
            row.vs_baseline = paired(_per_seed(by_seed[v], _final_val), _per_seed(base, _final_val))
            row.vs_baseline_precise_bn = paired(_per_seed(by_seed[v], _precise_bn_val), _per_seed(base, _precise_bn_val))
        if base:
            mine, theirs = _per_seed(by_seed[v], RunResult.epochs_to), _per_seed(base, RunResult.epochs_to)
            row.ratio_epochs = ratio(mine, theirs)
            floors = [by_seed[v][s].epochs_trained / theirs[s] for s, t in mine.items() if math.isnan(t) and not math.isnan(theirs.get(s, math.nan))]
            row.ratio_floor, row.censored_pairs = min(floors, default=math.nan), len(floors)
        rows.append(row)
    holm([r.vs_baseline for r in rows if r.vs_baseline is not None])
    holm([r.vs_baseline_precise_bn for r in rows if r.vs_baseline_precise_bn is not None])
    return rows


def verdict(row: VariantRow, baseline: str, precise_bn: bool = False) -> str:
    """The variant against its reference on the final validation error (with `precise_bn`:
    with BatchNorm's statistics recomputed)."""
    c = row.comparison(precise_bn)
    if row.variant == baseline:
        return "baseline"
    baseline = row.reference or baseline
    if c is None:
        return "needs ≥ 2 paired seeds for a test"
    p = f"p = {c.p_value:.2g}" + (f", adjusted {c.p_adjusted:.2g} for {c.family} comparisons" if c.family > 1 else "")
    if c.within_noise:
        return f"within noise ({p})"
    word = "higher" if c.diff.mean > 0 else "lower"
    return f"{abs(c.diff.mean) * 100:.2f} points {word} error than {baseline} ({p})"


def _fmt_ratio(row: VariantRow) -> str:
    s, k = row.ratio_epochs, row.censored_pairs
    floor = f"> {row.ratio_floor:.2f}x in {k} pair{'s' if k > 1 else ''} where only the {row.reference} reached it" if k else ""
    if s is None or s.n == 0 or math.isnan(s.mean):
        return floor or "n/a"
    text = f"{s.mean:.2f}x (ratio of means: under 2 paired seeds)" if s.n == 1 else f"{s.mean:.2f}x [{s.lo:.2f}, {s.hi:.2f}] ({s.n} pairs)"
    return f"{text}; {floor}" if floor else text


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render(name: str, description: str, baseline: str, rows: list[VariantRow], meta: dict, plot_files: list[str], compare: dict[str, str] | None = None) -> str:
    against = "baseline" if not compare else "reference"
    lines = [f"# Ablation: {name}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"Study run `{meta['parent_name']}` ({meta['parent_id']}), profile `{meta['profile'] or 'none'}`, "
        f"store `{tracking.tracking_uri()}`. Errors in %, as mean ± standard deviation over seeds "
        f"[95% confidence interval of the mean]; differences are paired by seed (variant − {baseline}) with a paired t-test, "
        "its p adjusted (Holm) for the number of variants compared"
        + (f"; compared with another variant than {baseline}: " + ", ".join(f"{v} with {r}" for v, r in compare.items()) if compare else "")
        + ".",
        "",
        *_browse(meta),
        f"| variant | seeds | final val top-1 err | Δ vs {against} [95% CI] | best val top-1 err | final val top-5 err | best val top-5 err | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.variant, r.n, r.final_err1.fmt(), r.delta_cell(), r.best_err1.fmt(), r.final_err5.fmt(), r.best_err5.fmt(), verdict(r, baseline)]
        lines.append(_row(cells))
    lines += [
        "",
        "## Training speed and overfitting",
        "",
        f"Epochs of training until the training error first reaches {TARGET_TRAIN_ERR:.0%} (the paper's Figure 1 measure), "
        "read off the running training error logged every few steps and interpolated between readings "
        f"(n/a: not reached while it trained), and its ratio to the {against}'s (geometric mean over the seeds where both reached it, "
        f"95% interval, and how many pairs; a pair where only the {against} reached it gives a lower bound instead, the epochs the variant "
        f"trained without reaching it over the {against}'s epochs, and the smallest such bound is shown); "
        "the training error of the last epoch as logged during training (augmented batches, dropout on); "
        "the final weights' training error in eval mode without augmentation (a fixed subset of up to 10,000 training images); "
        "the overfitting gap (final validation error minus the latter); the median time per epoch.",
        "",
        _row(
            [
                "variant",
                "epochs to 25% train err",
                f"ratio to {against}",
                "train top-1 err, last epoch",
                "train top-1 err, eval mode",
                "val − train gap",
                "time per epoch (s)",
            ]
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reached = f"{r.epochs_to_25.fmt(pct=False)} ({r.epochs_to_25.n}/{r.n} seeds)"
        cells = [r.variant, reached, _fmt_ratio(r), r.train_err1.fmt(), r.clean_train_err1.fmt(), r.gap.fmt(), r.epoch_time.fmt(pct=False)]
        lines.append(_row(cells))
    lines += _precise_bn_section(name, rows, baseline, against)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plot_files]
    lines += ["", _reproduce(name, meta), ""]
    return "\n".join(lines)


def _precise_bn_section(name: str, rows: list[VariantRow], baseline: str, against: str) -> list[str]:
    """The final weights with BatchNorm's running statistics recomputed, when measured."""
    if not any(r.precise_bn_err1.n for r in rows):
        return []
    lines = [
        "",
        "## With BatchNorm's statistics recomputed",
        "",
        "The final weights with BatchNorm's running statistics recomputed over one pass of the training images the clean error uses "
        f"(`make backfill-{name} PRECISE_BN=1`; a network without BatchNorm is evaluated unchanged). The running averages a run ends with "
        "lag its weights when an epoch has few steps; recomputed, the comparison measures the weights, not the lag.",
        "",
        f"| variant | final val top-1 err, as trained | recomputed | Δ vs {against} [95% CI] | verdict | train top-1 err, eval mode, recomputed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.variant, r.final_err1.fmt(), r.precise_bn_err1.fmt(), r.delta_cell(precise_bn=True), verdict(r, baseline, precise_bn=True),
                 r.precise_bn_train_err1.fmt()]  # fmt: skip
        lines.append(_row(cells))
    return lines


def _plots(results: list[RunResult], rows: list[VariantRow], order: list[str], folder: Path, name: str) -> list[str]:
    def series(key: str) -> dict[str, list[list[float]]]:
        return {v: [r.curves.get(key, []) for r in results if r.variant == v] for v in order}

    files = ["train_error.png", "val_error_curves.png", "val_error.png"]
    plots.curves(series("train_err1"), folder / files[0], "train top-1 error (%)", f"{name}: training error (mean, band = min..max over seeds)",
                 (TARGET_TRAIN_ERR, "25% (Figure 1)"))  # fmt: skip
    plots.curves(series("val_err1"), folder / files[1], "val top-1 error (%)", f"{name}: validation error")
    shown = [r for r in rows if r.final_err1.n]
    plots.bars([r.variant for r in shown], [r.final_err1.mean for r in shown], [r.final_err1.lo for r in shown], folder / files[2],
               "final validation top-1 error (%)", f"{name}: final validation error (95% CI)")  # fmt: skip
    return files


def _changes(results: list[RunResult], variant: str, reference: str) -> dict[str, list[str]]:
    """The config keys in which the variant's runs differ from its reference's: key -> [reference's, variant's].
    Only choices count: a run reused from a study with other threads or devices changes nothing."""
    mine = next((r.params for r in results if r.variant == variant), {})
    ref = next((r.params for r in results if r.variant == reference), {})
    return {k: [ref[k], v] for k, v in mine.items() if k in ref and ref[k] != v and is_choice(k)}


def _summary_entry(name: str, baseline: str, meta: dict, rows: list[VariantRow], results: list[RunResult]) -> dict:
    def delta(r: VariantRow, precise_bn: bool = False):
        c = r.comparison(precise_bn)
        return None if c is None else c.diff.__dict__ | {"p": c.p_value, "p_adjusted": c.p_adjusted, "within_noise": c.within_noise}

    variants = [
        {
            "variant": r.variant,
            "seeds": r.n,
            "final_val_err1": r.final_err1.__dict__,
            "delta": delta(r),
            "epochs_to_25": r.epochs_to_25.__dict__,
            "ratio_epochs": None if r.ratio_epochs is None else r.ratio_epochs.__dict__,
            "ratio_floor": None if not r.censored_pairs else {"floor": r.ratio_floor, "pairs": r.censored_pairs},
            "train_err1": r.train_err1.__dict__,
            "clean_train_err1": r.clean_train_err1.__dict__,
            "gap": r.gap.__dict__,
            **(
                {
                    "precise_bn_val_err1": r.precise_bn_err1.__dict__,
                    "precise_bn_delta": delta(r, precise_bn=True),
                    "precise_bn_train_err1": r.precise_bn_train_err1.__dict__,
                }
                if r.precise_bn_err1.n
                else {}
            ),
            "changes": _changes(results, r.variant, r.reference),
        }
        for r in rows
    ]
    return {"ablation": name, "baseline": baseline, "profile": meta["profile"], "parent_id": meta["parent_id"], "variants": variants}


def _value(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def tuning_section(
    name: str, tune: Tune, meta: dict, order: list[str], baseline: str, rows: list[VariantRow], folder: Path, compare: dict[str, str]
) -> tuple[list[str], list[str]]:
    """The tuned values, the sensitivity plot, edge warnings and, when the ablation also
    has a study at one shared value, both comparisons side by side. (Markdown lines, plot files.)"""
    parent = tracking.get_run(meta["parent_id"])
    found = candidates(tracking.tuning_runs(parent), tune)
    chosen = tuning.choose(found, tune, order)
    key = next(iter(tune.space))
    what = "final val top-1 error" if tune.objective == "val_err1" else f"epochs to {tune.target:.0%} train err"
    scale = 100 if tune.objective == "val_err1" else 1  # errors drawn in %
    series = {v: [(c.values[key], c.score[0] * scale) for c in found if c.variant == v] for v in order}
    to_target = tune.objective == "epochs_to_train_err"
    last = "running train err at the end (%)"
    tiebreak = (last, {v: [(c.values[key], c.score[1] * 100) for c in found if c.variant == v] for v in order}) if to_target else None
    plots.sensitivity(series, {v: values[key] for v, values in chosen.items()}, folder / "sensitivity.png", key, what + (" (%)" if scale == 100 else ""),
                      f"{name}: tuning ({tune.search}, {len(tune.seeds)} seed(s) per candidate)", tiebreak)  # fmt: skip
    rule = ("a failed run loses; a run that never reached the target ranks behind every one that did, by its running training error "
            "at the end (the plot's second panel)") if to_target else "a failed run loses"  # fmt: skip
    lines = ["", "## Tuning", "", f"Each variant trained at its own best {', '.join(tune.space)}, chosen by {what} (lower is better) over "
             f"{tune.search} candidates {', '.join(_value(x) for x in tune.space[key]) if tune.search == 'grid' else 'from Optuna'}, "
             f"under the tuning budget {tune.budget or '(none)'}; {rule}.", "",
             _row(["variant", "tuned", f"{what} at it", "candidates tried"]), "|---|---|---|---|"]  # fmt: skip
    for v in order:
        best = next((c for c in found if c.variant == v and c.values == chosen.get(v)), None)
        if best is None or best.lost:
            score = "n/a"
        elif not math.isfinite(best.score[0]):
            score = f"not reached (running train err {best.score[1] * 100:.1f} at the end)"
        else:
            score = f"{best.score[0] * 100:.2f}" if tune.objective == "val_err1" else f"{best.score[0]:.2f}"
        lines.append(_row([v, ", ".join(f"{k}={_value(x)}" for k, x in chosen.get(v, {}).items()), score, sum(c.variant == v for c in found)]))
    lines += ["", *(f"- **Warning:** {w}." for w in tuning.at_edge(tune, chosen)), "", "![sensitivity.png](sensitivity.png)"]
    shared = tracking.newest_study(name, tuned=False, finished=True)
    if shared is not None:
        results, _ = collect(name, shared.info.run_id)
        shared_rows = {r.variant: r for r in analyse(results, order, baseline, compare)} if results else {}
        shared_value = results[0].params.get(key, "?") if results else "?"
        lines += ["", f"### At one shared {key} and each at its best", "",
                  f"The newest study of this ablation at the shared {key} ({shared_value}), `{shared.info.run_name}`, beside this one.", "",
                  _row(["variant", "shared: val top-1 err", "shared: epochs to 25%", "shared: ratio", f"tuned: {key}", "tuned: val top-1 err",
                        "tuned: epochs to 25%", "tuned: ratio"]), "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            s = shared_rows.get(r.variant)
            cells = [s.final_err1.fmt(), s.epochs_to_25.fmt(pct=False), _fmt_ratio(s)] if s else ["n/a"] * 3
            tuned_value = _value(chosen.get(r.variant, {}).get(key, "?"))
            lines.append(_row([r.variant, *cells, tuned_value, r.final_err1.fmt(), r.epochs_to_25.fmt(pct=False), _fmt_ratio(r)]))
    return lines, ["sensitivity.png"]


def write_report(name: str, parent_id: str | None = None, config_dir: Path | None = None, out_dir: Path | None = None) -> Path:
    out_dir = out_dir or paths.reports_dir()
    try:
        ablation = load_ablation(name, config_dir)
        description, baseline, declared = ablation.description, ablation.baseline, list(ablation.variants)
        tune, compare, design = ablation.tune, ablation.compare, ablation.design
    except ConfigError:  # the file is gone; report what MLflow holds
        description, baseline, declared, tune, compare, design = "", None, [], None, {}, None
    results, meta = collect(name, parent_id)
    if not results:
        raise ConfigError(f"the {'' if parent_id else 'newest '}'{name}' study has no finished runs to report")
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    if design is not None:
        text, files, entry = _factorial_report(name, description, design, results, meta, folder)
        return _finish(name, folder, text, files, entry, meta, out_dir)
    order = meta["variants"] or declared or sorted({r.variant for r in results})
    order += sorted({r.variant for r in results} - set(order))
    baseline = baseline if baseline in order else order[0]
    order = [baseline] + [v for v in order if v != baseline]
    rows = analyse(results, order, baseline, compare)
    files = _plots(results, rows, order, folder, name)
    text = render(name, description, baseline, rows, meta, files, compare)
    if meta["tuned"] and tune is not None:
        lines, more = tuning_section(name, tune, meta, order, baseline, rows, folder, compare)
        head, _, tail = text.partition("\n## Training speed and overfitting")
        text = head + "\n".join(lines) + "\n\n## Training speed and overfitting" + tail
        files += more
    return _finish(name, folder, text, files, _summary_entry(name, baseline, meta, rows, results), meta, out_dir)


def _browse(meta: dict) -> list[str]:
    if not meta.get("link"):
        return []
    return [f"Browse the study in MLflow (`make ui` first): [its runs, grouped by variant]({meta['link']}); "
            f"[the variants' mean curves]({meta['link']}&compareRunsMode=CHART).", ""]  # fmt: skip


def _html(markdown_text: str, folder: Path) -> str:
    """The report as one HTML page, its plots inlined, for MLflow's artifact viewer."""
    import base64
    import re

    import markdown

    def inline(match: re.Match) -> str:
        png = folder / match.group(2)
        if not png.is_file():
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"

    body = markdown.markdown(re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", inline, markdown_text), extensions=["tables"])
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
    style += "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{body}</body></html>"


def _reproduce(name: str, meta: dict) -> str:
    command = f"make ablate-{name}"
    command += f" PROFILE={meta['profile']}" if meta["profile"] else ""
    command += f" SEEDS={meta['seeds']}" if meta.get("seeds") else ""
    command += f' ARGS="{meta["overrides"]}"' if meta.get("overrides") else ""
    command += " TUNE=1" if meta.get("tuned") else ""
    return f"Reproduce: `{command}` (add PARALLEL=k to run k at a time); regenerate: `make report-{name}`."


def _factorial_report(name: str, description: str, design, results: list[RunResult], meta: dict, folder: Path) -> tuple[str, list[str], dict]:
    lines = [f"# Ablation: {name} (factorial)", ""] + ([description, ""] if description else [])
    lines += [f"Study run `{meta['parent_name']}` ({meta['parent_id']}), profile `{meta['profile'] or 'none'}`, store `{tracking.tracking_uri()}`.", ""]
    lines += _browse(meta)
    body, files, analysis = factorial.section(results, design, folder, name)
    lines += body + ["", _reproduce(name, meta), ""]
    effects = [] if analysis is None else [
        {"term": list(e.term), "levels": [list(map(str, design.factors[k])) for k in e.term], "name": e.name, "effect": e.effect,
         "lo": e.lo, "hi": e.hi, "p": e.p, "p_holm": e.p_holm, "real": e.real}
        for e in analysis.effects
    ]  # fmt: skip
    entry = {"ablation": name, "factorial": True, "profile": meta["profile"], "parent_id": meta["parent_id"], "design": design.describe(), "effects": effects}
    return "\n".join(lines), files, entry


def _finish(name: str, folder: Path, text: str, files: list[str], entry: dict, meta: dict, out_dir: Path) -> Path:
    (folder / "report.md").write_text(text)
    (folder / "report.html").write_text(_html(text, folder))
    (folder / "summary.json").write_text(json.dumps(entry, indent=1, default=float))
    for f in ["report.md", "report.html", "summary.json", *files]:
        tracking.log_artifact(meta["parent_id"], str(folder / f), "report")
    write_summary(out_dir)
    return folder / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--config-dir", type=Path, default=None, help="default: configs/ ($ABLATION_CONFIGS)")
    args = parser.parse_intermixed_args(argv)
    path = write_report(args.name, config_dir=args.config_dir)
    print(path.read_text())
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
