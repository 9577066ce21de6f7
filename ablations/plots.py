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
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def bars(names: Sequence[str], means: Sequence[float], los: Sequence[float], path: Path, ylabel: str, title: str) -> None:
    """One bar per name (values as fractions, drawn in %), with its 95% interval."""
    plt = _pyplot()
    err = [[0 if math.isnan(lo) else (m - lo) * 100 for m, lo in zip(means, los, strict=True)]] * 2
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 4), dpi=110)
    ax.bar(list(names), [m * 100 for m in means], yerr=err, capsize=6, color="#4C72B0", alpha=0.85)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
