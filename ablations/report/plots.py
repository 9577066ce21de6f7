"""The report's plots (matplotlib, written to PNG files)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _decorate(ax, title: str, legend: bool = True, grid: dict | None = None) -> None:
    ax.set_title(title)
    ax.grid(alpha=0.3, **(grid or {}))
    if legend:
        ax.legend(fontsize=8)


def _save(plt, fig, ax, path: Path, title: str, legend: bool = True, grid: dict | None = None) -> None:
    _decorate(ax, title, legend, grid)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves(series: dict[str, list[list[float]]], path: Path, ylabel: str, title: str, hline: tuple[float, str] | None = None) -> None:
    """Per variant, a metric against epoch over seeds: the mean line and the min..max band."""
    import matplotlib.ticker

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for variant, runs in series.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        arr = np.array([r[:n] for r in runs]) * 100
        epochs = np.arange(1, n + 1)
        (line,) = ax.plot(epochs, arr.mean(0), label=f"{variant} (n={len(runs)})", lw=2)
        if len(runs) > 1:
            ax.fill_between(epochs, arr.min(0), arr.max(0), color=line.get_color(), alpha=0.2)
    if hline:
        ax.axhline(hline[0] * 100, color="grey", ls="--", lw=1, label=hline[1])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    _save(plt, fig, ax, path, title)


def bars(names: Sequence[str], means: Sequence[float], los: Sequence[float], his: Sequence[float], path: Path, ylabel: str, title: str) -> None:
    """One bar per name (values as fractions, drawn in %), with its 95% interval where it has one (NaN: none)."""
    plt = _pyplot()
    err = [[0 if math.isnan(lo) else (m - lo) * 100 for m, lo in zip(means, los, strict=True)],
           [0 if math.isnan(hi) else (hi - m) * 100 for m, hi in zip(means, his, strict=True)]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 4), dpi=110)
    ax.bar(list(names), [m * 100 for m in means], yerr=err, capsize=6, color="#4C72B0", alpha=0.85)
    ax.set_ylabel(ylabel)
    _save(plt, fig, ax, path, title, legend=False, grid={"axis": "y"})


def effect_curves(curves: Sequence, path: Path, title: str) -> None:
    """Per variant, Δ of the val error (points) against the epoch, its interval as a band where shown."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for c in curves:
        (line,) = ax.plot(c.epochs, [d * 100 for d in c.delta], marker="o", label=f"{c.variant} − {c.reference}")
        ax.fill_between(c.epochs, [x * 100 for x in c.lo], [x * 100 for x in c.hi], color=line.get_color(), alpha=0.15)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("Δ val top-1 error (points)")
    _save(plt, fig, ax, path, title)


def sensitivity(
    series: dict[str, list[tuple[float, float]]], chosen: dict[str, float], path: Path, xlabel: str, ylabel: str, title: str,
    tiebreak: tuple[str, dict[str, list[tuple[float, float]]]] | None = None,
) -> None:  # fmt: skip
    """Per variant, the tuning objective against the tuned value (log x); candidates that
    lost (failed, or never reached the target) are drawn as x at the top; the chosen one ringed.
    With `tiebreak` (its label, and its values per variant), a second panel draws what ranks
    the candidates that never reached the target, so a variant none of whose candidates did
    still shows its curve and its choice."""
    plt = _pyplot()
    panels = [(ylabel, series)] + ([tiebreak] if tiebreak else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), dpi=110, squeeze=False)
    for ax, (label, data) in zip(axes[0], panels, strict=True):
        finite = [y for pts in data.values() for _, y in pts if math.isfinite(y)]
        top = max(finite) * 1.1 if finite else 1.0
        for variant, pts in data.items():
            pts = sorted(pts)
            ok = [(x, y) for x, y in pts if math.isfinite(y)]
            (line,) = ax.plot([x for x, _ in ok], [y for _, y in ok], "o-", label=variant, lw=2)
            lost = [x for x, y in pts if not math.isfinite(y)]
            if lost:
                ax.plot(lost, [top] * len(lost), "x", color=line.get_color(), ms=9)
            best = [y for x, y in pts if x == chosen.get(variant)]
            if best and math.isfinite(best[0]):
                ax.plot([chosen[variant]], best, "o", ms=14, mfc="none", color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        if ax is not axes[0][0]:
            _decorate(ax, label, grid={"which": "both"})
    _save(plt, fig, axes[0][0], path, title, grid={"which": "both"})


def effects(names: Sequence[str], values: Sequence[float], los: Sequence[float], his: Sequence[float], path: Path, title: str) -> None:
    """Horizontal bars of effects (points) with their 95% intervals, largest at the top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(names) + 1.2)), dpi=110)
    y = np.arange(len(names))[::-1]
    err = [[v - lo for v, lo in zip(values, los, strict=True)], [hi - v for v, hi in zip(values, his, strict=True)]]
    colours = ["#C44E52" if not lo <= 0 <= hi else "#8C8C8C" for lo, hi in zip(los, his, strict=True)]
    ax.barh(y, values, xerr=err, capsize=4, color=colours, alpha=0.85)
    ax.set_yticks(y, names, fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("effect on val top-1 error (points), low → high")
    _save(plt, fig, ax, path, title, legend=False, grid={"axis": "x"})


def interaction(means: dict[str, dict[str, float]], a: str, b: str, path: Path, title: str) -> None:
    """The mean response at each level of factor a, one line per level of factor b."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for b_level, by_a in means.items():
        ax.plot(list(by_a), list(by_a.values()), "o-", lw=2, label=f"{b} = {b_level}")
    ax.set_xlabel(a)
    ax.set_ylabel("val top-1 error (%)")
    _save(plt, fig, ax, path, title)
