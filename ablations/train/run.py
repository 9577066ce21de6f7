"""Train one model and track it in MLflow.

    python -m ablations.train [--profile NAME] [key=value ...]

Used directly by `make train`, and by the studies, which create the MLflow run
first and pass `--run-id`. Exit codes: 0 finished, 1 the run failed (it is
marked FAILED in MLflow with the reason), 2 bad input (found before training, except an
image file that cannot be decoded: it is found when first read),
130 interrupted (the run is marked KILLED).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from ablations import tracking
from ablations.train import assemble
from ablations.train.config import Config, load_config
from core import paths
from core.errors import EXIT_FAILED, EXIT_INTERRUPTED, USAGE_ERRORS, ConfigError, run_command
from core.malloc import keep_freed_memory

RUN_ID_ENV = "ABLATION_RUN_ID"  # the MLflow run every rank of a multi-process run trains into
FIRST_STEP_ENV = "ABLATION_FIRST_STEP_STAMP"  # set by the bench, which times start-up


def _rank() -> int:
    try:  # set by Lightning from the launcher's environment, and exact once a Trainer exists
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        return int(getattr(rank_zero_only, "rank", 0))
    except ImportError:
        return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", "0"))))


def run_logger(experiment: str, run_name: str | None, run_id: str | None, tags: dict | None):
    from lightning.pytorch.loggers import MLFlowLogger

    class RunLogger(MLFlowLogger):
        """Leaves the run's final status to `run()`, which marks it FINISHED only once
        the artifacts are logged, or FAILED with a reason."""

        def finalize(self, status: str = "success") -> None:
            pass

    if run_id is None:
        tracking.experiment_id(experiment)  # created here, so that its artifacts go where the store keeps them
    return RunLogger(experiment_name=experiment, run_name=run_name, run_id=run_id, tracking_uri=tracking.tracking_uri(), tags=tags)


def _agree_run_id(trainer, logger) -> str:
    """The MLflow run of a run started without --run-id: created once, by global
    rank 0, and known to every rank before training (the checkpoint folder and the
    resume decision depend on it). Lightning's own launcher starts the other local
    ranks later, with RUN_ID_ENV in their environment; processes started by
    torchrun or SLURM have no common parent, so rank 0 broadcasts the id."""
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


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM (Lightning turns both into SystemExit)."""


class _InterruptOnce:
    """The SIGINT handler: interrupt training once, then let the run shut down. Ctrl-C in a
    terminal reaches a study and its training processes at once, and the study then sends
    its own SIGINT; a second KeyboardInterrupt inside the shutdown left runs RUNNING or hung
    the process until the study's SIGKILL (measured). A flag, not SIG_IGN: Lightning puts
    back the handler it found when `fit` ends, which would re-arm a swapped-out one."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum, frame) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt


def _interrupted(err: BaseException) -> bool:
    """Ctrl-C (Lightning exits with 1 after it) or SIGTERM (Lightning's SIGTERMException)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(err, (KeyboardInterrupt, SIGTERMException)) or (isinstance(err, SystemExit) and err.code == 1)


def _mark_failed(run_id: str, err: BaseException, rank: int) -> None:
    """FAILED (KILLED when interrupted) with the reason, from whichever rank failed
    first; a rank that fails because another one died leaves the run as it is."""
    # Lightning turns Ctrl-C into SystemExit(1), and SIGTERM into SIGTERMException (a SystemExit)
    status = "KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED"
    what = "interrupted (Ctrl-C or SIGTERM)" if status == "KILLED" else f"{type(err).__name__}: {err}"
    try:
        tracking.mark_ended(run_id, status, (f"rank {rank}: " if rank else "") + what)
    except Exception as store_err:  # keep the training error, which is the one to report
        print(f"error: could not mark run {run_id} {status}: {store_err}", file=sys.stderr)


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


def _first_step_stamp() -> list:
    """With ABLATION_FIRST_STEP_STAMP=1, prints `first training step at <unix time>`
    as the first training step starts (the bench times start-up with it)."""
    if not os.environ.get(FIRST_STEP_ENV):
        return []
    from lightning.pytorch.callbacks import LambdaCallback

    done = []

    def stamp(trainer, *_):
        if not done and trainer.is_global_zero:
            done.append(True)
            print(f"first training step at {time.time():.3f}", flush=True)

    return [LambdaCallback(on_train_batch_start=stamp)]


def _log_inputs(run_id: str, dm) -> None:
    """The run's data as MLflow dataset inputs (once: a resumed run has them)."""
    logged = {d.dataset.name for d in tracking.get_run(run_id).inputs.dataset_inputs}
    for split, d in dm.describe(skip=logged).items():
        context = {"train": "training", "val": "validation", "test": "testing"}[split]
        tracking.log_dataset(run_id, d["name"], d["digest"], d["source"], d["profile"], context)


def _system_metrics(run_id: str, cfg: Config, resumed: bool):
    """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU where present) for this
    run: Lightning's logger creates runs through the client, so MLflow's global switch does
    not reach them. Every trainer.system_metrics_s seconds; None when off or unavailable."""
    if not cfg.trainer.system_metrics_s:
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=cfg.trainer.system_metrics_s, resume_logging=resumed, tracking_uri=tracking.tracking_uri())
        monitor.start()
        return monitor
    except Exception as err:  # psutil missing, say; training goes on without them
        print(f"warning: no system metrics: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def _log_artifacts(run_id: str, cfg: Config, model, size: int) -> None:
    from lightning_modules.summary import format_table

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(cfg.dump())
        (tmp / "architecture.txt").write_text(format_table(model.net, size) + "\n")
        _filters_png(model.net, tmp / "conv1_filters.png")
        for name in ("config.yaml", "architecture.txt", "conv1_filters.png"):
            tracking.log_artifact(run_id, str(tmp / name))
    last = paths.checkpoint(run_id)
    if last.exists():
        tracking.log_artifact(run_id, str(last), "checkpoints")


def run(
    cfg: Config, run_id: str | None = None, experiment: str = "train", run_name: str | None = None, tags: dict | None = None, callbacks: Sequence = ()
) -> str:
    """Trains `cfg` into MLflow run `run_id` (created if None); returns the run id.
    `callbacks`: extra Lightning callbacks (the bench times steps with one).
    Resumes from the run's last checkpoint if there is one."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_modules.callbacks import CleanTrainError, FinalTestError
    from lightning_modules.diagnostics import ToggleDiagnostics

    tracking.configure()
    assemble.check_devices(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    size = assemble.image_size(cfg)
    dm = assemble.datamodule(cfg)
    dm.setup("fit")
    model = assemble.module(cfg, dm)

    given_run = run_id or os.environ.get(RUN_ID_ENV) or None
    # the logger and the checkpoint folder are attached below, once every rank knows the run id
    checkpoint = ModelCheckpoint(dirpath=None, filename="last", save_last=False, save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    trainer = assemble.trainer(cfg, False, [checkpoint, CleanTrainError(), FinalTestError(), ToggleDiagnostics(), *callbacks, *_first_step_stamp()])
    rank0 = trainer.global_rank == 0
    # only rank 0 opens the store before the run exists: under torchrun two ranks
    # opening a new SQLite store at once both try to create its tables
    logger = run_logger(experiment, run_name, given_run, tags) if given_run or rank0 else None
    run_id = given_run or _agree_run_id(trainer, logger)
    trainer.logger = logger = logger or run_logger(experiment, run_name, run_id, tags)
    last = paths.checkpoint(run_id)
    checkpoint.dirpath = os.path.realpath(last.parent)
    launched_env, monitor = None, None
    try:
        if rank0:
            params = cfg.flat() | {  # as configured (its identity), and what null resolved to
                "resolved.image_size": size,
                "resolved.num_classes": cfg.model.num_classes or dm.num_classes,
                "resolved.channels_last": assemble.channels_last(cfg),
                "steps_per_epoch": len(dm.train_dataloader()) if cfg.trainer.limit_train_batches is None else cfg.trainer.limit_train_batches,
            }
            if given_run:  # resuming: MLflow refuses to change a logged param (e.g. threads)
                logged = tracking.get_run(run_id).data.params
                params = {k: v for k, v in params.items() if k not in logged}
            tracking.log_params(run_id, params)
            tracking.set_tags(run_id, {tracking.CONFIG_HASH: cfg.hash()} | ({} if given_run else tracking.source_tags("ablations.train")))
            if given_run:  # resumed or created by a study: training again
                tracking.set_running(run_id)
            _log_inputs(run_id, dm)
            monitor = _system_metrics(run_id, cfg, resumed=given_run is not None)
        keep_freed_memory()  # no page faults for the buffers every step allocates again (core/malloc.py)
        resume = str(last) if last.exists() else None
        if resume and rank0:
            print(f"resuming from {last}", flush=True)
        if trainer.world_size > 1 and RUN_ID_ENV not in os.environ:
            # Lightning's launcher starts the other local ranks with this environment
            launched_env = os.environ[RUN_ID_ENV] = run_id
        trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)
    except BaseException as err:
        _mark_failed(run_id, err, trainer.global_rank)
        if _interrupted(err):
            raise Interrupted(f"run {run_id} interrupted") from err
        raise  # another SystemExit (submitit's after it requeued a pre-empted job) passes unchanged
    finally:
        if launched_env is not None:
            os.environ.pop(RUN_ID_ENV, None)
        if monitor is not None:
            monitor.finish()
    if rank0:
        _log_artifacts(run_id, cfg, model, size)
        tracking.finish(run_id)
    return run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    parser.add_argument("--profile", default=os.environ.get("PROFILE") or None, help="a file in configs/profiles/")
    parser.add_argument("--experiment", default="train", help="MLflow experiment for a run without --run-id")
    parser.add_argument("--run-id", default=None, help="an existing MLflow run to train into (used by studies)")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--config-dir", type=Path, default=None, help="default: configs/ ($ABLATION_CONFIGS)")
    args = parser.parse_intermixed_args(argv)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C, and a study stopping its runs (SIGINT), interrupt training even where this process
        # started with SIGINT ignored, as it does in the background of a script or under a test worker
        signal.signal(signal.SIGINT, _InterruptOnce())
    cfg = load_config(args.overrides, args.profile, args.config_dir)
    start = time.time()
    try:
        run_id = run(cfg, run_id=args.run_id, experiment=args.experiment, run_name=args.run_name)
    except USAGE_ERRORS:  # bad data, devices or store (found before training, but for an undecodable image)
        raise
    except (Interrupted, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        traceback.print_exc()
        print(f"error: run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    if _rank() == 0:
        where = "" if args.run_id else f"; experiment '{args.experiment}'"
        print(f"run {run_id} finished in {time.time() - start:.0f} s{where} in {tracking.tracking_uri()} (make ui to browse)")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
