"""How saturated a network's tanh units are: for each tanh layer, the fraction of its
outputs with |y| > 0.9 on training images, at initialisation or for a run's checkpoint.

    python -m tools.saturation [--profile cifar] [--checkpoint PATH] [--images 1024] [key=value ...]

The paper's argument for ReLU is that saturating nonlinearities learn slowly; whether a
tanh network starts saturated depends on its inputs and initialisation together. With
`model.init=paper data.normalize=paper` (N(0, 0.01) on raw pixels minus the mean image)
most of conv1's outputs start saturated; with PyTorch's initialisation on standardised
inputs almost none do. The images are the first --images of the training split, prepared
as for validation (no augmentation); the network is in eval mode.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ablations.train import assemble
from ablations.train.config import load_config
from lightning_modules.diagnostics import SATURATED, measure


def saturation(module: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """{tanh layer: fraction of outputs with |y| > 0.9} over uint8 `images` (the measurement every
    run logs at its start and end: lightning_modules.diagnostics)."""
    values = measure(module, (module.prepare(batch, training=False) for batch in images.split(256)))
    return {k.removeprefix("tanh_").removesuffix("_saturated"): v for k, v in values.items() if k.startswith("tanh_")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--checkpoint", help="a run's checkpoint (checkpoints/<run id>/last.ckpt); default: the initial weights")
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args(argv)
    cfg = load_config(["model.activation=tanh", f"data.train_size={args.images}", *args.overrides], args.profile)
    dm = assemble.datamodule(cfg)
    dm.setup("fit")
    torch.manual_seed(cfg.seed)
    module = assemble.module(cfg, dm)
    if args.checkpoint:
        module.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    fractions = saturation(module, dm.splits.train.images[: args.images])
    print(f"init={cfg.model.init} data.normalize={cfg.data.normalize} weights={args.checkpoint or 'initial'}")
    for name, fraction in fractions.items():
        print(f"  {name}: {fraction:.1%} of outputs with |y| > {SATURATED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
