"""Performance, measured side by side with bare PyTorch.

    python -m tools.bench            # the full table (make bench; 3 to 4 min on 2 CPU cores)
    python -m tools.bench --quick    # a tiny run that only checks that the bench works

What it measures, and how:

* Training throughput (images/s) of the suite's real training path,
  `ablations.train.run` (the datamodule and its loader, AlexNetModule with its
  BatchPipeline, the RunLogger MLflow logger on a temporary SQLite store,
  ModelCheckpoint, `L.Trainer.fit`), against a bare PyTorch loop with the same
  network, data, batch, SGD settings, batch augmentation and thread count.
  Steady state: W warm-up steps, then N timed steps; a suite step runs from the
  start of one training step to the start of the next (one batch fetch, one
  BatchPipeline call, one optimiser step, Lightning's and MLflow's per-step
  work). On the CPU each repeat is one suite run whose steps alternate one by
  one with bare steps (suite, bare, suite, bare, ...; a callback runs the bare
  step after each suite step and times it apart), so both see the same machine
  while other processes come and go; figures are median steps, the ratio the
  median of the step pairs' ratios. On a GPU whole runs alternate, timed between
  synchronisations. Medians over >= 3 repeats. Per-epoch work (validation, the
  checkpoint, epoch metrics) falls outside the timed steps; logging is measured
  on its own. `cifar` at 32 px on the CPU;
  `alexnet` at 227 px in bf16-mixed with channels_last only on a CUDA GPU.
* MLflow logging: RunLogger.log_metrics timed per call (directly, and every
  call made in the suite runs), as a share of the suite's step time.
* Data pipeline: images/s of the training loader alone, built as the datamodule
  builds it, in one process with one thread (what one loader worker does), and
  of BatchPipeline.train_batch on the CPU, per augmentation setting, at 32 px and
  227 px (stored at 256 px); and whether the loader keeps up with training at
  the default worker count.
* Start-up: `python -m ablations.train --profile smoke` in a new process, from
  the command to the first training step (train prints a timestamp there when
  ABLATION_FIRST_STEP_STAMP=1), with a new SQLite store and with an existing one.
* `make demo`'s wall time, from reports/demo_time.txt when `make demo` wrote it.

The table goes to stdout, progress to stderr; `--json PATH` also writes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from ablations.train.config import Config, load_config
from core import paths
from core.paths import ROOT

# Goals (the issue "Performance: measured side by side with bare PyTorch").
GOAL_RATIO = 0.97  # suite / independent reference, the small network on the CPU, no augmentation
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


FULL = Sizes(8192, 128, 4, 16, 3, 20, 8, 9, 128, 3, 10, 40)
QUICK = Sizes(256, 32, 1, 2, 1, 3, 2, 1, 8, 1, 2, 3)
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


# ------------------------------------------------------------------ training


class BareLoop:
    """The same training in plain PyTorch, one step at a time: index the in-memory
    uint8 images, augment the batch with the same BatchPipeline, forward,
    cross-entropy, backward, SGD with the suite's settings (weight decay on
    weights only), under the same precision and memory format."""

    def __init__(self, cfg: Config, images, labels, stats: dict, num_classes: int):
        import torch

        from ablations.train.assemble import image_size
        from data.augment import TRAIN_AUGMENTS, BatchPipeline
        from lightning_modules.networks import build_network
        from lightning_modules.optim import param_groups

        self.cfg, self.images, self.labels = cfg, images, labels
        self.device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        size = image_size(cfg)
        torch.manual_seed(cfg.seed)
        self.net = build_network(cfg.model, num_classes, size).to(self.device).train()
        from ablations.train.assemble import channels_last

        self.channels_last = channels_last(cfg)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.pipeline = BatchPipeline(size, stats, TRAIN_AUGMENTS[cfg.data.augment]).to(self.device)
        self.opt = torch.optim.SGD(param_groups(self.net, cfg.optim.weight_decay), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
        self.perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed))
        self.batches = len(labels) // cfg.data.batch_size
        self.i = 0

    def step(self) -> None:
        import torch

        b, t = self.cfg.data.batch_size, self.cfg.trainer
        start = (self.i % self.batches) * b
        self.i += 1
        idx = self.perm[start : start + b]
        x, y = self.images[idx], self.labels[idx]
        if self.device.type == "cuda":
            x, y = x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        x = self.pipeline.train_batch(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16-mixed"):
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def _step_timer(warmup: int, steps: int, sync: bool, bare: BareLoop | None):
    """A callback that times the suite's steps `warmup` to `warmup + steps - 1`
    and every RunLogger.log_metrics call of the run. With `bare`, it runs one bare
    step right after each suite step (at on_train_batch_end) and times it apart:
    suite step i = start(i) -> end(i), plus end of bare step i -> start(i + 1)."""
    import lightning as L
    import torch

    class StepTimer(L.Callback):
        def __init__(self):
            self.start: dict[int, float] = {}
            self.end: dict[int, float] = {}
            self.bare_end: dict[int, float] = {}
            self.log_calls: list[float] = []

        def on_fit_start(self, trainer, pl_module):
            for lg in trainer.loggers:
                inner = lg.log_metrics

                def timed(*args, _inner=inner, **kwargs):
                    t = time.perf_counter()
                    try:
                        return _inner(*args, **kwargs)
                    finally:
                        self.log_calls.append(time.perf_counter() - t)

                lg.log_metrics = timed

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if sync and batch_idx in (warmup, warmup + steps):
                torch.cuda.synchronize()
            self.start[batch_idx] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.end[batch_idx] = time.perf_counter()
            if bare is not None and batch_idx < warmup + steps:
                bare.step()
            self.bare_end[batch_idx] = time.perf_counter()

        def times(self) -> tuple[list[float], list[float]]:
            window = range(warmup, warmup + steps)
            suite = [self.end[i] - self.start[i] + self.start[i + 1] - self.bare_end[i] for i in window]
            return suite, [self.bare_end[i] - self.end[i] for i in window]

    return StepTimer()


def step_time(steps: list[float], gpu: bool) -> float:
    """On the CPU the median step, which other processes on a shared machine
    disturb less than the sum; on a GPU (synchronised only at the ends of the
    window) the mean."""
    return sum(steps) / len(steps) if gpu else median(steps)


def suite_once(cfg: Config, warmup: int, steps: int, name: str, bare: BareLoop | None) -> dict:
    """One real run (ablations.train.run) of warmup + steps + 1 training steps."""
    from ablations.train import run as train

    assert cfg.trainer.limit_train_batches == warmup + steps + 1
    gpu = cfg.trainer.accelerator == "gpu"
    timer = _step_timer(warmup, steps, gpu, bare)
    with quiet():
        train.run(cfg, experiment="bench", run_name=name, callbacks=[timer])
    suite, bare_steps = timer.times()
    out = {"step_s": step_time(suite, gpu), "steps_s": suite, "log_calls": timer.log_calls}
    if bare is not None:
        out |= {"bare_step_s": step_time(bare_steps, gpu), "bare_steps_s": bare_steps, "ratio": median([b / s for s, b in zip(suite, bare_steps, strict=True)])}
    return out


def bare_once(loop: BareLoop, warmup: int, steps: int) -> dict:
    """A standalone bare run (for the GPU, where steps are not timed one by one)."""
    import torch

    gpu = loop.device.type == "cuda"
    for _ in range(warmup):
        loop.step()
    if gpu:
        torch.cuda.synchronize()
    stamps = [time.perf_counter()]
    for _ in range(steps):
        loop.step()
        if not gpu:
            stamps.append(time.perf_counter())
    if gpu:
        torch.cuda.synchronize()
        stamps = [stamps[0] + (time.perf_counter() - stamps[0]) * k / steps for k in range(steps + 1)]
    walls = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"step_s": step_time(walls, gpu), "steps_s": walls}


def compare(cfg: Config, sizes: Sizes, warmup: int, steps: int, label: str, against: str = "reference") -> dict:
    """Suite against a bare loop, in `sizes.repeats` repeats; medians over the repeats.
    against="reference": the independent loop of tools/reference.py (its own network,
    batching, normalisation and augmentation); "component": BareLoop, built from the
    suite's own network and batch pipeline (what Lightning, MLflow and the loader add).
    On the CPU each repeat is one suite run whose steps alternate one by one with
    bare steps (suite, bare, suite, bare, ...), so that both see the same machine
    even when other processes come and go; its ratio is the median of the
    step pairs' ratios. On a GPU, where a step is not timed alone without
    synchronising, whole runs alternate (suite, bare, suite, bare, ...)."""
    from ablations.train.assemble import datamodule

    gpu = cfg.trainer.accelerator == "gpu"
    dm = datamodule(cfg)
    dm.setup("fit")  # the same in-memory data the suite's datamodule gets (memo_shapes)
    train = dm.splits.train
    runs = []
    for r in range(sizes.repeats):
        if against == "reference":
            from ablations.train.assemble import image_size
            from tools.reference import ReferenceLoop

            device = "cuda" if gpu else "cpu"
            augment = cfg.data.augment != "none"
            bare = ReferenceLoop(train.images, train.labels, cfg.data.batch_size, augment, cfg.seed, device, image_size(cfg), cfg.optim.lr)
        else:
            bare = BareLoop(cfg, train.images, train.labels, dm.stats, dm.num_classes)
        progress(f"{label}: repeat {r + 1}/{sizes.repeats}: suite run" + ("" if gpu else " with bare steps interleaved"))
        run = suite_once(cfg, warmup, steps, f"{label}-suite-{r}", None if gpu else bare)
        if gpu:
            progress(f"{label}: repeat {r + 1}/{sizes.repeats}: bare run")
            alone = bare_once(bare, warmup, steps)
            run |= {"bare_step_s": alone["step_s"], "bare_steps_s": alone["steps_s"], "ratio": alone["step_s"] / run["step_s"]}
        runs.append(run)
        del bare
    b = cfg.data.batch_size
    return {
        "suite_img_per_s": median([b / x["step_s"] for x in runs]),
        "bare_img_per_s": median([b / x["bare_step_s"] for x in runs]),
        "ratio": median([x["ratio"] for x in runs]),
        "ratios": [x["ratio"] for x in runs],
        "suite_runs": [b / x["step_s"] for x in runs],
        "bare_runs": [b / x["bare_step_s"] for x in runs],
        "suite_step_s": median([x["step_s"] for x in runs]),
        "bare_step_s": median([x["bare_step_s"] for x in runs]),
        "suite_steps_s": [x["steps_s"] for x in runs],
        "bare_steps_s": [x["bare_steps_s"] for x in runs],
        "log_calls": [c for x in runs for c in x["log_calls"]],
        "interleaved": "runs" if gpu else "steps",
        "warmup": warmup,
        "steps": steps,
        "repeats": sizes.repeats,
        "batch": b,
        "steps_per_epoch": len(train.labels) // b,
        "log_every_n_steps": cfg.trainer.log_every_n_steps,
        "against": against,
        "augment": cfg.data.augment,
    }


def channels_last_speedup(cfg: Config, sizes: Sizes, warmup: int, steps: int) -> dict:
    """The suite's default memory format (trainer.channels_last=auto) against
    trainer.channels_last=false, whole runs alternating, median steps."""
    import dataclasses as dc

    forced = dc.replace(cfg, trainer=dc.replace(cfg.trainer, channels_last=False))
    auto, nchw = [], []
    for r in range(sizes.repeats):
        progress(f"channels_last: repeat {r + 1}/{sizes.repeats}: auto, then false")
        auto.append(suite_once(cfg, warmup, steps, f"cl-auto-{r}", None)["step_s"])
        nchw.append(suite_once(forced, warmup, steps, f"cl-false-{r}", None)["step_s"])
    b = cfg.data.batch_size
    return {"auto_img_per_s": b / median(auto), "false_img_per_s": b / median(nchw), "ratio": median(nchw) / median(auto),
            "ratios": [n / a for a, n in zip(auto, nchw, strict=True)]}  # fmt: skip


def peak_gflops(threads_: int, n: int = 2048, repeats: int = 5) -> float:
    """The device's measured peak: float32 matrix products of n x n on the CPU, in GFLOP/s."""
    import torch

    with threads(threads_):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def training_gflops(cfg: Config, img_per_s: float) -> float:
    """Achieved GFLOP/s of training: forward multiply-accumulates per image from the layer
    table, x 2 FLOPs per MAC, x 3 for a training step (forward, backward to inputs and weights)."""
    from ablations.train.assemble import image_size
    from lightning_modules.networks import build_network
    from lightning_modules.summary import layer_table

    net = build_network(cfg.model, 10, image_size(cfg))
    return img_per_s * sum(r["macs"] for r in layer_table(net, image_size(cfg))) * 6 / 1e9


# ------------------------------------------------------------------ logging


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


# ------------------------------------------------------------------ report


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def render(r: dict) -> str:
    m = r["machine"]
    lines: list[str] = []
    add = lines.append

    def row(label: str, value: str, note: str = "") -> None:
        add(f"  {label:<44} {value:>14}  {note}".rstrip())

    add(f"AlexNet ablation suite: performance{' (--quick: tiny sizes, figures not meaningful)' if r['quick'] else ''}")
    add("")
    add("machine")
    row("cpu", "", f"{m['cpu']}, {m['cpu_cores']} usable cores")
    row("torch threads", str(m["threads"]))
    row("versions", "", f"torch {m['torch']}, lightning {m['lightning']}, mlflow {m['mlflow']}, python {m['python']}")
    row("gpu", "", m["gpu"] or "none (CUDA not available)")
    busy = max(r["load"]) > m["cpu_cores"]
    row("load average (1 min), start / end", " / ".join(f"{x:.1f}" for x in r["load"]), "other processes share the cores: figures are noisy" if busy else "")

    c = r["cifar"]
    add("")
    add(f"training throughput, images/s: the small CIFAR-10 network, ReLU, no normalisation or dropout, 32 px, batch {c['batch']}, 32-true, CPU, "
        f"{m['threads']} threads")  # fmt: skip
    add(f"(median of {c['repeats']} repeats, each a suite run whose {c['steps']} timed steps, after {c['warmup']} warm-up,")
    add("alternate one by one with the other loop's)")
    runs = lambda xs, fmt=fmt_rate: "repeats " + ", ".join(fmt(x) for x in xs)  # noqa: E731
    for key, what in (("cifar", "no augmentation"), ("cifar_paper", "paper's augmentation")):
        x = r[key]
        row(f"suite, {what}", fmt_rate(x["suite_img_per_s"]), f"{x['suite_step_s'] * 1000:.0f} ms/step; {runs(x['suite_runs'])}")
        row(f"independent reference, {what}", fmt_rate(x["bare_img_per_s"]), f"{x['bare_step_s'] * 1000:.0f} ms/step; {runs(x['bare_runs'])}")
        row(f"suite / reference, {what}", f"{x['ratio']:.3f}", f"median over step pairs; {runs(x['ratios'], lambda v: f'{v:.3f}')}")
    x = r["cifar_component"]
    row("component loop (suite's network, pipeline)", fmt_rate(x["bare_img_per_s"]), "what Lightning, MLflow and the loader add:")
    row("suite / component loop, no augmentation", f"{x['ratio']:.3f}", f"median over step pairs; {runs(x['ratios'], lambda v: f'{v:.3f}')}")
    f = r["flops"]
    row("achieved, suite / reference", f"{f['suite']:.1f} / {f['reference']:.1f}", "GFLOP/s (forward MACs x 2 x 3 per image)")
    row("measured peak (float32 2048^3 matmul)", f"{f['peak']:.1f}", f"GFLOP/s; the suite reaches {f['suite'] / f['peak']:.0%} of it")
    cl = r["channels_last"]
    row("cifar profile network, channels_last auto", fmt_rate(cl["auto_img_per_s"]), "LRN, dropout, paper's augmentation, two groups")
    row("the same, channels_last=false", fmt_rate(cl["false_img_per_s"]))
    row("speed-up of the default", f"{cl['ratio']:.2f}x", f"median steps; {runs(cl['ratios'], lambda v: f'{v:.2f}')}")
    g = r.get("alexnet")
    if g is None:
        row("alexnet 227 px bf16-mixed channels_last", "skipped", "no CUDA GPU here; run make bench on a GPU machine")
    else:
        add(f"training throughput, images/s: alexnet, 227 px, batch {g['batch']}, bf16-mixed, channels_last, GPU ({m['gpu']})")
        add(f"(median of {g['repeats']} interleaved repeats, suite run then reference run, {g['steps']} steps timed after {g['warmup']} warm-up)")
        row("alexnet suite", fmt_rate(g["suite_img_per_s"]), f"{g['suite_step_s'] * 1000:.1f} ms/step; {runs(g['suite_runs'])}")
        row("alexnet independent reference", fmt_rate(g["bare_img_per_s"]), f"{g['bare_step_s'] * 1000:.1f} ms/step; {runs(g['bare_runs'])}")
        row("alexnet suite / reference", f"{g['ratio']:.3f}", f"median over repeat pairs; {runs(g['ratios'], lambda x: f'{x:.3f}')}")

    lg = r["logging"]
    add("")
    add(f"MLflow logging (RunLogger on SQLite, synchronous), cifar step {c['suite_step_s'] * 1000:.0f} ms")
    row("log_metrics per call", f"{lg['call_ms']:.1f} ms", f"median of {lg['calls']} direct calls")
    if lg["run_calls"]:
        row("log_metrics per call in the suite runs", f"{lg['run_call_ms']:.1f} ms", f"median of {lg['run_calls']} calls (epoch-end metrics)")
    row("share of a logged step", f"{lg['logged_step_share'] * 100:.2f} %", "one call / one step")
    row(
        f"share of training time (every {c['log_every_n_steps']} steps)",
        f"{lg['amortised_share'] * 100:.3f} %",
        f"{lg['calls_per_epoch']} calls per {c['steps_per_epoch']}-step epoch (step metrics + 2 at epoch end)",
    )

    add("")
    add("data pipeline, images/s: loader = SplitDataset + DataLoader as the datamodule builds it, one process, 1 thread")
    add(f"(what one loader worker does); BatchPipeline.train_batch on the CPU, {m['threads']} threads")
    for size, table in r["data"].items():
        for aug, d in table.items():
            row(
                f"{aug} {size} px (stored {d['stored']}): loader / worker",
                fmt_rate(d["loader_img_per_s"]),
                f"BatchPipeline {fmt_rate(d['pipeline_img_per_s'])}",
            )
        files = table["paper"].get("from_files_img_per_s")
        if files:
            ratio = table["paper"]["loader_img_per_s"] / files
            row(f"before: paper {size} px decoding JPEG files", fmt_rate(files), f"in memory is {ratio:,.0f}x faster")
    k = r["keep_up"]
    for line in k["lines"]:
        row(line[0], line[1], line[2])

    s = r["startup"]
    add("")
    add("start-up: python -m ablations.train --profile smoke, in a new process")
    row(
        "command -> first training step, new store",
        "not run (--quick)" if s["new_store_s"] is None else f"{s['new_store_s']:.1f} s",
        "a new SQLite store: MLflow creates its tables first",
    )
    row("command -> first training step, existing store", "not run (--quick)" if s["existing_store_s"] is None else f"{s['existing_store_s']:.1f} s")
    row("make demo wall time", "see note" if r["demo"] else "not measured", r["demo"] or "reports/demo_time.txt is written by make demo")

    add("")
    add("goals")
    for ok, text in r["goals"]:
        add(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return "\n".join(lines)


def goals(r: dict) -> list[tuple[bool, str]]:
    c, lg, k = r["cifar"], r["logging"], r["keep_up"]
    p, cl = r["cifar_paper"], r["channels_last"]
    return [
        (c["ratio"] >= GOAL_RATIO, f"suite / independent reference >= {GOAL_RATIO}, no augmentation, CPU: {c['ratio']:.3f}"),
        (p["ratio"] >= GOAL_RATIO_AUGMENTED, f"suite / independent reference >= {GOAL_RATIO_AUGMENTED}, paper's augmentation, CPU: {p['ratio']:.3f}"),
        (cl["ratio"] >= GOAL_CHANNELS_LAST, f"default memory format >= {GOAL_CHANNELS_LAST}x channels_last=false, cifar profile network: {cl['ratio']:.2f}x"),
        (
            lg["amortised_share"] < GOAL_LOGGING,
            f"MLflow logging < {GOAL_LOGGING:.0%} of step time at log_every_n_steps={c['log_every_n_steps']}: "
            f"{lg['amortised_share'] * 100:.3f} % (a logged step alone: {lg['logged_step_share'] * 100:.2f} %)",
        ),
        (k["ok"], f"loader not the bottleneck at defaults: {k['summary']}"),
    ]


def keep_up(r: dict, workers: int) -> dict:
    """Does the loader keep up with training at the default worker count? With no
    workers it runs inline, so its share of the step is what it costs; with
    workers, they together must supply more than training consumes."""
    lines, verdicts = [], []
    trains = {"32": r["cifar"]["suite_img_per_s"]}
    if r.get("alexnet"):
        trains["227"] = r["alexnet"]["suite_img_per_s"]
    for size, rate in trains.items():
        for aug, d in r["data"][size].items():
            per_worker = d["loader_img_per_s"]
            if workers == 0:
                share = rate / per_worker
                ok = share < GOAL_INLINE_LOADER
                lines.append(
                    (f"keeps up? {aug} {size} px, num_workers=0", f"{share * 100:.1f} %", f"of the step spent loading, inline ({'yes' if ok else 'NO'})")
                )
            else:
                headroom = workers * per_worker / rate
                ok = headroom >= GOAL_WORKER_HEADROOM
                lines.append((f"keeps up? {aug} {size} px, num_workers={workers}", f"{headroom:.1f} x", f"training's rate ({'yes' if ok else 'NO'})"))
            verdicts.append((size, aug, ok, lines[-1][1]))
    if "227" not in trains:
        lines.append(("keeps up? 227 px", "not measured", "no GPU training rate to compare with"))
    default = [v for v in verdicts if v[1] == "paper"]  # data.augment's default
    ok = all(v[2] for v in default)
    how = f"num_workers={workers}, augment=paper: " + ", ".join(f"{v[0]} px {v[3]}" for v in default)
    how += " of the step" if workers == 0 else " the training rate"
    return {"lines": lines, "ok": ok, "summary": how}


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the bench runs; the figures mean nothing")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats of suite and bare (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_intermixed_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    started = time.time()
    warnings.filterwarnings("ignore")
    import lightning.pytorch  # noqa: F401  (sets its loggers up on import; quieted below)
    import torch

    if args.quick:
        torch.set_num_threads(1)  # a shared machine's cores hurt two threads most; no timings here anyway

    result: dict = {"quick": args.quick, "machine": machine(), "load": [os.getloadavg()[0]]}
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic"):  # after their imports (machine())
        logging.getLogger(name).setLevel(logging.ERROR)
    n_threads = result["machine"]["threads"]
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "ABLATION_CHECKPOINTS")}
    with tempfile.TemporaryDirectory(prefix="ablation-bench-") as tmp, memo_shapes():
        tmp = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        os.environ["ABLATION_CHECKPOINTS"] = str(tmp / "checkpoints")
        try:
            startup_uri = f"sqlite:///{tmp / 'startup.db'}"
            if args.quick:  # alongside the rest, on a copy of the bench's store: the quick figures are not timings anyway
                from ablations import tracking

                tracking.retry(tracking.client().search_experiments)  # creates the store's tables
                shutil.copy(tmp / "mlflow.db", tmp / "startup.db")
                early = FirstStep(startup_uri, tmp / "startup-checkpoints", stop_early=True)
            else:  # alone, before anything else
                progress("start-up: python -m ablations.train --profile smoke, new store, then existing store")
                new = FirstStep(startup_uri, tmp / "startup-checkpoints", stop_early=True).result()
                existing = FirstStep(startup_uri, tmp / "startup-checkpoints", stop_early=True).result()
                result["startup"] = {"new_store_s": new["first_step_s"], "existing_store_s": existing["first_step_s"]}

            w, n = sizes.warmup, sizes.steps
            small = (sizes.train_images, w + n + 1, sizes.batch)
            plain = bench_config("cifar", n_threads, False, *small, (*REFERENCE_TOGGLES, "data.augment=none"))
            result["cifar"] = compare(plain, sizes, w, n, "reference, no augmentation")
            augmented = bench_config("cifar", n_threads, False, *small, (*REFERENCE_TOGGLES, "data.augment=paper"))
            result["cifar_paper"] = compare(augmented, sizes, w, n, "reference, paper's augmentation")
            result["cifar_component"] = compare(plain, sizes, w, n, "component loop", against="component")
            profile = bench_config("cifar", n_threads, False, *small, ("model.init=default",))  # the cifar profile's network
            result["channels_last"] = channels_last_speedup(profile, sizes, w, n)
            result["flops"] = {
                "peak": peak_gflops(n_threads),
                "suite": training_gflops(plain, result["cifar"]["suite_img_per_s"]),
                "reference": training_gflops(plain, result["cifar"]["bare_img_per_s"]),
            }
            if torch.cuda.is_available():
                w, n, b = sizes.gpu_warmup, sizes.gpu_steps, sizes.batch
                alex = bench_config("alexnet", n_threads, True, (w + n + 1) * b, w + n + 1, b)
                result["alexnet"] = compare(alex, sizes, w, n, "alexnet")

            progress("MLflow log_metrics")
            c = result["cifar"]
            direct = log_metrics_cost(sizes.log_calls)
            call = median(direct)
            step_calls = c["steps_per_epoch"] // c["log_every_n_steps"]  # train_loss_step every log_every_n_steps
            epoch_call = median(c["log_calls"]) if c["log_calls"] else call  # val and train epoch metrics
            result["logging"] = {
                "call_ms": call * 1000,
                "calls": len(direct),
                "run_call_ms": median(c["log_calls"]) * 1000,
                "run_calls": len(c["log_calls"]),
                "logged_step_share": call / c["suite_step_s"],
                "calls_per_epoch": step_calls + 2,
                "amortised_share": (step_calls * call + 2 * epoch_call) / (c["steps_per_epoch"] * c["suite_step_s"]),
            }

            data = {}
            base = load_config([f"trainer.threads={n_threads}"])
            progress("data pipeline at 32 px")
            data["32"] = data_pipeline(base, 32, sizes.batch, sizes.loader_batches, sizes.pipeline_calls)
            progress("data pipeline at 227 px")
            data["227"] = data_pipeline(base, 227, sizes.big_batch, sizes.loader_batches, sizes.big_pipeline_calls)
            result["data"] = data
            result["keep_up"] = keep_up(result, base.data.num_workers)
            if args.quick:
                progress("start-up")
                first = early.result()
                result["startup"] = {"new_store_s": None, "existing_store_s": first["first_step_s"]}
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    result["load"].append(os.getloadavg()[0])
    result["demo"] = demo_time()
    result["goals"] = goals(result)
    result["wall_s"] = time.time() - started
    print(render(result))
    print(f"\nbench wall time {result['wall_s']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
