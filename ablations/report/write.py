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
from pathlib import Path

from ablations import tracking
from ablations.analysis import tuning
from ablations.analysis.records import TARGET_TRAIN_ERR, RunResult
from ablations.analysis.sequential import SeedBounds
from ablations.analysis.study import StudyResult, analyse_study
from ablations.report import evidence, factorial, plots
from ablations.report import render as render_md
from ablations.report.read import StudyData, candidates, study_from_mlflow
from ablations.report.summary import write_scoreboard, write_summary
from ablations.spec import DEFAULT_DELTA, DEFAULT_METRIC, Tune, load_ablation
from core import paths
from core.errors import ConfigError, run_command
from core.keys import is_choice


def _link(parent) -> str:
    """The deep link to the study's saved view in the MLflow UI, or "" if it has none."""
    eid, pid = parent.info.experiment_id, parent.info.run_id
    tags = tracking.retry(tracking.client().get_experiment, eid).tags
    return tracking.study_link(eid, pid) if tracking.VIEW + pid in tags else ""


def collect(name: str, parent_id: str | None = None) -> StudyData:
    """The ablation's newest study (or the study `parent_id`) as its store holds it."""
    parent = tracking.get_run(parent_id) if parent_id else tracking.newest_study(name)
    if parent is None:
        raise ConfigError(f"no '{name}' study in {tracking.tracking_uri()}: run `make ablate-{name}` first")
    return study_from_mlflow(name, parent, _link(parent))


def render(name: str, description: str, result: StudyResult, meta: dict, plot_files: list[str], tuning_lines: list[str]) -> str:
    lines = [f"# Ablation: {name}", ""] + ([description, ""] if description else [])
    lines += [_provenance(meta) + "Errors in %, as mean ± standard deviation over seeds [95% interval of the mean]; differences in points.", ""]  # fmt: skip
    lines += _browse(meta) + render_md.how(result) + render_md.main_table(result) + tuning_lines + [""]
    lines += render_md.speed_table(result) + render_md.diagnostics_section(result) + render_md.precise_bn_section(result, name)
    lines += ["", *render_md.curves_section(result)] if result.curves else []
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plot_files]
    lines += ["", _reproduce(name, meta), ""]
    return "\n".join(lines)


def _plots(results: list[RunResult], result: StudyResult, order: list[str], folder: Path, name: str) -> list[str]:
    def series(key: str) -> dict[str, list[list[float]]]:
        return {v: [r.curves.get(key, []) for r in results if r.variant == v] for v in order}

    files = ["train_error.png", "val_error_curves.png", "val_error.png"]
    plots.curves(series("train_err1"), folder / files[0], "train top-1 error (%)", f"{name}: training error (mean, band = min..max over seeds)",
                 (TARGET_TRAIN_ERR, "25% (Figure 1)"))  # fmt: skip
    plots.curves(series("val_err1"), folder / files[1], "val top-1 error (%)", f"{name}: validation error")
    shown = [v for v in result.variants if v.final_err1.n]
    plots.bars([v.variant for v in shown], [v.final_err1.mean for v in shown], [v.final_err1.lo for v in shown],
               [v.final_err1.hi for v in shown], folder / files[2], "final validation top-1 error (%)", f"{name}: final val error (95%, 3+ seeds)")  # fmt: skip
    if result.curves:
        plots.effect_curves(result.curves, folder / "effects.png", f"{name}: Δ val top-1 error vs reference per epoch (95% interval)")
        files.append("effects.png")
    return files


def _changes(results: list[RunResult], variant: str, reference: str) -> dict[str, list[str]]:
    """The config keys in which the variant's runs differ from its reference's: key -> [reference's, variant's].
    Only choices count: a run reused from a study with other threads or devices changes nothing."""
    mine = next((r.params for r in results if r.variant == variant), {})
    ref = next((r.params for r in results if r.variant == reference), {})
    return {k: [ref[k], v] for k, v in mine.items() if k in ref and ref[k] != v and is_choice(k)}


def _value(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def tuning_section(name: str, tune: Tune, study: StudyData, result: StudyResult, folder: Path) -> tuple[list[str], list[str]]:
    """The tuned values, the sensitivity plot, edge warnings and, when the ablation also
    has a study at one shared value, both comparisons side by side. (Markdown lines, plot files.)"""
    found = candidates(study.tuning, tune)
    order = result.order
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
             render_md.row(["variant", "tuned", f"{what} at it", "candidates tried"]), "|---|---|---|---|"]  # fmt: skip
    for v in order:
        best = next((c for c in found if c.variant == v and c.values == chosen.get(v)), None)
        if best is None or best.lost:
            score = "n/a"
        elif not math.isfinite(best.score[0]):
            score = f"not reached (running train err {best.score[1] * 100:.1f} at the end)"
        else:
            score = f"{best.score[0] * 100:.2f}" if tune.objective == "val_err1" else f"{best.score[0]:.2f}"
        lines.append(render_md.row([v, ", ".join(f"{k}={_value(x)}" for k, x in chosen.get(v, {}).items()), score, sum(c.variant == v for c in found)]))
    lines += ["", *(f"- **Warning:** {w}." for w in tuning.at_edge(tune, chosen)), "", "![sensitivity.png](sensitivity.png)"]
    if study.shared is not None:
        results = study.shared.results()
        shared = analyse_study(name, results, order, result.baseline, result.compare, result.metric, result.delta) if results else None
        shared_value = results[0].params.get(key, "?") if results else "?"
        lines += ["", f"### At one shared {key} and each at its best", "",
                  f"The newest study of this ablation at the shared {key} ({shared_value}), `{study.shared.parent_name}`, beside this one.", "",
                  render_md.row(["variant", "shared: val top-1 err", "shared: epochs to 25%", "shared: ratio", f"tuned: {key}", "tuned: val top-1 err",
                        "tuned: epochs to 25%", "tuned: ratio"]), "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in result.variants:
            s = next((x for x in shared.variants if x.variant == r.variant and x.n), None) if shared else None
            cells = [render_md.rate(s.final_err1), render_md.stat(s.epochs_to), render_md.ratio(s)] if s else ["n/a"] * 3
            tuned_value = _value(chosen.get(r.variant, {}).get(key, "?"))
            lines.append(render_md.row([r.variant, *cells, tuned_value, render_md.rate(r.final_err1), render_md.stat(r.epochs_to), render_md.ratio(r)]))
    return lines, ["sensitivity.png"]


def write_report(name: str, parent_id: str | None = None, config_dir: Path | None = None, out_dir: Path | None = None, study: StudyData | None = None) -> Path:
    """Writes out_dir/name/ (report.md, report.html, summary.json, plots) from `study`, or from
    the store's newest study of the ablation (or `parent_id`), whose parent run then gets it too."""
    out_dir = out_dir or paths.reports_dir()
    try:
        ablation = load_ablation(name, config_dir)
        description, baseline, declared = ablation.description, ablation.baseline, list(ablation.variants)
        tune, compare, design = ablation.tune, ablation.compare, ablation.design
        metric, delta = ablation.metric, ablation.smallest_effect
    except ConfigError:  # the file is gone; report what MLflow holds
        description, baseline, declared, tune, compare, design = "", None, [], None, {}, None
        metric, delta = DEFAULT_METRIC, DEFAULT_DELTA[DEFAULT_METRIC]
    from_store = study is None
    study = study or collect(name, parent_id)
    results, meta = study.results(), study.meta
    meta["log"] = from_store
    meta["subset"] = bool(declared and meta["variants"] and set(meta["variants"]) < set(declared))  # VARIANTS=...
    if not results:
        raise ConfigError(f"the {'' if parent_id else 'newest '}'{name}' study has no finished runs to report")
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    if design is not None:
        text, files, entry = _factorial_report(name, description, design, results, meta, folder, metric)
        return _finish(name, folder, text, files, entry, meta, out_dir)
    order = meta["variants"] or declared or sorted({r.variant for r in results})
    order += sorted({r.variant for r in results} - set(order))
    baseline = baseline if baseline in order else order[0]
    order = [baseline] + [v for v in order if v != baseline]
    adaptive = meta["adaptive"]
    bounds = SeedBounds(adaptive["min"], adaptive["max"]) if adaptive else None
    result = analyse_study(name, results, order, baseline, compare, metric, delta, adaptive=bounds)
    files = _plots(results, result, order, folder, name)
    tuning_lines: list[str] = []
    if meta["tuned"] and tune is not None:
        tuning_lines, more = tuning_section(name, tune, study, result, folder)
        files += more
    text = render(name, description, result, meta, files, tuning_lines)
    changes = {v: _changes(results, v, result.row(v).reference) for v in order}
    hashes = {r.variant: r.variant_hash for r in results}
    entry = render_md.summary_entry(result, meta, changes, hashes) | _measured_on(results, baseline) | {"tuned": meta["tuned"]}
    return _finish(name, folder, text, files, entry, meta, out_dir)


def _measured_on(results: list[RunResult], baseline: str) -> dict[str, str]:
    """The network and dataset the study measured (its baseline's): the scoreboard matches claims by them.
    An image folder is named by its folder: imagefolder:cifar10-jpeg."""
    params = next((r.params for r in results if r.variant == baseline), results[0].params)
    dataset = params.get("data.name", "?")
    if dataset == "imagefolder":
        dataset += ":" + Path(params.get("data.root", "?")).name
    return {"network": params.get("model.arch", "?"), "dataset": dataset}


def _provenance(meta: dict) -> str:
    where = f"store `{meta['store']}`" if meta["log"] else f"exported from store `{meta['store']}` into `{evidence.FILE}` beside this report"
    return f"Study run `{meta['parent_name']}` ({meta['parent_id']}), profile `{meta['profile'] or 'none'}`, {where}. "


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
    command += f" VARIANTS={','.join(meta['variants'])}" if meta.get("subset") else ""
    command += f' ARGS="{meta["overrides"]}"' if meta.get("overrides") else ""
    command += " TUNE=1" if meta.get("tuned") else ""
    again = f"`make report-{name}`" if meta["log"] else f"`make report-{name} FROM=<this folder>` (from `{evidence.FILE}` alone)"
    return f"Reproduce: `{command}` (add PARALLEL=k to run k at a time); regenerate: {again}."


def _factorial_report(name: str, description: str, design, results: list[RunResult], meta: dict, folder: Path, metric: str) -> tuple[str, list[str], dict]:
    lines = [f"# Ablation: {name} (factorial)", ""] + ([description, ""] if description else [])
    lines += [_provenance(meta).rstrip(), ""]
    lines += _browse(meta)
    body, files, analysis = factorial.section(results, design, folder, name, metric)
    lines += body + ["", _reproduce(name, meta), ""]
    effects = [] if analysis is None else [
        {"term": list(e.term), "levels": [list(map(str, design.factors[k])) for k in e.term], "name": e.name, "effect": e.effect,
         "lo": e.lo, "hi": e.hi, "p": e.p, "p_holm": e.p_holm, "verdict": e.verdict.label}
        for e in analysis.effects
    ]  # fmt: skip
    entry = {"ablation": name, "factorial": True, "profile": meta["profile"], "parent_id": meta["parent_id"], "design": design.describe(), "effects": effects,
             "metric": factorial.response_of(results, metric), "robust": bool(analysis and analysis.robust)}  # fmt: skip
    return "\n".join(lines), files, entry


def _finish(name: str, folder: Path, text: str, files: list[str], entry: dict, meta: dict, out_dir: Path) -> Path:
    (folder / "report.md").write_text(text)
    (folder / "report.html").write_text(_html(text, folder))
    (folder / "summary.json").write_text(json.dumps(entry, indent=1, default=float))
    for f in ["report.md", "report.html", "summary.json", *files] if meta["log"] else []:
        tracking.log_artifact(meta["parent_id"], str(folder / f), "report")
    write_summary(out_dir)
    return folder / "report.md"


def _published(results: Path) -> None:
    """After writing into docs/results: the README's scoreboard again (ablations.report.summary)."""
    if results == paths.ROOT / "docs" / "results" and write_scoreboard(paths.ROOT / "README.md", results, "docs/results/"):
        print("README.md: scoreboard regenerated")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--config-dir", type=Path, default=None, help="default: configs/ ($ABLATION_CONFIGS)")
    parser.add_argument("--from", dest="source", type=Path, default=None, metavar="DIR",
                        help="rebuild from a published study's evidence file in DIR (e.g. docs/results/NAME), in place; no store is read")  # fmt: skip
    parser.add_argument("--publish", type=Path, default=None, metavar="DIR",
                        help="export the newest study into DIR/NAME/evidence.json.gz and write its report there from that file")  # fmt: skip
    args = parser.parse_intermixed_args(argv)
    if args.source and args.publish:
        raise ConfigError("--from and --publish exclude each other: publish a study from the store, or rebuild a published one")
    if args.source:
        study = evidence.load(args.source, args.name)
        path = write_report(args.name, config_dir=args.config_dir, out_dir=args.source.resolve().parent, study=study)
        _published(args.source.resolve().parent)
    elif args.publish:
        folder = args.publish / args.name
        evidence.save(collect(args.name), folder)
        path = write_report(args.name, config_dir=args.config_dir, out_dir=args.publish, study=evidence.load(folder, args.name))
        print(f"evidence: {evidence.path_in(folder)}")
        _published(args.publish.resolve())
    else:
        path = write_report(args.name, config_dir=args.config_dir)
    print(path.read_text())
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
