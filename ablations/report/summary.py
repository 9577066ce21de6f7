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

from ablations.analysis.family import adjust
from ablations.analysis.stats import Stat
from ablations.analysis.verdicts import Comparison, Estimate, Verdict, compare
from ablations.report import render as render_md
from core import paths


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def _comparisons(entries: list[dict]) -> tuple[list[Comparison], dict[tuple, list[str]]]:
    """Each distinct comparison of the one-at-a-time studies once (the same two configurations by
    config identity, on the same metric), rebuilt from summary.json, and where each appears."""
    found: dict[tuple, Comparison] = {}
    where: dict[tuple, list[str]] = {}
    for e in [e for e in entries if not e.get("factorial")]:
        hashes = {v["variant"]: v.get("variant_hash", "") for v in e.get("variants", [])}
        for v in e.get("variants", []):
            c = v.get("comparison")
            if not c or c["verdict"] == Verdict.NOT_MEASURED.label:
                continue
            mine, ref = hashes.get(c["variant"]), hashes.get(c["reference"])
            key = (c["metric"], mine, ref) if mine and ref else (c["metric"], e["ablation"], c["variant"], c["reference"])
            where.setdefault(key, []).append(f"{e['ablation']}/{c['variant']}")
            if key not in found or c["n"] > found[key].n:  # the study with the most seeds speaks for it
                fit = Estimate(c["estimate"], c["se"], c["df"])
                found[key] = compare(c["variant"], c["reference"], fit, n=c["n"], delta=c["delta"], method=c["method"], sd=c["sd"],
                                     per_seed=tuple(tuple(x) for x in c["per_seed"]), study=e["ablation"], metric=c["metric"])  # fmt: skip
    keys = list(found)
    return [c for c in adjust([found[k] for k in keys])], {found[k].key: where[k] for k in keys}


def _one_at_a_time(entries: list[dict], profile: str | None, key: str, low: str, high: str) -> list[tuple[str, Stat | None, str | None]]:
    """(ablation/variant, its Δ turned to low -> high, its verdict) for each variant of a study of
    this profile that changes only `key` between these values."""
    found = []
    for e in [e for e in entries if e.get("profile") == profile]:
        for v in e.get("variants", []):
            change = v.get("changes", {})
            c = v.get("comparison")
            if set(change) != {key} or not c or c["metric"] != "val_err1":
                continue
            ref, val = change[key]
            d = Stat(c["n"], c["estimate"], c["sd"], c["lo"], c["hi"])
            if _same(ref, low) and _same(val, high):
                found.append((f"{e['ablation']}/{v['variant']}", d, c["verdict"]))
            elif _same(ref, high) and _same(val, low):
                found.append((f"{e['ablation']}/{v['variant']}", Stat(d.n, -d.mean, d.std, -d.hi, -d.lo), c["verdict"]))
    return found


def write_summary(out_dir: Path | None = None) -> Path | None:
    out_dir = out_dir or paths.reports_dir()
    entries = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/summary.json"))]
    if not entries:
        return None
    comparisons, where = _comparisons(entries)
    lines = [
        "# Summary across ablations",
        "",
        "Each distinct comparison (the same two configurations, by config identity, on the same metric) once, however many "
        f"studies made it, all {len(comparisons)} tested as one family (Holm; each interval at the level Holm tests it at), so a "
        "verdict here can be more cautious than in its study's report, which corrects over that study's comparisons alone. "
        "Δ is variant − reference in points of error (a ratio for times to a target), with per-seed differences where no "
        "interval is shown. Regenerated after every study.",
    ]
    rows = []
    for c in comparisons:
        seen = where[c.key]
        link = f"[{c.study}]({c.study}/report.md)"
        others = [w for w in seen if w != f"{c.study}/{c.variant}"]
        also = f" (also {', '.join(others)})" if others else ""
        rows.append(f"| {link} | {c.variant}{also} | {c.reference} | {c.n} | {render_md.effect(c)} | {render_md.verdict(c)} |")
    if rows:
        lines += ["", "| study | variant | reference | seeds | Δ | verdict |", "|---|---|---|---|---|---|", *rows]
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
            verdict = eff.get("verdict", "n/a")
            others = _one_at_a_time(entries, e.get("profile"), key, low, high) or [(f"not run with profile {e.get('profile')} here", None, None)]
            for where, d, noise in others:
                if d is None:
                    lines.append(f"| {key}: {low} → {high} | {mine} | {verdict} | {where} | | | |")
                    continue
                overlap = d.lo * 100 <= eff["hi"] and eff["lo"] <= d.hi * 100
                shown = f"{d.mean * 100:+.2f} [{d.lo * 100:+.2f}, {d.hi * 100:+.2f}]"
                lines.append(f"| {key}: {low} → {high} | {mine} | {verdict} | {where} | {shown} | {noise} | "
                             f"{'yes' if overlap else 'no: the intervals do not overlap'} |")  # fmt: skip
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
