"""What surrounds training: MLflow logging, the data pipeline, start-up, `make demo`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablations.train.config import Config
from core import paths
from core.paths import ROOT
from tools.bench.common import AUGMENTS, median, threads


def log_metrics_cost(calls: int) -> list[float]:
    """Direct RunLogger.log_metrics calls with what a logged training step sends."""
    from ablations import tracking
    from ablations.train.run import run_logger

    logger = run_logger("bench", "log-metrics", None, None)
    logger.log_metrics({"train_loss_step": 2.3, "epoch": 0.0}, step=0)  # creates the run
    out = []
    for i in range(1, calls + 1):
        t = time.perf_counter()
        logger.log_metrics({"train_loss_step": 2.3 - i * 1e-3, "epoch": 0.0}, step=i)
        out.append(time.perf_counter() - t)
    tracking.client().set_terminated(logger.run_id, "FINISHED")
    return out


# ------------------------------------------------------------------ data pipeline


def data_pipeline(base: Config, image_size: int, batch: int, batches: int, calls: int) -> dict[str, dict]:
    """img/s of the training loader alone (as the datamodule builds it, one
    process, one thread: one worker's work) and of BatchPipeline.train_batch on
    the CPU; from the median batch of `batches`, and the median of `calls`."""
    from data.augment import TRAIN_AUGMENTS, BatchPipeline
    from data.datamodule import AblationDataModule

    data_cfg = dataclasses.replace(base.data, train_size=batch * (batches + 1), val_size=batch, batch_size=batch, num_workers=0)
    dm = AblationDataModule(data_cfg, image_size, seed=base.seed)
    dm.setup("fit")
    out = {}
    for aug in AUGMENTS:
        d = AblationDataModule(dataclasses.replace(data_cfg, augment=aug), image_size, seed=base.seed)
        d.splits, d.stats = dm.splits, dm.stats
        with threads(1):
            it = iter(d.train_dataloader())
            next(it)  # warm-up (the albumentations pipeline is built on first use)
            times = []
            for _ in range(batches):
                t = time.perf_counter()
                next(it)
                times.append(time.perf_counter() - t)
            loader = batch / median(times)
        pipeline = BatchPipeline(image_size, dm.stats, TRAIN_AUGMENTS[aug])
        x = dm.splits.train.images[:batch]
        pipeline.train_batch(x)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            pipeline.train_batch(x)
            times.append(time.perf_counter() - t)
        out[aug] = {"loader_img_per_s": loader, "pipeline_img_per_s": batch / median(times), "stored": dm.side}
    out["paper"]["from_files_img_per_s"] = _loader_from_files(dm, batch, batches)
    return out


def _loader_from_files(dm, batch: int, batches: int) -> float:
    """The "before" of the in-memory cache: the same images as JPEG files, decoded
    by the loader for every batch (what a file dataset does without the cache)."""
    import torch
    from PIL import Image

    from data.datamodule import SplitDataset, _batch
    from data.registry import FileSplit

    with tempfile.TemporaryDirectory(prefix="ablation-bench-jpeg-") as folder:
        files = []
        for i, image in enumerate(dm.splits.train.images[: batch * (batches + 1)]):
            path = Path(folder) / f"{i:05d}.jpg"
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=95)
            files.append(path)
        dataset = SplitDataset(FileSplit(files, [0] * len(files)), dm.side)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=_batch)
        with threads(1):
            it = iter(loader)
            next(it)
            times = []
            for _ in range(batches):
                t = time.perf_counter()
                next(it)
                times.append(time.perf_counter() - t)
    return batch / median(times)


# ------------------------------------------------------------------ start-up


class FirstStep:
    """`python -m ablations.train --profile smoke` in a fresh process, started now:
    seconds from the command to the first training step, and, unless `stop_early`,
    to the end of the run (the process is stopped once its first step started)."""

    def __init__(self, store_uri: str, checkpoints: Path, stop_early: bool):
        from ablations.train.run import FIRST_STEP_ENV

        env = dict(os.environ) | {"MLFLOW_TRACKING_URI": store_uri, "ABLATION_CHECKPOINTS": str(checkpoints), FIRST_STEP_ENV: "1", "PYTHONUNBUFFERED": "1"}
        self.stop_early = stop_early
        self.err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read after the process ends)
        self.start = time.time()
        cmd = [sys.executable, "-m", "ablations.train", "--profile", "smoke"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.err, text=True)

    def result(self) -> dict:
        first = None
        try:
            for line in self.proc.stdout:
                if line.startswith("first training step at"):
                    first = float(line.rsplit(" ", 1)[1]) - self.start
                    if self.stop_early:
                        self.proc.terminate()
                        break
            self.proc.wait(timeout=600)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        total = time.time() - self.start
        if first is None:
            self.err.seek(0)
            raise RuntimeError(f"ablations.train --profile smoke did not reach a training step (exit {self.proc.returncode}):\n{self.err.read()[-3000:]}")
        return {"first_step_s": first, "run_s": None if self.stop_early else total}


def demo_time() -> str | None:
    path = paths.reports_dir() / "demo_time.txt"
    return path.read_text().strip() if path.is_file() else None
