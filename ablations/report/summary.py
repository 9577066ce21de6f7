"""reports/summary.md: every ablation's result in one place, regenerated after every study.

One-at-a-time ablations list each variant against its baseline; factorial studies
list their main effects, each beside the one-at-a-time results for the same toggle
(a variant that changes only that key between the same two values, in a study of
the same profile: a demo-scale effect says nothing of a CIFAR-10 one), so a reader
sees where the two designs agree and where an interaction makes them differ.
"""

from __future__ import annotations

import json
from pathlib import Path

from ablations.analysis.stats import Stat
from core import paths


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def _one_at_a_time(entries: list[dict], profile: str | None, key: str, low: str, high: str) -> list[tuple[str, Stat | None, bool | None]]:
    """(ablation/variant, its Δ turned to low -> high, within noise) for each variant of a study of
    this profile that changes only `key` between these values."""
    found = []
    for e in [e for e in entries if e.get("profile") == profile]:
        for v in e.get("variants", []):
            change = v.get("changes", {})
            if set(change) != {key} or v["delta"] is None:
                continue
            ref, val = change[key]
            d = Stat(**{k: v["delta"][k] for k in ("n", "mean", "std", "lo", "hi")})
            if _same(ref, low) and _same(val, high):
                found.append((f"{e['ablation']}/{v['variant']}", d, v["delta"]["within_noise"]))
            elif _same(ref, high) and _same(val, low):
                found.append((f"{e['ablation']}/{v['variant']}", Stat(d.n, -d.mean, d.std, -d.hi, -d.lo), v["delta"]["within_noise"]))
    return found


def write_summary(out_dir: Path | None = None) -> Path | None:
    out_dir = out_dir or paths.reports_dir()
    entries = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/summary.json"))]
    if not entries:
        return None
    lines = [
        "# Summary across ablations",
        "",
        "Final validation top-1 error (%), mean ± std over seeds; Δ is the paired difference from each ablation's baseline "
        "with its 95% confidence interval. Regenerated after every study.",
    ]
    rows = []
    for e in [e for e in entries if not e.get("factorial")]:
        for v in e.get("variants", []):
            s = Stat(**v["final_val_err1"])
            if v["delta"] is None:
                delta, word = ("—", "baseline") if v["variant"] == e["baseline"] else ("n/a", "needs ≥ 2 seeds")
            else:
                d = Stat(**{k: v["delta"][k] for k in ("n", "mean", "std", "lo", "hi")})
                delta = d.fmt()
                word = "within noise" if v["delta"]["within_noise"] else ("worse" if d.mean > 0 else "better")
            rows.append(f"| [{e['ablation']}]({e['ablation']}/report.md) | {v['variant']} | {v['seeds']} | {s.fmt()} | {delta} | {word} |")
    if rows:
        lines += ["", "| ablation | variant | seeds | val top-1 err | Δ vs baseline | verdict |", "|---|---|---|---|---|---|", *rows]
    for e in [e for e in entries if e.get("factorial")]:
        lines += [
            "",
            f"## [{e['ablation']}]({e['ablation']}/report.md): main effects beside one-at-a-time results",
            "",
            f"{e['design']}. Effect: low → high level, in points of val top-1 error, averaged over the other factors; "
            "one-at-a-time: the same change made alone, from that study's baseline.",
            "",
            "| factor: low → high | factorial effect [95% CI] | verdict | one-at-a-time | Δ [95% CI] | verdict | agree? |",
            "|---|---|---|---|---|---|---|",
        ]
        for eff in [x for x in e["effects"] if len(x["term"]) == 1]:
            (key,), ((low, high),) = eff["term"], eff["levels"]
            mine = f"{eff['effect']:+.2f} [{eff['lo']:+.2f}, {eff['hi']:+.2f}]"
            verdict = "real" if eff["real"] else "within noise"
            others = _one_at_a_time(entries, e.get("profile"), key, low, high) or [(f"not run with profile {e.get('profile')} here", None, None)]
            for where, d, noise in others:
                if d is None:
                    lines.append(f"| {key}: {low} → {high} | {mine} | {verdict} | {where} | | | |")
                    continue
                overlap = d.lo * 100 <= eff["hi"] and eff["lo"] <= d.hi * 100
                shown = f"{d.mean * 100:+.2f} [{d.lo * 100:+.2f}, {d.hi * 100:+.2f}]"
                lines.append(f"| {key}: {low} → {high} | {mine} | {verdict} | {where} | {shown} | {'within noise' if noise else 'real'} | "
                             f"{'yes' if overlap else 'no: the intervals do not overlap'} |")  # fmt: skip
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
