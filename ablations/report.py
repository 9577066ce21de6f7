"""The comparison report of a study: statistics over seeds, plots, a verdict per variant.

    python -m ablations.report NAME     # the newest study of that ablation

Writes reports/NAME/report.md with PNG plots and logs them to the study's parent
run; then reports/summary.md across every ablation that has a report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ablations import tracking
from ablations.config import CONFIG_DIR, ROOT, ConfigError
from ablations.evaluate import TRAIN_EVAL_IMAGES, fill_in

REPORT_DIR = Path(os.environ.get("ABLATION_REPORTS") or ROOT / "reports")
TARGET_TRAIN_ERR = 0.25  # the paper's Figure 1 measure


@dataclass
class RunResult:
    variant: str
    seed: int
    run_id: str
    curves: dict[str, list[float]]  # metric -> value per epoch
    clean_train_err1: float = math.nan  # final weights, eval mode, no augmentation (ablations/evaluate.py)

    def final(self, key: str) -> float:
        return self.curves[key][-1] if self.curves.get(key) else math.nan

    def best(self, key: str) -> float:
        return min(self.curves[key]) if self.curves.get(key) else math.nan

    def epochs_to(self, target: float = TARGET_TRAIN_ERR) -> float:
        for epoch, err in enumerate(self.curves.get("train_err1", []), start=1):
            if err <= target:
                return float(epoch)
        return math.nan


@dataclass
class Stat:
    n: int
    mean: float
    std: float
    lo: float
    hi: float

    def fmt(self, pct: bool = True, digits: int = 2) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        k = 100 if pct else 1
        s = f"{self.mean * k:.{digits}f}"
        if self.n > 1:
            s += f" ± {self.std * k:.{digits}f} [{self.lo * k:.{digits}f}, {self.hi * k:.{digits}f}]"
        return s


def describe(values: list[float]) -> Stat:
    """Mean, sample std and the 95% t confidence interval of the mean."""
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return Stat(0, math.nan, math.nan, math.nan, math.nan)
    if len(v) == 1:
        return Stat(1, float(v[0]), math.nan, math.nan, math.nan)
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(v) - 1)) * std / math.sqrt(len(v))
    return Stat(len(v), mean, std, mean - half, mean + half)


@dataclass
class Comparison:
    diff: Stat
    p_value: float
    within_noise: bool


def paired(variant: dict[int, float], baseline: dict[int, float]) -> Optional[Comparison]:
    """Variant minus baseline over the seeds both have, with a paired t-test."""
    from scipy import stats

    seeds = sorted(s for s in set(variant) & set(baseline) if not math.isnan(variant[s]) and not math.isnan(baseline[s]))
    if len(seeds) < 2:
        return None
    a = np.array([variant[s] for s in seeds])
    b = np.array([baseline[s] for s in seeds])
    d = describe(list(a - b))
    p = float(stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
    if math.isnan(p):
        p = 1.0
    return Comparison(d, p, within_noise=p >= 0.05 or d.lo <= 0 <= d.hi)


# ------------------------------------------------------------------ reading


def _curves(client, run_id: str) -> dict[str, list[float]]:
    out = {}
    for key in ("train_loss", "train_err1", "val_loss", "val_err1", "val_err5", "epoch_time_s", "train_img_per_s", "lr"):
        by_step: dict[int, float] = {}
        for m in client.get_metric_history(run_id, key):
            by_step[m.step] = m.value  # a resumed epoch logged twice: the last value wins
        out[key] = [by_step[s] for s in sorted(by_step)]
    return out


def newest_study(client, experiment_id: str):
    runs = client.search_runs([experiment_id], filter_string="tags.study = 'true'", order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def collect(name: str, parent_id: Optional[str] = None) -> tuple[list[RunResult], dict]:
    """The study's FINISHED runs: those listed on its parent run (children and
    runs it skipped because they had finished before)."""
    client = tracking.client()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise ConfigError(f"no MLflow experiment '{name}' in {tracking.tracking_uri()}: run `make ablate-{name}` first")
    parent = client.get_run(parent_id) if parent_id else newest_study(client, exp.experiment_id)
    if parent is None:
        raise ConfigError(f"experiment '{name}' has no study yet: run `make ablate-{name}` first")
    ids = [i for i in parent.data.tags.get("child_runs", "").split(",") if i]
    if not ids:  # a study still in progress or interrupted: its own children
        ids = [r.info.run_id for r in client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)]
    runs = [r for r in (client.get_run(i) for i in ids) if r.info.status == "FINISHED"]
    clean = fill_in(client, runs)
    results = []
    for run in runs:
        tags, run_id = run.data.tags, run.info.run_id
        results.append(RunResult(tags.get("variant", "?"), int(tags.get("seed", 0)), run_id, _curves(client, run_id), clean.get(run_id, math.nan)))
    meta = {"parent_id": parent.info.run_id, "parent_name": parent.info.run_name, "profile": parent.data.tags.get("profile", ""), "variants": parent.data.params.get("variants", "").split(","), "overrides": parent.data.params.get("overrides", ""), "seeds": parent.data.params.get("seeds", "")}
    return results, meta


# ------------------------------------------------------------------ plots


def _plot_curves(results: list[RunResult], order: list[str], path: Path, key: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for variant in order:
        curves = [r.curves.get(key, []) for r in results if r.variant == variant]
        curves = [c for c in curves if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        arr = np.array([c[:n] for c in curves]) * 100
        epochs = np.arange(1, n + 1)
        mean = arr.mean(0)
        (line,) = ax.plot(epochs, mean, label=f"{variant} (n={len(curves)})", lw=2)
        if len(curves) > 1:
            ax.fill_between(epochs, arr.min(0), arr.max(0), color=line.get_color(), alpha=0.2)
    if key == "train_err1":
        ax.axhline(TARGET_TRAIN_ERR * 100, color="grey", ls="--", lw=1, label="25% (Figure 1)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{key.replace('_err1', ' top-1 error')} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_bars(stats_by_variant: dict[str, Stat], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v for v, s in stats_by_variant.items() if s.n]
    means = [stats_by_variant[v].mean * 100 for v in names]
    errs = [[0 if math.isnan(stats_by_variant[v].lo) else (stats_by_variant[v].mean - stats_by_variant[v].lo) * 100 for v in names]] * 2
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 4), dpi=110)
    ax.bar(names, means, yerr=errs, capsize=6, color="#4C72B0", alpha=0.85)
    ax.set_ylabel("final validation top-1 error (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------ report


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
    vs_baseline: Optional[Comparison] = None
    ratio_epochs: float = math.nan
    seeds: list[int] = field(default_factory=list)


def analyse(results: list[RunResult], order: list[str], baseline: str) -> list[VariantRow]:
    rows = []
    by_seed = {v: {r.seed: r for r in results if r.variant == v} for v in order}
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
        if v != baseline and baseline in by_seed:
            row.vs_baseline = paired({s: r.final("val_err1") for s, r in by_seed[v].items()}, {s: r.final("val_err1") for s, r in by_seed[baseline].items()})
        rows.append(row)
    base = next((r for r in rows if r.variant == baseline), None)
    for row in rows:
        if base and base.epochs_to_25.n and row.epochs_to_25.n:
            row.ratio_epochs = row.epochs_to_25.mean / base.epochs_to_25.mean
    return rows


def _verdict(row: VariantRow, baseline: str) -> str:
    c = row.vs_baseline
    if row.variant == baseline:
        return "baseline"
    if c is None:
        return "needs ≥ 2 paired seeds for a test"
    word = "higher" if c.diff.mean > 0 else "lower"
    if c.within_noise:
        return f"within noise (p = {c.p_value:.2g})"
    return f"{abs(c.diff.mean) * 100:.2f} points {word} error than {baseline} (p = {c.p_value:.2g})"


def render(name: str, description: str, baseline: str, rows: list[VariantRow], meta: dict, plots: list[str], epochs: int) -> str:
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
        c = r.vs_baseline
        delta = "—" if r.variant == baseline else (c.diff.fmt() if c else "n/a")
        lines.append(
            f"| {r.variant} | {r.n} | {r.final_err1.fmt()} | {delta} | {r.best_err1.fmt()} | {r.final_err5.fmt()} | {r.best_err5.fmt()} | {_verdict(r, baseline)} |"
        )
    lines += [
        "",
        "## Training speed and overfitting",
        "",
        f"Epochs to reach {TARGET_TRAIN_ERR:.0%} training error (the paper's Figure 1 measure; n/a: not reached in {epochs} epochs), "
        "the training error of the last epoch as logged during training (augmented batches, dropout on), "
        f"the final weights' training error in eval mode without augmentation ({TRAIN_EVAL_IMAGES:,} fixed training images, or all if fewer), "
        "the overfitting gap (final validation error minus the latter), and the median time per epoch.",
        "",
        "| variant | epochs to 25% train err | ratio to baseline | train top-1 err, last epoch | train top-1 err, eval mode | val − train gap | time per epoch (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reached = f"{r.epochs_to_25.fmt(pct=False, digits=1)} ({r.epochs_to_25.n}/{r.n} seeds)"
        ratio = "n/a" if math.isnan(r.ratio_epochs) else f"{r.ratio_epochs:.2f}x"
        lines.append(f"| {r.variant} | {reached} | {ratio} | {r.train_err1.fmt()} | {r.clean_train_err1.fmt()} | {r.gap.fmt()} | {r.epoch_time.fmt(pct=False)} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    command = f"make ablate-{name}"
    command += f" PROFILE={meta['profile']}" if meta["profile"] else ""
    command += f" SEEDS={meta['seeds']}" if meta.get("seeds") else ""
    command += f' ARGS="{meta["overrides"]}"' if meta.get("overrides") else ""
    lines += ["", f"Reproduce: `{command}` (add PARALLEL=k to run k at a time); regenerate: `make report-{name}`.", ""]
    return "\n".join(lines)


def write_report(name: str, parent_id: Optional[str] = None, config_dir: Path = CONFIG_DIR, out_dir: Optional[Path] = None) -> Path:
    from ablations.spec import load_ablation

    out_dir = out_dir or REPORT_DIR

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
    plots = ["train_error.png", "val_error_curves.png", "val_error.png"]
    _plot_curves(results, order, folder / plots[0], "train_err1", f"{name}: training error (mean, band = min..max over seeds)")
    _plot_curves(results, order, folder / plots[1], "val_err1", f"{name}: validation error")
    _plot_bars({r.variant: r.final_err1 for r in rows}, folder / plots[2], f"{name}: final validation error (95% CI)")
    epochs = max((len(r.curves.get("train_err1", [])) for r in results), default=0)
    (folder / "report.md").write_text(render(name, description, baseline, rows, meta, plots, epochs))
    summary = {
        "ablation": name,
        "baseline": baseline,
        "profile": meta["profile"],
        "parent_id": meta["parent_id"],
        "variants": [
            {
                "variant": r.variant,
                "seeds": r.n,
                "final_val_err1": r.final_err1.__dict__,
                "delta": None if r.vs_baseline is None else r.vs_baseline.diff.__dict__ | {"p": r.vs_baseline.p_value, "within_noise": r.vs_baseline.within_noise},
                "epochs_to_25": r.epochs_to_25.__dict__,
                "ratio_epochs": r.ratio_epochs,
                "train_err1": r.train_err1.__dict__,
                "clean_train_err1": r.clean_train_err1.__dict__,
                "gap": r.gap.__dict__,
            }
            for r in rows
        ],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    client = tracking.client()
    for f in ["report.md", "summary.json", *plots]:
        tracking.retry(client.log_artifact, meta["parent_id"], str(folder / f), "report")
    write_summary(out_dir)
    return folder / "report.md"


def write_summary(out_dir: Optional[Path] = None) -> Optional[Path]:
    """reports/summary.md: every ablation's variants against its baseline in one table."""
    out_dir = out_dir or REPORT_DIR
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
                delta, verdict = "—", "baseline"
            elif v["delta"] is None:
                delta, verdict = "n/a", "needs ≥ 2 seeds"
            else:
                d = Stat(**{k: v["delta"][k] for k in ("n", "mean", "std", "lo", "hi")})
                delta = d.fmt()
                verdict = "within noise" if v["delta"]["within_noise"] else ("worse" if d.mean > 0 else "better")
            lines.append(f"| [{e['ablation']}]({e['ablation']}/report.md) | {v['variant']} | {v['seeds']} | {s.fmt()} | {delta} | {verdict} |")
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR)
    args = parser.parse_intermixed_args(argv)
    try:
        path = write_report(args.name, config_dir=args.config_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
