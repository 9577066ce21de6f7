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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ablations import plots, tracking
from ablations.spec import load_ablation
from ablations.stats import Comparison, Stat, describe, paired, ratio, time_to
from core import paths
from core.errors import ConfigError, run_command

TARGET_TRAIN_ERR = 0.25  # the paper's Figure 1 measure
EPOCH_KEYS = ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "epoch_time_s", "train_img_per_s", "lr")


@dataclass
class RunResult:
    variant: str
    seed: int
    run_id: str
    curves: dict[str, list[float]]  # metric -> value per epoch
    step_err: list[tuple[float, float]] = field(default_factory=list)  # (epochs done, running training error)
    clean_train_err1: float = math.nan  # final weights, eval mode, no augmentation

    def final(self, key: str) -> float:
        return self.curves[key][-1] if self.curves.get(key) else math.nan

    def best(self, key: str) -> float:
        return min(self.curves[key]) if self.curves.get(key) else math.nan

    def epochs_to(self, target: float = TARGET_TRAIN_ERR) -> float:
        """Epochs of training until the training error first reaches `target`: from the
        running error logged every few steps when the run has it, else per epoch."""
        if self.step_err:
            return time_to(self.step_err, target)
        return time_to(list(enumerate(self.curves.get("train_err1", []), start=1)), target)


def read_run(run) -> RunResult:
    tags, run_id = run.data.tags, run.info.run_id
    curves = {key: [v for _, v in tracking.history(run_id, key)] for key in EPOCH_KEYS}
    per_epoch = float(run.data.params.get("steps_per_epoch", "0") or 0)
    step_err = [(step / per_epoch, v) for step, v in tracking.history(run_id, "train_err1_step")] if per_epoch else []
    clean = run.data.metrics.get(tracking.CLEAN_TRAIN_ERR, math.nan)
    return RunResult(tags.get(tracking.VARIANT, "?"), int(tags.get(tracking.SEED, 0)), run_id, curves, step_err, clean)


def collect(name: str, parent_id: str | None = None) -> tuple[list[RunResult], dict]:
    """The FINISHED runs of the ablation's newest study (or of `parent_id`), and the study's facts."""
    parent = tracking.get_run(parent_id) if parent_id else tracking.newest_study(name)
    if parent is None:
        raise ConfigError(f"no '{name}' study in {tracking.tracking_uri()}: run `make ablate-{name}` first")
    runs = [r for r in tracking.study_children(parent) if r.info.status == "FINISHED" and r.data.tags.get("aggregate") != "true"]
    params = parent.data.params
    meta = {
        "parent_id": parent.info.run_id,
        "parent_name": parent.info.run_name,
        "profile": parent.data.tags.get(tracking.PROFILE, ""),
        "variants": params.get("variants", "").split(","),
        "overrides": params.get("overrides", ""),
        "seeds": params.get("seeds", ""),
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
    vs_baseline: Comparison | None = None
    ratio_epochs: Stat | None = None  # epochs to 25%, variant / baseline
    seeds: list[int] = field(default_factory=list)


def analyse(results: list[RunResult], order: list[str], baseline: str) -> list[VariantRow]:
    by_seed = {v: {r.seed: r for r in results if r.variant == v} for v in order}
    base = by_seed.get(baseline, {})
    rows = []
    for v in order:
        rs = list(by_seed[v].values())
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
            epoch_time=describe([float(np.median(r.curves["epoch_time_s"])) if r.curves.get("epoch_time_s") else math.nan for r in rs]),
            seeds=sorted(by_seed[v]),
        )
        if v != baseline and base:
            row.vs_baseline = paired({s: r.final("val_err1") for s, r in by_seed[v].items()}, {s: r.final("val_err1") for s, r in base.items()})
        if base:
            row.ratio_epochs = ratio({s: r.epochs_to() for s, r in by_seed[v].items()}, {s: r.epochs_to() for s, r in base.items()})
        rows.append(row)
    return rows


def verdict(row: VariantRow, baseline: str) -> str:
    c = row.vs_baseline
    if row.variant == baseline:
        return "baseline"
    if c is None:
        return "needs ≥ 2 paired seeds for a test"
    if c.within_noise:
        return f"within noise (p = {c.p_value:.2g})"
    word = "higher" if c.diff.mean > 0 else "lower"
    return f"{abs(c.diff.mean) * 100:.2f} points {word} error than {baseline} (p = {c.p_value:.2g})"


def _fmt_ratio(s: Stat | None) -> str:
    if s is None or s.n == 0 or math.isnan(s.mean):
        return "n/a"
    return f"{s.mean:.2f}x" + (f" [{s.lo:.2f}, {s.hi:.2f}]" if s.n > 1 else "")


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render(name: str, description: str, baseline: str, rows: list[VariantRow], meta: dict, plot_files: list[str], epochs: int) -> str:
    lines = [f"# Ablation: {name}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"Study run `{meta['parent_name']}` ({meta['parent_id']}), profile `{meta['profile'] or 'none'}`, "
        f"store `{tracking.tracking_uri()}`. Errors in %, as mean ± standard deviation over seeds "
        f"[95% confidence interval of the mean]; differences are paired by seed (variant − {baseline}) with a paired t-test.",
        "",
        "| variant | seeds | final val top-1 err | Δ vs baseline [95% CI] | best val top-1 err | final val top-5 err | best val top-5 err | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = "—" if r.variant == baseline else (r.vs_baseline.diff.fmt() if r.vs_baseline else "n/a")
        cells = [r.variant, r.n, r.final_err1.fmt(), delta, r.best_err1.fmt(), r.final_err5.fmt(), r.best_err5.fmt(), verdict(r, baseline)]
        lines.append(_row(cells))
    lines += [
        "",
        "## Training speed and overfitting",
        "",
        f"Epochs of training until the training error first reaches {TARGET_TRAIN_ERR:.0%} (the paper's Figure 1 measure), "
        "read off the running training error logged every few steps and interpolated between readings "
        f"(n/a: not reached in {epochs} epochs), and its ratio to {baseline}'s (geometric mean over paired seeds, 95% interval); "
        "the training error of the last epoch as logged during training (augmented batches, dropout on); "
        "the final weights' training error in eval mode without augmentation (a fixed subset of up to 10,000 training images); "
        "the overfitting gap (final validation error minus the latter); the median time per epoch.",
        "",
        _row(
            [
                "variant",
                "epochs to 25% train err",
                "ratio to baseline",
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
        cells = [r.variant, reached, _fmt_ratio(r.ratio_epochs), r.train_err1.fmt(), r.clean_train_err1.fmt(), r.gap.fmt(), r.epoch_time.fmt(pct=False)]
        lines.append(_row(cells))
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plot_files]
    command = f"make ablate-{name}"
    command += f" PROFILE={meta['profile']}" if meta["profile"] else ""
    command += f" SEEDS={meta['seeds']}" if meta.get("seeds") else ""
    command += f' ARGS="{meta["overrides"]}"' if meta.get("overrides") else ""
    lines += ["", f"Reproduce: `{command}` (add PARALLEL=k to run k at a time); regenerate: `make report-{name}`.", ""]
    return "\n".join(lines)


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


def _summary_entry(name: str, baseline: str, meta: dict, rows: list[VariantRow]) -> dict:
    def delta(r: VariantRow):
        c = r.vs_baseline
        return None if c is None else c.diff.__dict__ | {"p": c.p_value, "within_noise": c.within_noise}

    variants = [
        {
            "variant": r.variant,
            "seeds": r.n,
            "final_val_err1": r.final_err1.__dict__,
            "delta": delta(r),
            "epochs_to_25": r.epochs_to_25.__dict__,
            "ratio_epochs": None if r.ratio_epochs is None else r.ratio_epochs.__dict__,
            "train_err1": r.train_err1.__dict__,
            "clean_train_err1": r.clean_train_err1.__dict__,
            "gap": r.gap.__dict__,
        }
        for r in rows
    ]
    return {"ablation": name, "baseline": baseline, "profile": meta["profile"], "parent_id": meta["parent_id"], "variants": variants}


def write_report(name: str, parent_id: str | None = None, config_dir: Path | None = None, out_dir: Path | None = None) -> Path:
    out_dir = out_dir or paths.reports_dir()
    try:
        ablation = load_ablation(name, config_dir)
        description, baseline, declared = ablation.description, ablation.baseline, list(ablation.variants)
    except ConfigError:  # the file is gone; report what MLflow holds
        description, baseline, declared = "", None, []
    results, meta = collect(name, parent_id)
    if not results:
        raise ConfigError(f"the newest '{name}' study has no finished runs to report")
    order = [v for v in (meta["variants"] or declared) if v] or sorted({r.variant for r in results})
    order += sorted({r.variant for r in results} - set(order))
    baseline = baseline if baseline in order else order[0]
    order = [baseline] + [v for v in order if v != baseline]
    rows = analyse(results, order, baseline)
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    files = _plots(results, rows, order, folder, name)
    epochs = max((len(r.curves.get("train_err1", [])) for r in results), default=0)
    (folder / "report.md").write_text(render(name, description, baseline, rows, meta, files, epochs))
    (folder / "summary.json").write_text(json.dumps(_summary_entry(name, baseline, meta, rows), indent=1, default=float))
    for f in ["report.md", "summary.json", *files]:
        tracking.log_artifact(meta["parent_id"], str(folder / f), "report")
    write_summary(out_dir)
    return folder / "report.md"


def write_summary(out_dir: Path | None = None) -> Path | None:
    """reports/summary.md: every ablation's variants against its baseline in one table."""
    out_dir = out_dir or paths.reports_dir()
    entries = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/summary.json"))]
    if not entries:
        return None
    lines = [
        "# Summary across ablations",
        "",
        "Final validation top-1 error (%), mean ± std over seeds; Δ is the paired difference from each ablation's baseline "
        "with its 95% confidence interval. Regenerated after every study.",
        "",
        "| ablation | variant | seeds | val top-1 err | Δ vs baseline | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries:
        for v in e["variants"]:
            s = Stat(**v["final_val_err1"])
            if v["variant"] == e["baseline"]:
                delta, word = "—", "baseline"
            elif v["delta"] is None:
                delta, word = "n/a", "needs ≥ 2 seeds"
            else:
                d = Stat(**{k: v["delta"][k] for k in ("n", "mean", "std", "lo", "hi")})
                delta = d.fmt()
                word = "within noise" if v["delta"]["within_noise"] else ("worse" if d.mean > 0 else "better")
            lines.append(f"| [{e['ablation']}]({e['ablation']}/report.md) | {v['variant']} | {v['seeds']} | {s.fmt()} | {delta} | {word} |")
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


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
