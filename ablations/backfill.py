"""The clean training error of runs trained before the runs measured it themselves.

    python -m ablations.backfill NAME     # the newest study of that ablation

New runs log `train_clean_err1` as they end (lightning_modules.callbacks.CleanTrainError).
For a study's FINISHED runs without it, this loads each run's final weights (its
checkpoint on disk or in MLflow; a reused run's source), evaluates them as the
callback does, and logs the metric at the run's last epoch. `make report-NAME`
then shows the overfitting gap for them too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ablations import assemble, tracking
from ablations.config import build_config
from core import paths
from core.config import read_yaml
from core.errors import ConfigError, run_command


def clean_train_error(cfg_path: Path, ckpt_path: Path) -> float:
    import torch

    from lightning_modules.callbacks import CLEAN_TRAIN_IMAGES, eval_error_counts

    cfg = build_config(read_yaml(cfg_path))
    dm = assemble.datamodule(cfg)
    dm.setup("validate")
    module = assemble.module(cfg, dm)
    module.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"])
    module.to("cuda" if torch.cuda.is_available() else "cpu")
    wrong, n = eval_error_counts(module, dm.clean_train_loader(CLEAN_TRAIN_IMAGES)).tolist()
    return wrong / n


def _checkpoint(run_id: str, tmp: Path) -> Path | None:
    local = paths.checkpoint(run_id)
    if local.exists():
        return local
    c = tracking.client()
    if "checkpoints/last.ckpt" not in {a.path for a in c.list_artifacts(run_id, "checkpoints")}:
        return None
    return Path(c.download_artifacts(run_id, "checkpoints/last.ckpt", str(tmp)))


def backfill(runs: list, say: Callable[[str], None] = print) -> dict[str, float]:
    """Logs train_clean_err1 on each FINISHED run that lacks it; returns run id -> value
    for the runs it measured. A run whose weights or data cannot be found is skipped
    with a message."""
    done: dict[str, float] = {}
    by_source: dict[str, float] = {}
    for run in runs:
        run_id = run.info.run_id
        if tracking.CLEAN_TRAIN_ERR in run.data.metrics or run.info.status != "FINISHED":
            continue
        source = run.data.tags.get(tracking.REUSED_FROM, run_id)
        if source not in by_source:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    ckpt = _checkpoint(source, Path(tmp))
                    if ckpt is None:
                        say(f"no checkpoint for run {source}; {run_id} skipped")
                        continue
                    cfg_path = Path(tracking.client().download_artifacts(run_id, "config.yaml", tmp))
                    by_source[source] = clean_train_error(cfg_path, ckpt)
                except Exception as err:  # data moved, artifact missing: say so, go on
                    say(f"run {run_id} skipped: {type(err).__name__}: {err}")
                    continue
        epochs = int(run.data.params.get("trainer.max_epochs", 1))
        tracking.retry(tracking.client().log_metric, run_id, tracking.CLEAN_TRAIN_ERR, by_source[source], step=epochs - 1)
        done[run_id] = by_source[source]
        say(f"{run.info.run_name}: {tracking.CLEAN_TRAIN_ERR} = {by_source[source]:.4f}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    args = parser.parse_intermixed_args(argv)
    tracking.configure()
    parent = tracking.newest_study(args.name)
    if parent is None:
        raise ConfigError(f"no '{args.name}' study in {tracking.tracking_uri()}")
    done = backfill(tracking.study_children(parent))
    print(f"{len(done)} run(s) measured; `make report-{args.name}` to see them")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
