"""What every part of the bench shares: its sizes and goals, the machine it runs on,
quiet runs, thread counts, the memoised synthetic data, and the configs it trains."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

from ablations.train.config import Config, load_config

# Goals (the issue "Performance: measured side by side with bare PyTorch").
GOAL_RATIO = 0.97  # suite / independent reference, the small network on the CPU, no augmentation, every toggle's path
GOAL_RATIO_AUGMENTED = 0.90  # the same with the paper's augmentation
GOAL_CHANNELS_LAST = 1.2  # the default memory format against channels_last=false
GOAL_LOGGING = 0.01  # MLflow logging time / training time at the default log_every_n_steps
GOAL_INLINE_LOADER = 0.05  # num_workers=0: loading runs inline, so at most this share of the step
GOAL_WORKER_HEADROOM = 1.2  # num_workers>0: the workers together supply this much more than training uses


@dataclasses.dataclass(frozen=True)
class Sizes:
    train_images: int  # cifar runs, 32 px
    batch: int
    warmup: int  # steps before timing, in every repeat
    steps: int  # timed steps per repeat
    repeats: int
    log_calls: int  # direct RunLogger.log_metrics calls timed
    loader_batches: int  # batches timed per loader measurement
    pipeline_calls: int  # BatchPipeline calls timed per measurement, 32 px
    big_batch: int  # batch for the 227 px data pipeline
    big_pipeline_calls: int  # BatchPipeline calls timed per measurement, 227 px
    gpu_warmup: int
    gpu_steps: int
    tutorial_batch: int  # the tutorial's network at 224 px, one repeat
    tutorial_warmup: int
    tutorial_steps: int


FULL = Sizes(8192, 128, 4, 24, 5, 20, 8, 9, 128, 3, 10, 40, 16, 2, 6)
QUICK = Sizes(256, 32, 1, 2, 1, 3, 2, 1, 8, 1, 2, 3, 2, 1, 1)
AUGMENTS = ("none", "paper", "extended")


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------ environment


def machine() -> dict:
    import lightning
    import mlflow
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cpu_cores": usable,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "mlflow": mlflow.__version__,
        "python": platform.python_version(),
        "gpu": gpu,
    }


@contextlib.contextmanager
def quiet():
    """Swallows a run's chatter (Lightning's banners, the epoch lines) and keeps
    stderr off a terminal, so there is no progress bar, as in studies; shows it on failure."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(out.getvalue()[-4000:] + err.getvalue()[-4000:])
        raise


@contextlib.contextmanager
def threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def memo_shapes():
    """Generates each `shapes` set once for the whole bench (the suite's runs
    would otherwise draw it again every repeat, outside the timed steps), and
    draws 256 px sets at 32 px and resizes them: drawing shapes at 256 px takes
    about a minute per thousand images here, and the content does not change the
    speed of anything timed."""
    from data import registry

    original = registry.DATASETS["shapes"]
    cache: dict = {}

    def shapes(cfg, side):
        key = (cfg.train_size, cfg.val_size, cfg.seed, side)
        if key not in cache:
            if side <= 64:
                cache[key] = original(cfg, side)
            else:
                small = original(dataclasses.replace(cfg, train_size=min(cfg.train_size or 1024, 1024)), 32)
                cache[key] = registry.Splits(
                    _upsample(small.train, cfg.train_size or 1024, side), _upsample(small.val, cfg.val_size or 256, side), small.classes
                )
        return cache[key]

    registry.DATASETS["shapes"] = shapes
    try:
        yield
    finally:
        registry.DATASETS["shapes"] = original


def _upsample(split, n: int, side: int):
    import torch

    from data.registry import ArraySplit, _resize_array

    m = min(n, len(split.labels))
    images = torch.cat([_resize_array(split.images[i : i + 128].numpy(), side) for i in range(0, m, 128)])
    idx = torch.arange(n) % m  # repeat the drawn images up to n
    return ArraySplit(images[idx], split.labels[idx])


# The small network as the independent reference builds it: ReLU, no normalisation, no
# dropout, one group, PyTorch's initialisation.
REFERENCE_TOGGLES = ["model.activation=relu", "model.norm=none", "model.dropout=0", "model.groups=1", "model.init=default"]


def bench_config(arch: str, threads_: int, gpu: bool, train_images: int, limit: int, batch: int, extra: tuple[str, ...] = ()) -> Config:
    over = [
        f"model.arch={arch}",
        "data.name=shapes",
        f"data.train_size={train_images}",
        f"data.val_size={batch}",
        f"data.batch_size={batch}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={limit}",
        "trainer.limit_val_batches=1",
        f"trainer.threads={threads_}",
    ]
    if gpu:
        over += ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"]
    else:
        over += ["trainer.accelerator=cpu"]
    return load_config(over + list(extra))


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
