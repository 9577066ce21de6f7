"""End-of-run measurements, made afterwards from a run's final weights.

    python -m ablations.train.backfill NAME                 # the newest study of that ablation
    python -m ablations.train.backfill NAME --precise-bn

New runs log `train_clean_err1` as they end (lightning_modules.callbacks.CleanTrainError).
For a study's FINISHED runs without it, this loads each run's final weights (its
checkpoint on disk or in MLflow; a reused run's source), evaluates them as the
callback does, and logs the metric at the run's last epoch.

--precise-bn: BatchNorm's running statistics are an average over the last hundred or
so steps with momentum 0.01 (Keras's 0.99, the tutorial's); with few steps per epoch
they lag weights that have since moved, and eval-mode errors suffer. This recomputes
them for the final weights, over one pass of the training images the clean error uses
(PyTorch's `swa_utils.update_bn`: train mode, a plain average over the pass), then logs
the validation error (`val_err1_precise_bn`, Lightning's validation loop as in training)
and the clean training error (`train_clean_err1_precise_bn`). A network without
BatchNorm is evaluated unchanged, so every variant of a study has the value.
`make report-NAME` then shows them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ablations import tracking
from ablations.train import assemble
from ablations.train.config import saved_config
from core import paths
from core.config import read_yaml
from core.errors import ConfigError, run_command


def _restore(cfg_path: Path, ckpt_path: Path):
    """The run's datamodule (set up) and module with its final weights."""
    import torch

    cfg = saved_config(read_yaml(cfg_path))  # keys the run predates at their neutral values
    dm = assemble.datamodule(cfg)
    dm.setup("validate")
    module = assemble.module(cfg, dm)
    module.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"])
    return dm, module.to("cuda" if torch.cuda.is_available() else "cpu")


def _clean_train_error(dm, module) -> float:
    from lightning_modules.callbacks import CLEAN_TRAIN_IMAGES, eval_error_counts

    wrong, n = eval_error_counts(module, dm.clean_train_loader(CLEAN_TRAIN_IMAGES)).tolist()
    return wrong / n


def clean_train_error(cfg_path: Path, ckpt_path: Path) -> dict[str, float]:
    return {tracking.CLEAN_TRAIN_ERR: _clean_train_error(*_restore(cfg_path, ckpt_path))}


def recompute_bn(dm, module) -> None:
    """BatchNorm's running statistics, reset and recomputed as plain averages over one pass
    of the clean training images (prepared as for evaluation), in train mode; a no-op
    without BatchNorm. Dropout is on in train mode, and where BatchNorm follows it (the
    tutorial's dense layers) its masks move the statistics: they are seeded, so the same
    weights always give the same values."""
    import torch
    from torch.optim.swa_utils import update_bn

    from lightning_modules.callbacks import CLEAN_TRAIN_IMAGES

    batches = ((module.prepare(images.to(module.device), training=False),) for images, _ in dm.clean_train_loader(CLEAN_TRAIN_IMAGES))
    with torch.random.fork_rng(devices=[module.device] if module.device.type == "cuda" else []):
        torch.manual_seed(0)
        update_bn(batches, module)


def precise_bn_errors(cfg_path: Path, ckpt_path: Path) -> dict[str, float]:
    import lightning as L

    dm, module = _restore(cfg_path, ckpt_path)
    recompute_bn(dm, module)
    trainer = L.Trainer(accelerator=module.device.type, devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, datamodule=dm, verbose=False)
    return {tracking.PRECISE_BN_VAL_ERR: float(metrics["val_err1"]), tracking.PRECISE_BN_TRAIN_ERR: _clean_train_error(dm, module)}


def _checkpoint(run_id: str, tmp: Path) -> Path | None:
    local = paths.checkpoint(run_id)
    if local.exists():
        return local
    c = tracking.client()
    if "checkpoints/last.ckpt" not in {a.path for a in c.list_artifacts(run_id, "checkpoints")}:
        return None
    return Path(c.download_artifacts(run_id, "checkpoints/last.ckpt", str(tmp)))


def backfill(runs: list, say: Callable[[str], None] = print, precise_bn: bool = False) -> dict[str, dict[str, float]]:
    """Logs the measurement (the clean training error, or with `precise_bn` the errors with
    BatchNorm's statistics recomputed) on each FINISHED run that lacks it; returns run id ->
    {metric: value} for the runs it measured. A run whose weights or data cannot be found
    is skipped with a message."""
    measure = precise_bn_errors if precise_bn else clean_train_error
    wanted = (tracking.PRECISE_BN_VAL_ERR, tracking.PRECISE_BN_TRAIN_ERR) if precise_bn else (tracking.CLEAN_TRAIN_ERR,)
    done: dict[str, dict[str, float]] = {}
    by_source: dict[str, dict[str, float]] = {}
    for run in runs:
        run_id = run.info.run_id
        if all(k in run.data.metrics for k in wanted) or run.info.status != "FINISHED":
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
                    by_source[source] = measure(cfg_path, ckpt)
                except Exception as err:  # data moved, artifact missing: say so, go on
                    say(f"run {run_id} skipped: {type(err).__name__}: {err}")
                    continue
        epochs = int(run.data.params.get("trainer.max_epochs", 1))
        for key, value in by_source[source].items():
            tracking.retry(tracking.client().log_metric, run_id, key, value, step=epochs - 1)
        done[run_id] = by_source[source]
        say(f"{run.info.run_name}: " + ", ".join(f"{k} = {v:.4f}" for k, v in by_source[source].items()))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--precise-bn", action="store_true", help="recompute BatchNorm's statistics for the final weights, then evaluate")
    args = parser.parse_intermixed_args(argv)
    tracking.configure()
    parent = tracking.newest_study(args.name)
    if parent is None:
        raise ConfigError(f"no '{args.name}' study in {tracking.tracking_uri()}")
    done = backfill(tracking.study_children(parent), precise_bn=args.precise_bn)
    print(f"{len(done)} run(s) measured; `make report-{args.name}` to see them")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
