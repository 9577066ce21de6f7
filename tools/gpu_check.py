"""GPU check: the paper's AlexNet in bf16 with channels_last, through the suite's real path.

    python -m tools.gpu_check [--epochs 10] [--train-size 4096] [--batch-size 128] [--devices 1] [--norm batchnorm]
    make gpu-check

Trains `model.arch=alexnet` (227 px crops of synthetic shapes stored at 256 px)
for a few hundred steps (default 10 epochs x 32 steps of 128 images) with
trainer.precision=bf16-mixed and trainer.channels_last=true, by calling
`ablations.train.run` as `python -m ablations.train` does (datamodule, loader,
AlexNetModule and its batch pipeline, the MLflow logger, checkpoints, artifacts),
into the experiment `gpu-check` of the usual MLflow store. It then checks that the
training loss fell and that the run is FINISHED in MLflow, and prints the training
throughput in images/s and the TFLOP/s it achieves: forward multiply-accumulates per
image counted layer by layer (0.72 G for the grouped net), x 2 FLOPs per MAC, x 3 for
a training step (forward, and backward to inputs and to weights).

The network is the paper's, with BatchNorm in place of LRN and PyTorch's default
initialisation (`--norm lrn` for the paper's normalisation): measured on the CPU,
the LRN net sits at chance on shapes for the first hundreds of steps (loss 2.30
after 120 steps of 32 images from the default initialisation; the paper's first
overshoots to ~30, then is back at 2.30), too long to show a falling loss in a
short check, while with BatchNorm the loss starts falling after ~60 steps (1.9
after 150). With --devices > 1 the BatchNorm layers are SyncBatchNorm.

Exit codes: 0 passed, or skipped because no CUDA GPU is visible (it says so);
1 failed (it says which check); 2 bad arguments. Under five minutes on one H100,
most of it generating the images on the CPU. `--cpu` runs the same path on the
CPU at a tiny scale (for the tests; its throughput means nothing).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

EXPERIMENT = "gpu-check"


def overrides(args: argparse.Namespace) -> list[str]:
    return [
        "model.arch=alexnet",
        f"model.norm={args.norm}",
        "model.init=default",
        "data.name=shapes",
        "data.image_size=227",
        f"data.train_size={args.train_size}",
        f"data.val_size={args.val_size}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={0 if args.cpu else args.workers}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.precision=bf16-mixed",
        "trainer.channels_last=true",
        f"trainer.accelerator={'cpu' if args.cpu else 'gpu'}",
        f"trainer.devices={args.devices}",
        f"trainer.log_every_n_steps={max(1, args.train_size // args.batch_size // 4)}",
    ]


def forward_macs(cfg) -> int:
    """Multiply-accumulates of one forward pass of one image, from the layer table."""
    from lightning_modules.networks import build_network
    from lightning_modules.summary import layer_table

    net = build_network(cfg.model, 10, 227)
    return sum(row["macs"] for row in layer_table(net, 227))


def history(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--val-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument("--workers", type=int, default=4, help="data.num_workers on the GPU")
    parser.add_argument("--devices", type=int, default=1, help="GPUs (DDP when > 1; SyncBatchNorm then)")
    parser.add_argument("--norm", default="batchnorm", help="model.norm (lrn learns too slowly for a short check; see above)")
    parser.add_argument("--cpu", action="store_true", help="the same path on the CPU, tiny: checks this script, not a GPU")
    args = parser.parse_intermixed_args(argv)

    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(f"gpu-check skipped: no CUDA GPU (torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on a machine with an NVIDIA GPU")
        return 0

    from ablations import tracking
    from ablations.train.assemble import check_devices
    from ablations.train.config import load_config
    from ablations.train.run import _rank, run
    from core.errors import USAGE_ERRORS

    try:
        cfg = load_config(overrides(args))
        check_devices(cfg)
    except USAGE_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    steps = args.epochs * (args.train_size // args.batch_size)
    if _rank() == 0:
        print(
            f"gpu-check: alexnet at 227 px, bf16-mixed, channels_last, on {args.devices} x {device}: "
            f"{args.epochs} epochs x {args.train_size // args.batch_size} steps of {args.batch_size} images",
            flush=True,
        )
    start = time.time()
    try:
        run_id = run(cfg, experiment=EXPERIMENT, run_name=f"alexnet-bf16-{device.replace(' ', '_')}", tags={"gpu": device})
    except Exception as err:
        print(f"gpu-check FAILED: training raised {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if _rank() != 0:
        return 0
    seconds = time.time() - start

    client = tracking.client()
    mlflow_run = client.get_run(run_id)
    losses = history(client, run_id, "train_loss")
    speeds = history(client, run_id, "train_img_per_s")
    failures = []
    if mlflow_run.info.status != "FINISHED":
        failures.append(f"the MLflow run {run_id} is {mlflow_run.info.status}, not FINISHED")
    if len(losses) != args.epochs or not all(math.isfinite(v) for v in losses):
        failures.append(f"expected {args.epochs} finite epoch losses in MLflow, got {losses}")
    elif not losses[-1] < 0.95 * losses[0]:
        failures.append(f"the training loss did not fall: {losses[0]:.4f} in epoch 1, {losses[-1]:.4f} in epoch {len(losses)}")
    if len(speeds) != args.epochs:
        failures.append(f"expected {args.epochs} train_img_per_s values, got {len(speeds)}")

    macs = forward_macs(cfg)
    steady = speeds[1:] or speeds  # the first epoch pays for start-up (cuDNN plans, workers)
    img_s = statistics.median(steady) if steady else float("nan")
    tflops = img_s * macs * 2 * 3 / 1e12
    peak = f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB on GPU 0" if torch.cuda.is_available() and not args.cpu else ""
    print(f"loss per epoch: {' '.join(f'{v:.3f}' for v in losses)}")
    print(f"throughput: {img_s:,.0f} images/s (median of epochs 2-{len(speeds)}; per epoch: {' '.join(f'{v:,.0f}' for v in speeds)})")
    print(f"achieved: {tflops:.1f} TFLOP/s ({macs / 1e9:.3f} GMACs forward per image x 2 FLOPs/MAC x 3 for a training step){peak}")
    print(f"MLflow run {run_id} ({mlflow_run.info.status}) in experiment '{EXPERIMENT}' at {tracking.tracking_uri()}; {steps} steps, {seconds:.0f} s in all")
    if failures:
        for f in failures:
            print(f"gpu-check FAILED: {f}", file=sys.stderr)
        return 1
    print("gpu-check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
