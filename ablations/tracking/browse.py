"""Where to look in the MLflow UI: each ablation's newest study, as a link.

    python -m ablations.tracking.browse     # make ui prints this, then starts the UI

A link opens the study's runs in the model-training view, grouped by variant (each
group's mean over seeds; in Chart view, mean curves with a min-max band), with the
variant, seed and error columns.
"""

from __future__ import annotations

import sys

from ablations import tracking


def main() -> int:
    tracking.configure()
    c = tracking.client()
    experiments = [e for e in tracking.retry(c.search_experiments) if e.name not in ("Default", "train", "bench", "gpu-check")]
    print(f"MLflow UI on {tracking.ui_url()} over {tracking.tracking_uri()}")
    found = False
    for exp in sorted(experiments, key=lambda e: e.name):
        parent = tracking.newest_study(exp.name)
        if parent is None or tracking.VIEW + parent.info.run_id not in exp.tags:
            continue
        found = True
        print(f"  {exp.name:<20} {tracking.study_link(exp.experiment_id, parent.info.run_id)}")
    if not found:
        print("  no study yet: make demo, or make ablate-<name>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
