"""The networks: paper shapes and parameter counts, every registry entry, LRN vs its equation."""

from __future__ import annotations

import pytest
import torch

from ablations.config import ConfigError, ModelConfig
from lightning_modules.layers import ACTIVATIONS, NORMS, POOLS, PaperLRN
from lightning_modules.networks import INPUT_SIZE, build_network
from lightning_modules.summary import format_table, layer_table


@pytest.mark.parametrize("groups, params", [(2, 60_965_224), (1, 62_378_344)])
def test_paper_parameter_counts(groups, params):
    net = build_network(ModelConfig(groups=groups), 1000, 227)
    assert sum(p.numel() for p in net.parameters()) == params


def test_paper_shapes_and_macs():
    rows = {r["layer"]: r for r in layer_table(build_network(ModelConfig(), 1000, 227), 227)}
    assert rows["conv1"]["output"] == "96x55x55"
    assert rows["pool1"]["output"] == "96x27x27"
    assert rows["pool2"]["output"] == "256x13x13"
    assert rows["pool5"]["output"] == "256x6x6"
    assert rows["fc8"]["output"] == "1000"
    macs = sum(r["macs"] for r in rows.values())
    assert 0.70e9 < macs < 0.74e9  # the paper's grouped net: about 0.72 GMACs
    ungrouped = sum(r["macs"] for r in layer_table(build_network(ModelConfig(groups=1), 1000, 227), 227))
    assert 1.10e9 < ungrouped < 1.16e9


def test_non_overlapping_pooling_keeps_the_paper_shapes():
    rows = {r["layer"]: r for r in layer_table(build_network(ModelConfig(pool="non_overlapping"), 10, 227), 227)}
    assert rows["pool5"]["output"] == "256x6x6"


def test_cifar_net_is_layers_18pct():
    net = build_network(ModelConfig(arch="cifar", groups=1), 10, 32)
    rows = {r["layer"]: r for r in layer_table(net, 32)}
    assert [rows[f"conv{i}"]["output"] for i in (1, 2, 3)] == ["32x32x32", "32x16x16", "64x8x8"]
    assert rows["fc4"]["output"] == "10"


def test_summary_ends_with_total_params():
    assert format_table(build_network(ModelConfig(), 1000, 227), 227).splitlines()[-1] == "total params: 60965224"


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="data.image_size=32 is too small for model.arch=alexnet"):
        build_network(ModelConfig(arch="alexnet"), 10, 32)


def _variants():
    for arch in INPUT_SIZE:
        for act in ACTIVATIONS:
            yield arch, {"activation": act}
        for norm in NORMS:
            yield arch, {"norm": norm}
        for pool in POOLS:
            yield arch, {"pool": pool}
        for extra in ({"groups": 1}, {"init": "default"}, {"dropout": 0.0}):
            yield arch, extra


@pytest.mark.parametrize("arch, toggle", list(_variants()), ids=lambda v: str(v))
def test_every_registry_entry_forward_backward(arch, toggle):
    torch.manual_seed(0)
    size = INPUT_SIZE[arch] if arch == "cifar" else 99  # alexnet: the smallest size it accepts, to keep the test fast
    net = build_network(ModelConfig(arch=arch, **toggle), 7, size)
    x = torch.randn(2, 3, size, size)
    out = net(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_paper_init():
    net = build_network(ModelConfig(init="paper"), 1000, 227)
    f, c = net.features, net.classifier
    for layer in (f.conv1, f.conv2, f.conv3, f.conv4, f.conv5, c.fc6, c.fc7, c.fc8):
        assert abs(layer.weight.std().item() - 0.01) < 0.001
        assert abs(layer.weight.mean().item()) < 0.001
    for layer in (f.conv2, f.conv4, f.conv5, c.fc6, c.fc7):
        assert torch.all(layer.bias == 1)
    for layer in (f.conv1, f.conv3, c.fc8):
        assert torch.all(layer.bias == 0)
    default = build_network(ModelConfig(init="default"), 1000, 227)
    assert not torch.all(default.features.conv2.bias == 1)


def _lrn_by_the_equation(a: torch.Tensor, n=5, k=2.0, alpha=1e-4, beta=0.75) -> torch.Tensor:
    """b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta, written out."""
    N = a.shape[1]
    b = torch.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        s = sum(a[:, j] ** 2 for j in range(lo, hi + 1))
        b[:, i] = a[:, i] / (k + alpha * s) ** beta
    return b


def test_lrn_gradient_matches_the_equations():
    a = (torch.randn(2, 7, 3, 3, dtype=torch.float64) * 30).requires_grad_()
    torch.autograd.gradcheck(PaperLRN(), (a,))
    (grad,) = torch.autograd.grad(PaperLRN()(a).square().sum(), a)
    (expected,) = torch.autograd.grad(_lrn_by_the_equation(a).square().sum(), a)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_lrn_matches_the_paper_equation():
    torch.manual_seed(0)
    a = torch.randn(2, 12, 5, 5, dtype=torch.float64) * 30  # large activations, so alpha matters
    expected = _lrn_by_the_equation(a)
    got = PaperLRN()(a)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # the CUDA path: torch's kernel with alpha * n
    fused = torch.nn.functional.local_response_norm(a, 5, alpha=1e-4 * 5, beta=0.75, k=2.0)
    torch.testing.assert_close(fused, expected, rtol=1e-10, atol=1e-12)
    if torch.cuda.is_available():
        torch.testing.assert_close(PaperLRN()(a.cuda()).cpu(), expected, rtol=1e-10, atol=1e-12)
    # torch's own layer with the paper's alpha as written is not the paper's formula
    naive = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a)
    assert not torch.allclose(naive, expected, rtol=1e-4)
