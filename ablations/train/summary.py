"""Print the per-layer table of a configuration's network.

python -m ablations.train.summary [--profile NAME] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from ablations.train import assemble
from ablations.train.config import load_config
from core.errors import run_command


def main(argv: list[str] | None = None) -> int:
    from data.registry import class_count
    from lightning_modules.networks import build_network
    from lightning_modules.summary import format_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--profile", default=None)
    args = parser.parse_intermixed_args(argv)
    cfg = load_config(args.overrides, args.profile)
    size = assemble.image_size(cfg)
    classes = cfg.model.num_classes or class_count(cfg.data)
    net = build_network(cfg.model, classes, size)
    m = cfg.model
    print(f"{m.arch}: activation={m.activation} norm={m.norm} pool={m.pool} dropout={m.dropout} groups={m.groups} init={m.init} classes={classes} input={size}")
    print(format_table(net, size))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
