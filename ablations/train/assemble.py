"""The parts of one run, built from its Config: data, network, module, trainer.

Lower layers receive what they need (the network its model section, the module its
network, batch pipeline and optimiser factory); this is the one place that knows
which config section goes where.
"""

from __future__ import annotations

import os
import sys

from ablations.train.config import Config
from core.errors import ConfigError, DeviceError


def image_size(cfg: Config) -> int:
    from lightning_modules.networks import input_size

    return cfg.data.image_size or input_size(cfg.model.arch)


def accelerator(cfg: Config) -> str:
    """'cuda', 'mps' or 'cpu': what the run trains on."""
    import torch

    a = cfg.trainer.accelerator
    if a in ("gpu", "cuda") or (a == "auto" and torch.cuda.is_available()):
        return "cuda"
    if a == "mps" or (a == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


def channels_last(cfg: Config) -> bool:
    """trainer.channels_last=auto: channels-last on the CPU, where it was measured faster
    (README, Performance), and on CUDA, where cuDNN's tensor-core convolutions expect it
    (not yet measured here: no GPU); the default layout elsewhere."""
    if cfg.trainer.channels_last != "auto":
        return bool(cfg.trainer.channels_last)
    return accelerator(cfg) in ("cpu", "cuda")


def check_devices(cfg: Config) -> None:
    """Fails before any run starts if the asked-for devices do not exist."""
    import torch

    t = cfg.trainer
    world = t.devices * t.num_nodes
    if t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available()):
        have = torch.cuda.device_count()
        if have == 0:
            raise DeviceError(f"trainer.accelerator={t.accelerator} but no CUDA GPU is visible; use trainer.accelerator=cpu")
        if t.devices > have:
            raise DeviceError(f"trainer.devices={t.devices} but only {have} GPU(s) are visible; use trainer.devices={have} or fewer")
    elif t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("trainer.accelerator=mps but MPS is not available; use trainer.accelerator=cpu")
    elif world > 1 and cfg.model.sync_batchnorm and _has_batchnorm(cfg):
        raise ConfigError(
            f"model.sync_batchnorm=true with BatchNorm layers on {world} processes needs CUDA GPUs (torch's SyncBatchNorm does not run on CPU); "
            "set model.sync_batchnorm=false (each process then normalises over its own slice of the global batch)"
        )


def _has_batchnorm(cfg: Config) -> bool:
    import torch

    from lightning_modules.networks import build_network

    net = build_network(cfg.model, cfg.model.num_classes or 10, image_size(cfg))
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def datamodule(cfg: Config):
    from data.datamodule import AblationDataModule

    return AblationDataModule(cfg.data, image_size(cfg), seed=cfg.seed)


def module(cfg: Config, dm):
    """The LightningModule for `cfg`, on the data of `dm` (set up: its classes and statistics)."""
    from lightning_modules.module import AlexNetModule
    from lightning_modules.networks import build_network
    from lightning_modules.optim import optimizer_factory

    net = build_network(cfg.model, cfg.model.num_classes or dm.num_classes, image_size(cfg))
    return AlexNetModule(
        net, dm.batch_pipeline(), optimizer_factory(cfg.optim), channels_last=channels_last(cfg), seed=cfg.seed, stop_at_train_err=cfg.trainer.stop_at_train_err
    )


def trainer(cfg: Config, logger, callbacks):
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
    plugins = []
    if "SLURM_JOB_ID" in os.environ:  # in a cluster job: requeueing is submitit's (ablations/study/slurm.py), not Lightning's
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))
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
        sync_batchnorm=cfg.model.sync_batchnorm and world > 1,  # every BatchNorm layer there is, 2-D or 1-D
        plugins=plugins or None,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # data/datamodule.py shards by global batch itself
    )
