"""The LightningModule's arithmetic: optimiser and schedule, ten crops, top-k errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.module import AlexNetModule, top_k_errors
from lightning_modules.networks import ModelConfig, build_network
from lightning_modules.optim import OptimConfig, make_optimizer, param_groups
from tests.helpers import SMOKE, history, only_run, run_cli


def test_weight_decay_on_weights_only():
    net = build_network(ModelConfig(arch="tutorial", norm="batchnorm"), 17, 224)
    decay, no_decay = param_groups(net, 5e-4)
    weights = {id(m.weight) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {id(p) for p in decay["params"]} == weights and decay["weight_decay"] == 5e-4
    others = [p for p in net.parameters() if id(p) not in weights]  # biases, BatchNorm scales and shifts
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in others} and no_decay["weight_decay"] == 0.0
    assert len(others) == 9 + 2 * 8  # a bias per conv and dense layer, two per BatchNorm layer


def test_sgd_is_the_papers_update():
    """v <- 0.9 v - 0.0005 lr w - lr g;  w <- w + v, written out by hand for two steps."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    w0 = layer.weight.detach().clone()
    opt = make_optimizer(OptimConfig(lr=0.1), layer)["optimizer"]
    x = torch.randn(5, 4)
    w, v = w0.clone(), torch.zeros_like(w0)
    for _ in range(2):
        opt.zero_grad()
        layer(x).square().mean().backward()
        g = layer.weight.grad.detach().clone()
        v = 0.9 * v - 0.0005 * 0.1 * w - 0.1 * g
        w = w + v
        opt.step()
        torch.testing.assert_close(layer.weight.detach(), w)


def test_adam_settings():
    opt = make_optimizer(OptimConfig(name="adam", lr=1e-3, momentum=0.9, eps=1e-7, weight_decay=0.0), nn.Linear(2, 2))["optimizer"]
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-7
    assert isinstance(make_optimizer(OptimConfig(), nn.Linear(2, 2))["optimizer"], torch.optim.SGD)
    assert make_optimizer(OptimConfig(momentum=0.8), nn.Linear(2, 2))["optimizer"].param_groups[0]["momentum"] == 0.8


@pytest.mark.slow
def test_plateau_schedule_drops_the_logged_lr_by_ten_three_times_at_most(store):
    """A learning rate too small to change anything: val_err1 never improves, so with
    patience 0 the rate drops after each epoch, by 10, and stops after three drops."""
    proc = run_cli("ablations.train", *SMOKE, "trainer.max_epochs=6", "optim.lr=1e-12", "optim.lr_patience=0", "model.dropout=0", "data.augment=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(store)
    lrs = [v for _, v in history(store, run.info.run_id, "lr")]
    vals = {v for _, v in history(store, run.info.run_id, "val_err1")}
    assert len(vals) == 1, f"val_err1 changed, the test's premise fails: {vals}"
    assert lrs[0] == pytest.approx(1e-12)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert all(r == pytest.approx(1.0) or r == pytest.approx(0.1) for r in ratios), lrs
    assert sum(r == pytest.approx(0.1) for r in ratios) == 3, lrs
    assert lrs[-1] == pytest.approx(1e-15)


class _Fixed(nn.Module):
    """A 'network' whose logits are the input's first row of numbers."""

    def forward(self, x):
        return x[:, 0, 0, :3]


def test_ten_crops_average_the_softmax_over_crops():
    module = AlexNetModule(_Fixed(), nn.Identity(), lambda net: {})
    x = torch.randn(2, 10, 1, 1, 3)  # 2 images x 10 crops
    expected = x[:, :, 0, 0, :].softmax(-1).mean(1).log()
    torch.testing.assert_close(module(x), expected)
    # not the average of the logits
    assert not torch.allclose(module(x), x[:, :, 0, 0, :].mean(1).log_softmax(-1))


def test_top_1_and_top_5_errors_of_a_hand_made_batch():
    logits = torch.tensor(
        [
            [9, 8, 7, 6, 5, 4, 3],  # label 0: top-1 right
            [9, 8, 7, 6, 5, 4, 3],  # label 4: top-1 wrong, within the top 5
            [9, 8, 7, 6, 5, 4, 3],  # label 5: outside the top 5
            [1, 2, 3, 4, 5, 6, 7],  # label 6: top-1 right
            [1, 2, 3, 4, 5, 6, 7],  # label 1: outside the top 5
        ],
        dtype=torch.float,
    )
    labels = torch.tensor([0, 4, 5, 6, 1])
    err1, err5 = top_k_errors(logits, labels)
    assert (int(err1), int(err5)) == (3, 2)
    assert [int(e) for e in top_k_errors(logits[:, :3], labels.clamp(max=2))] == [3, 0]  # fewer than 5 classes: top-3
