"""Training error without augmentation or dropout, for finished runs.

The training error a run logs (`train_err1`) is measured on the batches it
trains on: augmented, with dropout active, averaged over an epoch of changing
weights. Set beside the validation error it understates how much a regularised
variant overfits, which is the very question the dropout and augmentation
ablations ask. This evaluates each run's final weights in eval mode on
un-augmented training images (the same fixed subset for every run, cropped as
validation images are) and logs `train_clean_err1` at the run's last epoch; the
report's overfitting gap is validation error minus this.

Reports do this for their runs automatically (`make report-NAME` fills in older
studies); the weights come from the run's checkpoint (the source run's, for a
reused run), on disk or in MLflow.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from ablations import tracking

METRIC = "train_clean_err1"
TRAIN_EVAL_IMAGES = 10_000  # the fixed subset: a standard error of about 0.4 points at 25% error


def clean_train_error(cfg_path: Path, ckpt_path: Path, params: dict[str, str], images: int = TRAIN_EVAL_IMAGES) -> float:
    """Top-1 error of the checkpoint's weights on up to `images` training images, eval mode."""
    import torch

    from ablations.config import build_config, read_yaml
    from data.datamodule import AblationDataModule, SplitDataset
    from lightning_modules.module import AlexNetModule

    cfg = build_config(read_yaml(cfg_path))
    image_size = int(params["data.image_size"])
    dm = AblationDataModule(cfg.data, image_size, seed=cfg.seed)
    dm.setup("validate")
    model = AlexNetModule(cfg, int(params["model.num_classes"]), image_size, dm.stats)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    train = dm.splits.train
    n = len(train.labels)
    picks = np.sort(np.random.default_rng(0).permutation(n)[: min(images, n)])
    dataset = SplitDataset(train, dm.side)
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(picks), 256):
            x, y = dataset.__getitems__(picks[start : start + 256].tolist())
            logits = model(model.pipeline.eval_batch(x.to(device)))
            wrong += int((logits.argmax(-1).cpu() != y).sum())
    return wrong / len(picks)


def _checkpoint(client, run_id: str, tmp: Path) -> Path | None:
    from ablations.train import CHECKPOINT_ROOT

    local = CHECKPOINT_ROOT / run_id / "last.ckpt"
    if local.exists():
        return local
    if "checkpoints/last.ckpt" not in {a.path for a in client.list_artifacts(run_id, "checkpoints")}:
        return None
    return Path(client.download_artifacts(run_id, "checkpoints/last.ckpt", str(tmp)))


def fill_in(client, runs: list, say=print) -> dict[str, float]:
    """Logs `train_clean_err1` on each FINISHED run that lacks it; returns run id -> value
    for every run that has it now. A run whose weights or data cannot be found is
    skipped with a message (the report then shows n/a for it)."""
    done: dict[str, float] = {}
    by_source: dict[str, float] = {}
    for run in runs:
        run_id = run.info.run_id
        if METRIC in run.data.metrics:
            done[run_id] = run.data.metrics[METRIC]
            continue
        if run.info.status != "FINISHED":
            continue
        source = run.data.tags.get("reused_from", run_id)
        if source not in by_source:
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                try:
                    ckpt = _checkpoint(client, source, tmp)
                    if ckpt is None:
                        say(f"train error without augmentation: no checkpoint for run {source}; skipped")
                        continue
                    cfg_path = Path(client.download_artifacts(run_id, "config.yaml", str(tmp)))
                    by_source[source] = clean_train_error(cfg_path, ckpt, run.data.params)
                except Exception as err:  # data moved, artifact missing: the report says n/a
                    say(f"train error without augmentation: run {run_id} skipped: {type(err).__name__}: {err}")
                    continue
        value = by_source[source]
        epochs = int(run.data.params.get("trainer.max_epochs", 1))
        tracking.retry(client.log_metric, run_id, METRIC, value, step=epochs - 1)
        done[run_id] = value
    return {k: v for k, v in done.items() if not math.isnan(v)}
