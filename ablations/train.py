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
from typing import Optional, Sequence

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
    elif t.devices * t.num_nodes > 1 and cfg.model.norm == "batchnorm" and cfg.model.sync_batchnorm:
        raise ConfigError(
            f"model.norm=batchnorm with model.sync_batchnorm=true on {t.devices * t.num_nodes} processes needs CUDA GPUs (torch's SyncBatchNorm does not run on CPU); "
            "set model.sync_batchnorm=false (each process then normalises over its own slice of the global batch)"
        )


def _rank() -> int:
    try:  # set by Lightning from the launcher's environment, and exact once a Trainer exists
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        return int(getattr(rank_zero_only, "rank", 0))
    except ImportError:
        return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", "0"))))


RUN_ID_ENV = "ABLATION_RUN_ID"  # the MLflow run every rank of a multi-process run trains into


def _agree_run_id(trainer, logger) -> str:
    """The MLflow run of a run started without --run-id: created once, by global
    rank 0, and known to every rank before training (the checkpoint folder and the
    resume decision depend on it). Lightning's own launcher starts the other local
    ranks later, with RUN_ID_ENV in their environment; processes started by
    torchrun or SLURM have no common parent, so rank 0 broadcasts the id."""
    from ablations import tracking

    run_id = tracking.retry(lambda: logger.run_id) if trainer.global_rank == 0 else None
    if trainer.world_size > 1 and trainer.strategy.cluster_environment.creates_processes_externally:
        trainer.strategy.setup_environment()  # the process group fit() would set up; it is reused there
        run_id = trainer.strategy.broadcast(run_id, src=0)
    if not run_id:
        raise ConfigError(
            f"global rank {trainer.global_rank} of a run launched without torchrun or SLURM does not know its MLflow run: "
            f"create the run first and pass --run-id (or set {RUN_ID_ENV}) on every node"
        )
    return run_id


def _mark_failed(run_id: str, err: BaseException, rank: int) -> None:
    """Marks the run FAILED (KILLED when interrupted) with the reason, from whichever
    rank failed first; a rank that fails because another one died leaves it be."""
    from ablations import tracking

    try:
        client = tracking.client()
        if tracking.retry(client.get_run, run_id).info.status != "RUNNING":
            return
        # Lightning turns Ctrl-C into SystemExit(1), and SIGTERM into SIGTERMException (a SystemExit)
        status = "KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED"
        what = "interrupted (Ctrl-C or SIGTERM)" if status == "KILLED" else f"{type(err).__name__}: {err}"
        reason = (f"rank {rank}: " if rank else "") + what
        tracking.retry(client.set_tag, run_id, "failure_reason", reason[:4000])
        tracking.retry(client.set_terminated, run_id, status)
    except Exception as store_err:  # keep the training error, which is the one to report
        print(f"error: could not mark run {run_id} {type(err).__name__}: {store_err}", file=sys.stderr)


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


FIRST_STEP_ENV = "ABLATION_FIRST_STEP_STAMP"


def _first_step_stamp() -> list:
    """With ABLATION_FIRST_STEP_STAMP=1, prints `first training step at <unix time>`
    as the first training step starts: ablations/bench.py measures start-up with it."""
    if not os.environ.get(FIRST_STEP_ENV):
        return []
    from lightning.pytorch.callbacks import LambdaCallback

    done = []

    def stamp(trainer, *_):
        if not done and trainer.is_global_zero:
            done.append(True)
            print(f"first training step at {time.time():.3f}", flush=True)

    return [LambdaCallback(on_train_batch_start=stamp)]


def build_trainer(cfg: Config, logger, callbacks):
    import lightning as L

    t = cfg.trainer
    world = t.devices * t.num_nodes
    strategy = "auto"
    if world > 1:
        import warnings

        from lightning.pytorch.strategies import DDPStrategy

        # the module reduces its epoch metrics across ranks itself (as sums), before logging
        warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")

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


def run(
    cfg: Config, run_id: Optional[str] = None, experiment: str = "train", run_name: Optional[str] = None, tags: Optional[dict] = None, callbacks: Sequence = ()
) -> str:
    """Trains `cfg` into MLflow run `run_id` (created if None); returns the run id.
    `callbacks`: extra Lightning callbacks (ablations/bench.py times steps with one).
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

    from lightning.pytorch.callbacks import ModelCheckpoint

    def run_logger(run_id: Optional[str]) -> RunLogger:
        return RunLogger(experiment_name=experiment, run_name=run_name, run_id=run_id, tracking_uri=tracking.tracking_uri(), tags=tags)

    given_run = run_id or os.environ.get(RUN_ID_ENV) or None
    # the logger and the checkpoint folder are attached below, once every rank knows the run id
    checkpoint = ModelCheckpoint(dirpath=None, filename="last", save_last=False, save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    trainer = build_trainer(cfg, False, [checkpoint, *callbacks, *_first_step_stamp()])
    rank0 = trainer.global_rank == 0
    # only rank 0 opens the store before the run exists: under torchrun two ranks
    # opening a new SQLite store at once both try to create its tables
    logger = run_logger(given_run) if given_run or rank0 else None
    run_id = given_run or _agree_run_id(trainer, logger)
    trainer.logger = logger = logger or run_logger(run_id)
    ckpt_dir = CHECKPOINT_ROOT / run_id
    checkpoint.dirpath = os.path.realpath(ckpt_dir)
    launched_env = None
    try:
        if rank0:
            params = cfg.flat() | {"data.image_size": image_size, "model.num_classes": num_classes}
            if given_run:  # resuming: MLflow refuses to change a logged param (e.g. threads)
                logged = logger.experiment.get_run(run_id).data.params
                params = {k: v for k, v in params.items() if k not in logged}
            tracking.retry(logger.log_hyperparams, params)
            tracking.retry(logger.experiment.set_tag, run_id, "config_hash", cfg.hash())
            if given_run:  # resumed or created by a study: training again
                tracking.retry(logger.experiment.update_run, run_id, status="RUNNING")
        last = ckpt_dir / "last.ckpt"
        resume = str(last) if last.exists() else None
        if resume and rank0:
            print(f"resuming from {last}", flush=True)
        if trainer.world_size > 1 and RUN_ID_ENV not in os.environ:
            # Lightning's launcher starts the other local ranks with this environment
            launched_env = os.environ[RUN_ID_ENV] = run_id
        trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)
    except BaseException as err:
        _mark_failed(run_id, err, trainer.global_rank)
        raise
    finally:
        if launched_env is not None:
            os.environ.pop(RUN_ID_ENV, None)
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
    args = parser.parse_intermixed_args(argv)
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

        where = "" if args.run_id else f"; experiment '{args.experiment}'"
        print(f"run {run_id} finished in {time.time() - start:.0f} s{where} in {tracking.tracking_uri()} (make ui to browse)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
