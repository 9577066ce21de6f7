"""Where to look in the MLflow UI: the clicks from its home page to a study's runs, and
each ablation's newest study (its view's name, and a link that opens it directly).

    python -m ablations.tracking.browse     # make ui prints this, then starts the UI

The view shows the study's runs grouped by variant (each group's mean over seeds; in
Chart view, which starts with the errors, mean curves with a min-max band), with the
variant, seed and error columns. docs/mlflow.md shows each step.
"""

from __future__ import annotations

import sys

from ablations import tracking

S, V = tracking.SWITCH, tracking.VIEWS
STEPS = (  # after "open <the UI's address>"; tests/test_browser.py clicks the first quoted label of steps 2 and 4
    f'click "{S}" at the top left (the "GenAI | {S}" switch; a new browser starts in GenAI, then remembers)',
    'click the ablation\'s experiment, e.g. "activation", under "Recent Experiments" (all of them: "Experiments")',
    f'click "{V}" at the top right, then the study\'s view (named below; the newest first)',
    "for the curves: Chart view, the second button above the table (the errors come first)",
)


def main() -> int:
    tracking.configure()
    c = tracking.client()
    experiments = [e for e in tracking.retry(c.search_experiments) if e.name not in ("Default", "train", "bench", "gpu-check")]
    print(f"MLflow UI on {tracking.ui_url()} over {tracking.tracking_uri()}")
    print("A study's runs grouped by variant, in your browser:")
    for i, step in enumerate((f"open {tracking.ui_url()}", *STEPS), 1):
        print(f"  {i}. {step}")
    found = False
    for exp in sorted(experiments, key=lambda e: e.name):
        parent = tracking.newest_study(exp.name)
        view = exp.tags.get(tracking.VIEW + parent.info.run_id) if parent is not None else None
        if view is None:
            continue
        if not found:
            print("Each ablation's newest study: its view, and a link straight to it")
            found = True
        print(f'  {exp.name:<20} "{tracking.view_name(view)}"  {tracking.study_link(exp.experiment_id, parent.info.run_id)}')
    if not found:
        print("  no study yet: make demo, or make ablate-<name>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
