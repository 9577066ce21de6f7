"""One-off: give a store's runs the identity of today's configs.

    python -m ablations.study.migrate [--dry-run]      # make migrate

A run's identity (its `config_hash` tag, which skip and reuse look up) counts only
the keys that are not at their neutral value (`ablations.train.config.identity`). Stores
written before that rule counted every key, defaults included, so their runs are not
found by a study of today's code. This recomputes each run's hash from the params it
logged, keeps the old one as `config_hash_v1`, and changes nothing else. Running it
twice changes nothing the second time. An image folder's root is resolved against the
current directory, as a study started here would. Runs of that time logged the resolved
image size and class count under data.image_size and model.num_classes (today: as
configured, the resolved ones under resolved.*): an image size equal to the
architecture's native size is taken as null, and so is the class count (a run whose
class count was set by hand to differ from its dataset's is then found as if it were not).
"""

from __future__ import annotations

import argparse
import sys

from ablations import tracking
from ablations.train.config import identity, identity_hash
from core.errors import run_command
from lightning_modules.networks import ARCHS, input_size

OLD = "config_hash_v1"


def configured(params: dict[str, str]) -> dict[str, str]:
    """A run's params as configured: those of runs logged before resolved.* hold the resolved
    image size and class count in the config's own keys (see the module's docstring)."""
    if "resolved.image_size" in params:
        return params
    out = dict(params)
    arch = params.get("model.arch", "")
    if arch in ARCHS and params.get("data.image_size") == str(input_size(arch)):
        out["data.image_size"] = "None"
    if "model.num_classes" in out:
        out["model.num_classes"] = "None"
    return out


def migrate(dry_run: bool = False) -> tuple[int, int]:
    """(runs whose hash changed, runs looked at)."""
    ids = [e.experiment_id for e in tracking.retry(tracking.client().search_experiments)]
    runs = tracking.search(ids, f"tags.{tracking.CONFIG_HASH} != ''", max_results=50000) if ids else []
    changed = 0
    for run in runs:
        old, new = run.data.tags[tracking.CONFIG_HASH], identity_hash(identity(configured(run.data.params)))
        if old != new:
            changed += 1
            if not dry_run:
                tracking.set_tags(run.info.run_id, {tracking.CONFIG_HASH: new} | ({} if OLD in run.data.tags else {OLD: old}))
    return changed, len(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="count, change nothing")
    args = parser.parse_args(argv)
    tracking.configure()
    changed, seen = migrate(args.dry_run)
    verb = "would change" if args.dry_run else "changed"
    print(f"{tracking.tracking_uri()}: {verb} the config hash of {changed} of {seen} runs")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
