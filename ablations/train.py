"""Train one model and track it in MLflow.

    python -m ablations.train [--profile NAME] [key=value ...]

Used directly by `make train`, and by the studies, which create the MLflow run
first and pass `--run-id`. Exit codes: 0 finished, 1 the run failed (it is
marked FAILED in MLflow with the reason), 2 bad input (nothing was trained).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

from ablations.config import CONFIG_DIR, ROOT, Config, ConfigError, load_config

EXIT_FAILED, EXIT_USAGE = 1, 2
CHECKPOINT_ROOT = Path(os.environ.get("ABLATION_CHECKPOINTS") or ROOT / "checkpoints")


def resolved_sizes(cfg: Config) -> int:
    from lightning_modules.networks import INPUT_SIZE

    return cfg.data.image_size or INPUT_SIZE[cfg.model.arch]


def check_devices(cfg: Config) -> None:
    """Fails before any run starts if the asked-for devices do not exist."""
    import torch

    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available()):
        have = torch.cuda.device_count()
        if have == 0:
            raise ConfigError(f"trainer.accelerator={t.accelerator} but no CUDA GPU is visible; use trainer.accelerator=cpu")
        if t.devices > have:
            raise ConfigError(f"trainer.devices={t.devices} but only {have} GPU(s) are visible; use trainer.devices={have} or fewer")
    elif t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps but MPS is not available; use trainer.accelerator=cpu")


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", "0"))))


def _filters_png(net, path: Path) -> None:
    """The first layer's kernels as one picture (the paper's Figure 3)."""
    import torch
    from torchvision.utils import make_grid, save_image

    w = net.first_conv.weight.detach().float().cpu()
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    scale = max(1, 64 // w.shape[-1])
    w = torch.nn.functional.interpolate(w, scale_factor=scale, mode="nearest")
    save_image(make_grid(w, nrow=16 if len(w) > 32 else 8, padding=2, pad_value=1.0), path)


def build_trainer(cfg: Config, logger, callbacks):
    import lightning as L

    t = cfg.trainer
    world = t.devices * t.num_nodes
    strategy = "auto"
    if world > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo" if t.accelerator == "cpu" else None)
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        sync_batchnorm=cfg.model.sync_batchnorm and cfg.model.norm == "batchnorm" and world > 1,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # data/datamodule.py shards by global batch itself
    )


def run(cfg: Config, run_id: Optional[str] = None, experiment: str = "train", run_name: Optional[str] = None, tags: Optional[dict] = None) -> str:
    """Trains `cfg` into MLflow run `run_id` (created if None); returns the run id.
    Resumes from the run's last checkpoint if there is one."""
    import lightning as L
    import torch

    from ablations import tracking
    from ablations.callbacks import RunLogger
    from data.datamodule import AblationDataModule
    from lightning_modules.module import AlexNetModule
    from lightning_modules.summary import format_table

    tracking.configure()
    check_devices(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    image_size = resolved_sizes(cfg)
    dm = AblationDataModule(cfg.data, image_size, seed=cfg.seed)
    dm.setup("fit")
    num_classes = cfg.model.num_classes or dm.num_classes
    model = AlexNetModule(cfg, num_classes, image_size, dm.stats)

    logger = RunLogger(experiment_name=experiment, run_name=run_name, run_id=run_id, tracking_uri=tracking.tracking_uri(), tags=tags)
    rank0 = _rank() == 0
    if rank0:
        run_id = logger.run_id
        params = cfg.flat() | {"data.image_size": image_size, "model.num_classes": num_classes}
        tracking.retry(logger.log_hyperparams, params)
        logger.experiment.set_tag(run_id, "config_hash", cfg.hash())
    ckpt_dir = CHECKPOINT_ROOT / (run_id or os.environ.get("ABLATION_RUN_ID", "unnamed"))
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_last=False, save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    trainer = build_trainer(cfg, logger, [checkpoint])
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.exists() else None
    if resume and rank0:
        print(f"resuming from {last}", flush=True)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)
    except BaseException as err:
        if rank0 and logger.run_id:
            reason = f"{type(err).__name__}: {err}"[:4000]
            status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
            tracking.retry(logger.experiment.set_tag, logger.run_id, "failure_reason", reason)
            tracking.retry(logger.experiment.set_terminated, logger.run_id, status)
        raise
    if rank0:
        client = logger.experiment
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "config.yaml").write_text(cfg.dump())
            (tmp / "architecture.txt").write_text(format_table(model.net, image_size) + "\n")
            _filters_png(model.net, tmp / "conv1_filters.png")
            for name in ("config.yaml", "architecture.txt", "conv1_filters.png"):
                tracking.retry(client.log_artifact, run_id, str(tmp / name))
        if last.exists():
            tracking.retry(client.log_artifact, run_id, str(last), "checkpoints")
        tracking.retry(client.set_terminated, run_id, "FINISHED")
    return run_id


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    parser.add_argument("--profile", default=os.environ.get("PROFILE") or None, help="a file in configs/profiles/ (scale only)")
    parser.add_argument("--experiment", default="train", help="MLflow experiment for a run without --run-id")
    parser.add_argument("--run-id", default=None, help="an existing MLflow run to train into (used by studies)")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.overrides, args.profile, args.config_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    start = time.time()
    try:
        run_id = run(cfg, run_id=args.run_id, experiment=args.experiment, run_name=args.run_name)
    except ConfigError as err:  # bad data or devices, found before training
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        traceback.print_exc()
        print(f"error: run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    if _rank() == 0:
        from ablations import tracking

        print(f"run {run_id} finished in {time.time() - start:.0f} s; experiment '{args.experiment}' in {tracking.tracking_uri()} (make ui to browse)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
