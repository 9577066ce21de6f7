"""The main job on the offline default: the studies whose file says `demo: true` on synthetic shapes:
first_look (two of the paper's choices over 8 seeds), then dropout (its p0.5 runs are first_look's
baseline; its p0 runs train), groups and pooling, whose runs are first_look's (identical configs are
reused, not trained again).

    python -m ablations.demo [--seeds 8] [--parallel 2] [--force] [key=value ...]

Few studies with enough seeds for verdicts, rather than every study with too few: each other
study is one command away (make ablate-NAME). Writes the reports and reports/summary.md,
prints the summary and how to open the MLflow UI.
"""

from __future__ import annotations

import argparse
import sys
import time

from ablations import tracking
from ablations.report import summary as overview
from ablations.spec import available, load_ablation, parse_seeds
from ablations.study.runner import Study
from core import paths
from core.errors import EXIT_INTERRUPTED, run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--seeds", default=None, help="default: each study file's seeds")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--profile", default="demo")
    args = parser.parse_intermixed_args(argv)
    start = time.time()
    seeds = parse_seeds(args.seeds, "SEEDS") if args.seeds else None
    ablations = {n: load_ablation(n) for n in available()}
    names = sorted((n for n, a in ablations.items() if a.demo), key=lambda n: -len(ablations[n].seeds))  # the most seeds first: the others reuse its runs
    others = sorted(set(ablations) - set(names))
    print(f"the demo runs {', '.join(names)}; each of the others is one command away: make ablate-NAME (make ablations lists them: {', '.join(others)})")
    studies = [Study(name, args.profile, args.overrides, seeds, 0, args.parallel, args.force) for name in names]
    for study in studies:  # every input problem surfaces before the first run
        study.preflight()
    failed = []
    for study in studies:
        print(f"\n=== {study.ablation.name}: {study.ablation.description.split('. ')[0]}", flush=True)
        code = study.run()
        if code == EXIT_INTERRUPTED:
            return code  # Ctrl-C stops the demo, not only the study it was in
        if code != 0:
            failed.append(study.ablation.name)
    minutes = (time.time() - start) / 60
    summary = overview.write_summary()
    if summary is not None:  # the comparisons; the paper's claims (shapes data: not comparable) stay in the file
        text, _, board = summary.read_text().partition(overview.CLAIMS_HEADING)
        print(
            "\n"
            + text.rstrip()
            + (f"\n\nThe paper's claims, judged from these studies: {summary}, section '{overview.CLAIMS_HEADING[3:]}'.\n" if board else "\n")
        )
    reports = paths.reports_dir()
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "demo_time.txt").write_text(
        f"{minutes:.1f} minutes wall time for `make demo` ({', '.join(names)}, seeds {seeds or 'as the files say'}, parallel {args.parallel})\n"
    )
    print(f"demo finished in {minutes:.1f} min; reports in {reports}/<ablation>/report.md, summary in {summary}")
    print(f"browse the runs: make ui  (then open http://127.0.0.1:5000; store {tracking.tracking_uri()})")
    if failed:
        print(f"studies with failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
