"""`python -m tools.bench`: runs every measurement and prints the table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from ablations.train.config import load_config
from tools import bench
from tools.bench.common import FULL, QUICK, REFERENCE_TOGGLES, bench_config, machine, median, memo_shapes, progress
from tools.bench.overheads import FirstStep, data_pipeline, demo_time, log_metrics_cost
from tools.bench.report import goals, keep_up, render
from tools.bench.toggles import toggle_rows
from tools.bench.training import channels_last_speedup, compare, peak_gflops, training_gflops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the bench runs; the figures mean nothing")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats of suite and bare (default 5)")
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
            result["toggles"] = toggle_rows(sizes, n_threads)
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
