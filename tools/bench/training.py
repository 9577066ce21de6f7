"""Training throughput: the suite's real training path against a bare loop, step by
step interleaved (the independent reference of tools/reference.py, or the component
loop over the suite's own network and pipeline); the memory format; FLOP rates."""

from __future__ import annotations

import time

from ablations.train.config import Config
from tools.bench.common import Sizes, median, progress, quiet, threads


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
        x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)  # as the suite's loader does (data/datamodule.py)
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


def compare(cfg: Config, sizes: Sizes, warmup: int, steps: int, label: str, against: str = "reference", reference: dict | None = None,
            repeats: int | None = None) -> dict:  # fmt: skip
    """Suite against a bare loop, in `sizes.repeats` repeats; medians over the repeats.
    against="reference": the independent loop of tools/reference.py (its own network,
    batching, normalisation and augmentation); "component": BareLoop, built from the
    suite's own network and batch pipeline (what Lightning, MLflow and the loader add).
    On the CPU each repeat is one suite run whose steps alternate one by one with
    bare steps (suite, bare, suite, bare, ...), so that both see the same machine
    even when other processes come and go; the ratio is the median of the
    step pairs' ratios, pooled over the repeats (each repeat's own is kept too). On a GPU, where a step is not timed alone without
    synchronising, whole runs alternate (suite, bare, suite, bare, ...). `reference`:
    keyword arguments of ReferenceLoop that choose its network (arch, layers);
    `repeats`: instead of `sizes.repeats`."""
    from ablations.train.assemble import datamodule

    gpu = cfg.trainer.accelerator == "gpu"
    repeats = repeats or sizes.repeats
    dm = datamodule(cfg)
    dm.setup("fit")  # the same in-memory data the suite's datamodule gets (memo_shapes)
    train = dm.splits.train
    runs = []
    for r in range(repeats):
        if against == "reference":
            from ablations.train.assemble import image_size
            from tools.reference import ReferenceLoop

            device = "cuda" if gpu else "cpu"
            augment = cfg.data.augment != "none"
            bare = ReferenceLoop(train.images, train.labels, cfg.data.batch_size, augment, cfg.seed, device, image_size(cfg), cfg.optim.lr,
                                 num_classes=dm.num_classes, **(reference or {}))  # fmt: skip
        else:
            bare = BareLoop(cfg, train.images, train.labels, dm.stats, dm.num_classes)
        progress(f"{label}: repeat {r + 1}/{repeats}: suite run" + ("" if gpu else " with bare steps interleaved"))
        run = suite_once(cfg, warmup, steps, f"{label}-suite-{r}", None if gpu else bare)
        if gpu:
            progress(f"{label}: repeat {r + 1}/{repeats}: bare run")
            alone = bare_once(bare, warmup, steps)
            run |= {"bare_step_s": alone["step_s"], "bare_steps_s": alone["steps_s"], "ratio": alone["step_s"] / run["step_s"]}
        runs.append(run)
        del bare
    b = cfg.data.batch_size
    return {
        "suite_img_per_s": median([b / x["step_s"] for x in runs]),
        "bare_img_per_s": median([b / x["bare_step_s"] for x in runs]),
        # CPU: every step pair of every repeat at once (a noisy repeat weighs as many pairs as it has);
        # GPU: the repeats' ratios
        "ratio": median([x["ratio"] for x in runs] if gpu else [b / s for x in runs for s, b in zip(x["steps_s"], x["bare_steps_s"], strict=True)]),
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
        "repeats": repeats,
        "batch": b,
        "steps_per_epoch": len(train.labels) // b,
        "log_every_n_steps": cfg.trainer.log_every_n_steps,
        "against": against,
        "augment": cfg.data.augment,
    }


def channels_last_speedup(cfg: Config, sizes: Sizes, warmup: int, steps: int) -> dict:
    """The suite's default memory format (trainer.channels_last=auto) against
    trainer.channels_last=false, whole runs alternating (auto, false, auto, ...), median
    steps; the ratio is the median of the pairs' ratios, each pair run back to back, so a
    slow spell of the machine weighs on one pair instead of on one side."""
    import dataclasses as dc

    forced = dc.replace(cfg, trainer=dc.replace(cfg.trainer, channels_last=False))
    auto, nchw = [], []
    for r in range(sizes.repeats):
        progress(f"channels_last: repeat {r + 1}/{sizes.repeats}: auto, then false")
        auto.append(suite_once(cfg, warmup, steps, f"cl-auto-{r}", None)["step_s"])
        nchw.append(suite_once(forced, warmup, steps, f"cl-false-{r}", None)["step_s"])
    b = cfg.data.batch_size
    ratios = [n / a for a, n in zip(auto, nchw, strict=True)]
    return {"auto_img_per_s": b / median(auto), "false_img_per_s": b / median(nchw), "ratio": median(ratios), "ratios": ratios}


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
