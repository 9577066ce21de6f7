"""The per-layer table that the seed tutorial builds by hand, and Keras's totals.

Parameters are counted as Keras counts them: a BatchNorm layer of C channels has
4C (scale and shift, trainable; moving mean and variance, not trainable).
"""

from __future__ import annotations

import torch
from torch import nn


def _geometry(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        g = f" g{m.groups}" if m.groups > 1 else ""
        return f"{m.kernel_size[0]}/{m.stride[0]}/{m.padding[0]}{g}"
    if isinstance(m, nn.MaxPool2d):
        return f"{m.kernel_size}/{m.stride}/{m.padding}"
    return ""


def _macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        return out.numel() * k
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features
    return 0


def statistics_count(m: nn.Module) -> int:
    """Values a layer keeps but does not train: BatchNorm's moving mean and variance."""
    return sum(b.numel() for name, b in m.named_buffers() if name.split(".")[-1] in ("running_mean", "running_var"))


def trainable_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def layer_table(net: nn.Module, image_size: int) -> list[dict]:
    """One row per leaf layer: name, type, k/s/p, output shape, params (Keras's
    count), MACs (batch of 1)."""
    rows: list[dict] = []
    hooks = []
    for name, module in net.named_modules():
        if len(list(module.children())) == 0:

            def hook(m, _inp, out, name=name):
                rows.append(
                    {
                        "layer": name.split(".")[-1],
                        "type": type(m).__name__,
                        "k/s/p": _geometry(m),
                        "output": "x".join(str(d) for d in out.shape[1:]),
                        "params": trainable_count(m) + statistics_count(m),
                        "macs": _macs(m, out),
                    }
                )

            hooks.append(module.register_forward_hook(hook))
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def format_table(net: nn.Module, image_size: int) -> str:
    rows = layer_table(net, image_size)
    header = f"{'layer':<9}{'type':<18}{'k/s/p':<11}{'output':<14}{'params':>13}{'MACs':>16}"
    lines = [header, "-" * len(header), f"{'input':<9}{'':<18}{'':<11}{f'3x{image_size}x{image_size}':<14}"]
    for r in rows:
        lines.append(f"{r['layer']:<9}{r['type']:<18}{r['k/s/p']:<11}{r['output']:<14}{r['params']:>13,}{r['macs']:>16,}")
    trainable, stats = trainable_count(net), statistics_count(net)
    total_macs = sum(r["macs"] for r in rows)
    lines.append("-" * len(header))
    lines.append(f"forward MACs per image: {total_macs:,} ({total_macs / 1e9:.3f} G)")
    lines.append(f"Total params: {trainable + stats:,}")
    lines.append(f"Trainable params: {trainable:,}")
    lines.append(f"Non-trainable params: {stats:,}" + (" (BatchNorm moving mean and variance)" if stats else ""))
    return "\n".join(lines)
