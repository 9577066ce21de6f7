"""List the ablations in configs/ablations/ with their variants and description."""

from __future__ import annotations

import sys
import textwrap

from ablations.spec import available, load_ablation
from core.errors import ConfigError


def main() -> int:
    status = 0
    for name in available():
        try:
            a = load_ablation(name)
        except ConfigError as err:
            print(f"{name:<15} INVALID: {err}")
            status = 2
            continue
        first = a.description.split(". ")[0].rstrip(".")
        print(f"{name:<15} {first}")
        tuned = "; TUNE=1 tunes " + ", ".join(a.tune.space) if a.tune else ""
        if a.design is not None:
            factors = ", ".join(f"{k} {lo}/{hi}" for k, (lo, hi) in a.design.factors.items())
            what = f"{a.design.describe()} over {factors}"
        else:
            what = f"variants: {', '.join(a.variants)} (baseline {a.baseline})"
        line = f"{what}; profile {a.profile}; seeds {len(a.seeds)}{tuned}; make ablate-{name}"
        print(textwrap.indent(line, " " * 16))
    return status


if __name__ == "__main__":
    sys.exit(main())
