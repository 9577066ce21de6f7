"""Whether a toggle acted: measurements of the network's own activity on a fixed batch of training
images, at the start and at the end of training.

- LRN: per layer, the distribution over units of α·Σa²/k, the part of the paper's denominator
  k + α·Σa² (eq. 3) that depends on the activity a. Near 0 everywhere, the layer divides by k^β
  whatever its input: a constant scale, not a normalisation. Logged as
  `lrn_<layer>_ratio_{mean,p99,max}_{start,end}`.
- tanh: per layer, the fraction of outputs with |y| > 0.9 (saturated: gradient under 0.19 of its
  largest), logged as `tanh_<layer>_saturated_{start,end}`.

The images: the first `images` of the fixed clean training subset (`datamodule.clean_train_loader`),
prepared as validation images are, the network in eval mode; measured on rank 0 alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from torch import nn

from lightning_modules.layers import PaperLRN, window_sum

SATURATED = 0.9
IMAGES = 256


def _name(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


def measure(module: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """{metric name without _start/_end: value} over batches of prepared images, in eval mode."""
    lrn: dict[str, list[torch.Tensor]] = {}
    tanh: dict[str, list[torch.Tensor]] = {}

    def on_lrn(layer: PaperLRN, name: str):
        def hook(_m, inputs, _out):
            a = inputs[0].detach().float()
            term = window_sum(a.square(), layer.size // 2, (layer.size - 1) // 2) * layer.alpha / layer.k
            lrn.setdefault(name, []).append(term.flatten())

        return hook

    hooks = []
    for full, layer in module.named_modules():
        if isinstance(layer, PaperLRN):
            hooks.append(layer.register_forward_hook(on_lrn(layer, _name(full))))
        elif isinstance(layer, nn.Tanh):
            hooks.append(layer.register_forward_hook(lambda _m, _i, out, n=_name(full): tanh.setdefault(n, []).append(out.detach().abs().flatten())))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for x in batches:
                module(x)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    out: dict[str, float] = {}
    for name, parts in lrn.items():
        v = torch.cat(parts)
        sample = v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[:1_000_000]] if len(v) > 1_000_000 else v
        out |= {
            f"lrn_{name}_ratio_mean": float(v.mean()),
            f"lrn_{name}_ratio_p99": float(torch.quantile(sample, 0.99)),
            f"lrn_{name}_ratio_max": float(v.max()),
        }
    for name, parts in tanh.items():
        out[f"tanh_{name}_saturated"] = float((torch.cat(parts) > SATURATED).float().mean())
    return out


class ToggleDiagnostics(L.Callback):
    """Logs `measure` at the start of training (`_start`) and at the end of fit (`_end`)."""

    def __init__(self, images: int = IMAGES):
        self.images = images

    def _log(self, trainer: L.Trainer, module: L.LightningModule, when: str, step: int) -> None:
        if not trainer.is_global_zero or trainer.logger is None:
            return
        if not any(isinstance(m, (PaperLRN, nn.Tanh)) for m in module.modules()):
            return
        loader = trainer.datamodule.clean_train_loader(self.images)
        batches = (module.prepare(images.to(module.device), training=False) for images, _ in loader)
        values = measure(module, batches)
        trainer.logger.log_metrics({f"{k}_{when}": v for k, v in values.items()}, step=step)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch == 0 and trainer.global_step == 0:  # not again when a run resumes
            self._log(trainer, module, "start", 0)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._log(trainer, module, "end", max(trainer.current_epoch - 1, 0))
