"""The networks: paper shapes and parameter counts, every registry entry, LRN vs its equation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from lightning_modules.layers import ACTIVATIONS, NORMS, POOLS, InplaceTanh, PaperLRN
from lightning_modules.networks import ARCHS, CIFAR_FC_HIDDEN, INITS, ModelConfig, build_network, input_size
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


def test_cifar_net_has_the_layers_18pct_trunk():
    net = build_network(ModelConfig(arch="cifar", groups=1), 10, 32)
    rows = {r["layer"]: r for r in layer_table(net, 32)}
    assert [rows[f"conv{i}"]["output"] for i in (1, 2, 3)] == ["32x32x32", "32x16x16", "64x8x8"]
    assert rows["fc4"]["output"] == "10"


def _conv_params(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cout * (cin // groups) * k * k + cout


def _fc_params(fin: int, fout: int) -> int:
    return fin * fout + fout


@pytest.mark.parametrize("groups", [1, 2])
def test_cifar_fc_puts_dropout_before_two_hidden_layers(groups):
    """The paper's placement (dropout before fc6 and fc7, each 4096 wide) on the cifar trunk:
    dropout -> fc4 -> act -> dropout -> fc5 -> act -> fc6, hidden width CIFAR_FC_HIDDEN."""
    h = CIFAR_FC_HIDDEN
    net = build_network(ModelConfig(arch="cifar_fc", groups=groups), 10, 32)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    layers = list(net.classifier.named_children())
    assert [n for n, _ in layers] == ["drop4", "fc4", "act4", "drop5", "fc5", "act5", "fc6"]
    drops = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Dropout)]
    assert len(_layers(net, nn.Dropout)) == 2 and len(drops) == 2
    after = [layers[i + 1][1] for i in drops]  # each dropout feeds a hidden layer, never the output layer
    assert all(isinstance(m, nn.Linear) and m.out_features == h for m in after)
    assert (net.classifier.fc4.in_features, net.classifier.fc6.out_features) == (64 * 4 * 4, 10)
    trunk = _conv_params(3, 32, 5) + _conv_params(32, 32, 5, groups) + _conv_params(32, 64, 5, groups)
    by_hand = trunk + _fc_params(64 * 4 * 4, h) + _fc_params(h, h) + _fc_params(h, 10)
    assert by_hand == {1: 871_914, 2: 833_514}[groups]  # at h = 512
    assert sum(p.numel() for p in net.parameters()) == by_hand


def test_cifar_fc_has_the_cifar_trunk_and_initialises_it_alike():
    """The two networks differ only after the convolutions: at one seed, PyTorch's init gives the
    same trunk (it is built first); the other inits draw after the whole network is built, so their
    trunks differ in the draws but not in the rule (the biases say which: all zero, as in cifar)."""
    nets = {}
    for arch in ("cifar", "cifar_fc"):
        torch.manual_seed(0)
        nets[arch] = build_network(ModelConfig(arch=arch, init="default"), 10, 32).features.state_dict()
    a, b = nets.values()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for init in INITS:
        if init != "default":
            trunks = [build_network(ModelConfig(arch=arch, init=init), 10, 32).features for arch in ("cifar", "cifar_fc")]
            biases = [{n: m.bias for n, m in t.named_children() if isinstance(m, nn.Conv2d)} for t in trunks]
            assert biases[0].keys() == biases[1].keys() and all(torch.equal(biases[0][n], biases[1][n]) for n in biases[0]), init
    assert build_network(ModelConfig(arch="cifar_fc"), 10, 32).bias_one == {"fc4", "fc5"}  # AlexNet's fc6, fc7


@pytest.mark.parametrize("arch", ["cifar", "cifar_fc"])
def test_authors_cifar_init_is_layers_18pct(arch):
    """conv1 N(0, 1e-4), every other weight N(0, 0.01), biases 0 (each layer has at least 2,400
    weights: the sample std is within about 3% of sigma, so 10% is a loose bound)."""
    torch.manual_seed(0)
    net = build_network(ModelConfig(arch=arch, init="authors_cifar"), 10, 32)
    weighted = [(n.split(".")[-1], m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weighted[0][0] == "conv1" and len(weighted) == {"cifar": 4, "cifar_fc": 6}[arch]
    for name, m in weighted:
        sigma = 1e-4 if name == "conv1" else 0.01
        assert m.weight.std().item() == pytest.approx(sigma, rel=0.1), name
        assert abs(m.weight.mean().item()) < 0.1 * sigma, name
        assert torch.all(m.bias == 0), name


def test_summary_ends_with_the_totals():
    lines = format_table(build_network(ModelConfig(), 1000, 227), 227).splitlines()
    assert lines[-3:] == ["Total params: 60,965,224", "Trainable params: 60,965,224", "Non-trainable params: 0"]


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="data.image_size=32 is too small for model.arch=alexnet"):
        build_network(ModelConfig(arch="alexnet"), 10, 32)


def _variants():
    for arch in ARCHS:
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
    size = {"alexnet": 99}.get(arch, input_size(arch))  # alexnet: the smallest size it accepts, to keep the test fast
    net = build_network(ModelConfig(arch=arch, **toggle), 7, size)
    x = torch.randn(3, 3, size, size)
    out = net(x)
    assert out.shape == (3, 7)
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


@pytest.mark.parametrize("beta", [0.75, 0.6])  # the paper's (two roots) and any other (a power)
def test_lrn_gradient_matches_the_equations(beta):
    a = (torch.randn(2, 7, 3, 3, dtype=torch.float64) * 30).requires_grad_()
    torch.autograd.gradcheck(PaperLRN(beta=beta), (a,))
    weights = torch.randn_like(a)  # a loss whose gradient differs per map, so a wrong window shows
    (grad,) = torch.autograd.grad((PaperLRN(beta=beta)(a) * weights).sum(), a)
    (expected,) = torch.autograd.grad((_lrn_by_the_equation(a, beta=beta) * weights).sum(), a)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    # channels_last, as the suite trains on the CPU: the same values and gradients
    last = a.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    (grad_last,) = torch.autograd.grad((PaperLRN(beta=beta)(last) * weights).sum(), last)
    torch.testing.assert_close(grad_last, expected, rtol=1e-10, atol=1e-12)


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


# ------------------------------------------------------------------ every toggle value reaches the network

SIZES = {"alexnet": 99, "cifar": 32, "cifar_fc": 32, "tutorial": 224}
ACTIVATION_TYPES = {"relu": nn.ReLU, "tanh": InplaceTanh, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


def _net(arch: str, **toggle):
    return build_network(ModelConfig(arch=arch, **toggle), 10, SIZES[arch])


def _layers(net, kind):
    return [m for m in net.modules() if isinstance(m, kind)]


def test_inplace_tanh_gives_tanh_and_its_gradient():
    """The suite's tanh overwrites the convolution's output: the same values and gradients
    as torch's out-of-place layer."""
    torch.manual_seed(0)
    conv, x = nn.Conv2d(3, 4, 3), torch.randn(2, 3, 8, 8)
    outs, grads = [], []
    for act in (nn.Tanh(), InplaceTanh()):
        conv.zero_grad()
        y = act(conv(x))
        (y * torch.arange(y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append(conv.weight.grad.clone())
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    assert isinstance(InplaceTanh(), nn.Tanh)  # what tools.saturation hooks


def test_every_activation_value_reaches_every_activation_layer():
    """Registry-driven: a new entry is covered without a new test."""
    kinds = {name: type(factory()) for name, factory in ACTIVATIONS.items()}
    assert len(set(kinds.values())) == len(kinds), f"two activation values make the same layer: {kinds}"
    assert {k: kinds[k] for k in ACTIVATION_TYPES} == ACTIVATION_TYPES  # the paper's and the common ones, by name
    for arch in ARCHS:
        for name, kind in kinds.items():
            net = _net(arch, activation=name)
            acts = [m for n, m in net.named_modules() if n.split(".")[-1].startswith("act")]
            assert acts and all(type(m) is kind for m in acts), (arch, name, {type(m) for m in acts})
    assert _layers(_net("cifar", activation="leaky_relu"), nn.LeakyReLU)[0].negative_slope == 0.01


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_norm_value_reaches_every_place_the_arch_normalises(arch):
    places = {"alexnet": 2, "cifar": 2, "cifar_fc": 2, "tutorial": 5}[arch]  # normalisations after convolutions
    for name, factory in NORMS.items():
        kind = type(factory(8, 2, 0.1, 1e-5))
        norms = [m for n, m in _net(arch, norm=name).named_modules() if n.split(".")[-1].startswith("norm")]
        conv_norms = norms[:places]
        assert len(conv_norms) == places and all(type(m) is kind for m in conv_norms), (arch, name, [type(m) for m in norms])
    # the paper's entries by name: its LRN, BatchNorm (1-D after the tutorial's dense layers), nothing
    lrn, bn, none = (_net(arch, norm=n) for n in ("lrn", "batchnorm", "none"))
    assert len(_layers(lrn, PaperLRN)) == places and not _layers(lrn, nn.modules.batchnorm._BatchNorm)
    assert len(_layers(bn, nn.BatchNorm2d)) == places and not _layers(bn, PaperLRN)
    assert len(_layers(bn, nn.BatchNorm1d)) == (3 if arch == "tutorial" else 0)
    assert not _layers(none, PaperLRN) and not _layers(none, nn.modules.batchnorm._BatchNorm)


def test_batchnorm_settings_reach_every_batchnorm_layer():
    net = _net("tutorial", norm="batchnorm", bn_momentum=0.01, bn_eps=1e-3)
    layers = _layers(net, nn.modules.batchnorm._BatchNorm)
    assert len(layers) == 8 and all(m.momentum == 0.01 and m.eps == 1e-3 for m in layers)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_pool_value_sets_kernel_and_stride(arch):
    shapes = {name: (factory(False).kernel_size, factory(False).stride) for name, factory in POOLS.items()}
    assert len(set(shapes.values())) == len(shapes), shapes
    assert shapes["overlapping"] == (3, 2) and shapes["non_overlapping"] == (2, 2)  # the paper's z=3 vs z=2, s=2
    for name, shape in shapes.items():
        pools = _layers(_net(arch, pool=name), nn.MaxPool2d)
        assert pools and all((p.kernel_size, p.stride) == shape for p in pools), (arch, name)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_dropout_probability_reaches_every_dropout_layer(arch):
    for p in (0.0, 0.3, 0.5):
        drops = _layers(_net(arch, dropout=p), nn.Dropout)
        assert drops and all(d.p == p for d in drops), (arch, p)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_groups_split_the_papers_grouped_convolutions(arch):
    paper, small = {"conv2", "conv4", "conv5"}, {"conv2", "conv3"}
    grouped = {"alexnet": paper, "cifar": small, "cifar_fc": small, "tutorial": paper}[arch]
    for g in (1, 2):
        convs = {n.split(".")[-1]: m for n, m in _net(arch, groups=g).named_modules() if isinstance(m, nn.Conv2d)}
        assert {n for n, m in convs.items() if m.groups == 2} == (grouped if g == 2 else set())


@pytest.mark.parametrize("arch", list(ARCHS))
def test_init_values(arch):
    torch.manual_seed(0)
    paper, keras, default = (_net(arch, init=i) for i in ("paper", "keras", "default"))
    for net in (paper, keras):
        for m in _layers(net, (nn.Conv2d, nn.Linear)):
            if net is paper:
                assert abs(m.weight.std().item() - 0.01) < 0.002
            else:  # Glorot-uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out))
                fan_in = m.weight[0].numel()
                fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
                bound = (6 / (fan_in + fan_out)) ** 0.5
                assert 0.9 * bound < m.weight.abs().max().item() <= bound * (1 + 1e-6)
                assert torch.all(m.bias == 0)
    ones = {n.split(".")[-1] for n, m in paper.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and torch.all(m.bias == 1)}
    assert ones == paper.bias_one
    assert not any(torch.all(m.bias == 0) or torch.all(m.bias == 1) for m in _layers(default, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("init, normalize, saturated", [("paper", "paper", True), ("default", "standard", False)])
def test_saturation_of_tanh_units_depends_on_inputs_and_init(init, normalize, saturated):
    """tools.saturation (and every tanh run, lightning_modules.diagnostics) counts |tanh| > 0.9 per layer; conv1's count is checked against
    tanh(conv1(x)) computed here. The paper's N(0, 0.01) on raw pixels minus the mean
    image starts most of conv1 saturated; PyTorch's init on standardised inputs does not."""
    from ablations.train import assemble
    from ablations.train.config import load_config
    from tools.saturation import saturation

    cfg = load_config(["model.activation=tanh", f"model.init={init}", f"data.normalize={normalize}"], "smoke")
    dm = assemble.datamodule(cfg)
    dm.setup("fit")
    module = assemble.module(cfg, dm)
    images = dm.splits.train.images
    fractions = saturation(module, images)
    assert list(fractions) == ["act1", "act2", "act3"]
    with torch.no_grad():
        conv1 = torch.tanh(module.net.features.conv1(module.prepare(images, training=False)))
    assert fractions["act1"] == pytest.approx(float((conv1.abs() > 0.9).float().mean()))
    assert (fractions["act1"] > 0.5) is saturated and (fractions["act1"] < 0.05) is not saturated
    assert not module.net.features.act1._forward_hooks  # the hooks are removed


@pytest.mark.parametrize("normalize, active", [("standard", False), ("paper", True)])
def test_lrn_diagnostic_is_alpha_times_the_window_sum_over_k(normalize, active):
    """The LRN diagnostic (α·Σa²/k per unit, the activity's share of the paper's denominator) against
    the sum written out here over conv1's output; with standardised inputs it is near 0 (LRN then
    divides by a constant k^β), with raw pixels minus the mean it is not."""
    from ablations.analysis.study import LRN_ACTIVE
    from ablations.train import assemble
    from ablations.train.config import load_config
    from lightning_modules.diagnostics import measure

    cfg = load_config(["model.norm=lrn", "model.init=paper", f"data.normalize={normalize}"], "smoke")
    dm = assemble.datamodule(cfg)
    dm.setup("fit")
    module = assemble.module(cfg, dm)
    x = module.prepare(dm.splits.train.images[:64], training=False)
    values = measure(module, [x])
    lrn1 = next(k for k in values if k.startswith("lrn_") and k.endswith("_ratio_mean")).removesuffix("_ratio_mean")
    with torch.no_grad():  # the input of the first LRN layer: the layers before it, in order
        a = x
        for name, layer in module.net.features.named_children():
            if name == "norm1":
                break
            a = layer(a)
        a = a.square()
        padded = torch.nn.functional.pad(a, (0, 0, 0, 0, 2, 2))
        window = sum(padded[:, i : i + a.shape[1]] for i in range(5))
        ratio = 1e-4 * window / 2.0
    assert values[f"{lrn1}_ratio_mean"] == pytest.approx(float(ratio.mean()), rel=1e-4)
    assert values[f"{lrn1}_ratio_max"] == pytest.approx(float(ratio.max()), rel=1e-4)
    assert (values[f"{lrn1}_ratio_p99"] > LRN_ACTIVE) is active
