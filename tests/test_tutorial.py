"""The tutorial's Keras AlexNet (shared/seed/), layer by layer as its code is written,
its parameter count derived independently of the summary code, and its recipe."""

from __future__ import annotations

import pytest
from torch import nn

from ablations.train import assemble
from ablations.train.config import load_config
from core.errors import ConfigError
from lightning_modules.networks import ModelConfig, build_network
from lightning_modules.summary import format_table, layer_table
from tests.helpers import FLOWERS17, SMOKE, make_flowers17, only_run, run_cli, show

# The tutorial's model.add(...) calls, in order: (Keras layer, its arguments, output shape at 224 px)
KERAS = [
    ("Conv2D", dict(filters=96, kernel=11, stride=4), (96, 54, 54)),
    ("Activation", "relu", (96, 54, 54)),
    ("MaxPooling2D", dict(pool=2, stride=2), (96, 27, 27)),
    ("BatchNormalization", None, (96, 27, 27)),
    ("Conv2D", dict(filters=256, kernel=5, stride=1), (256, 23, 23)),
    ("Activation", "relu", (256, 23, 23)),
    ("MaxPooling2D", dict(pool=2, stride=2), (256, 11, 11)),
    ("BatchNormalization", None, (256, 11, 11)),
    ("Conv2D", dict(filters=384, kernel=3, stride=1), (384, 9, 9)),
    ("Activation", "relu", (384, 9, 9)),
    ("BatchNormalization", None, (384, 9, 9)),
    ("Conv2D", dict(filters=384, kernel=3, stride=1), (384, 7, 7)),
    ("Activation", "relu", (384, 7, 7)),
    ("BatchNormalization", None, (384, 7, 7)),
    ("Conv2D", dict(filters=256, kernel=3, stride=1), (256, 5, 5)),
    ("Activation", "relu", (256, 5, 5)),
    ("MaxPooling2D", dict(pool=2, stride=2), (256, 2, 2)),
    ("BatchNormalization", None, (256, 2, 2)),
    ("Flatten", None, (1024,)),
    ("Dense", 4096, (4096,)),
    ("Activation", "relu", (4096,)),
    ("Dropout", 0.4, (4096,)),
    ("BatchNormalization", None, (4096,)),
    ("Dense", 4096, (4096,)),
    ("Activation", "relu", (4096,)),
    ("Dropout", 0.4, (4096,)),
    ("BatchNormalization", None, (4096,)),
    ("Dense", 1000, (1000,)),
    ("Activation", "relu", (1000,)),
    ("Dropout", 0.4, (1000,)),
    ("BatchNormalization", None, (1000,)),
    ("Dense", 17, (17,)),  # softmax: in the cross-entropy loss
]


def keras_counts() -> tuple[int, int]:
    """(trainable, non-trainable) parameters from the layer list alone, by Keras's rules:
    a convolution (k*k*in + 1)*filters, a dense layer (in + 1)*out, BatchNorm 2C + 2C."""
    trainable = stats = 0
    channels = 3
    for kind, arg, shape in KERAS:
        if kind == "Conv2D":
            trainable += (arg["kernel"] ** 2 * channels + 1) * arg["filters"]
        elif kind == "Dense":
            trainable += (channels + 1) * arg
        elif kind == "BatchNormalization":
            trainable += 2 * shape[0]
            stats += 2 * shape[0]
        channels = shape[0]
    return trainable, stats


def tutorial_net():
    cfg = load_config(["model.arch=tutorial", "model.num_classes=17"])  # the architecture's own choices
    return build_network(cfg.model, 17, assemble.image_size(cfg)), cfg


def test_the_network_layer_by_layer():
    net, cfg = tutorial_net()
    assert assemble.image_size(cfg) == 224
    leaves = [m for m in net.modules() if len(list(m.children())) == 0]
    rows = layer_table(net, 224)
    assert len(leaves) == len(rows) == len(KERAS)
    for (kind, arg, shape), module, row in zip(KERAS, leaves, rows):
        assert row["output"] == "x".join(map(str, shape)), (kind, row)
        if kind == "Conv2D":
            assert isinstance(module, nn.Conv2d) and module.out_channels == arg["filters"]
            assert module.kernel_size == (arg["kernel"],) * 2 and module.stride == (arg["stride"],) * 2
            assert module.padding == (0, 0) and module.groups == 1  # 'valid'
        elif kind == "MaxPooling2D":
            assert isinstance(module, nn.MaxPool2d) and (module.kernel_size, module.stride, module.padding) == (2, 2, 0)
        elif kind == "BatchNormalization":
            assert isinstance(module, nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)
            assert module.momentum == pytest.approx(0.01) and module.eps == pytest.approx(1e-3)  # Keras: momentum 0.99, epsilon 1e-3
        elif kind == "Dense":
            assert isinstance(module, nn.Linear) and module.out_features == arg
            assert module.bias.abs().max() == 0  # Keras's zeros
        elif kind == "Dropout":
            assert isinstance(module, nn.Dropout) and module.p == pytest.approx(arg)
        elif kind == "Activation":
            assert isinstance(module, nn.ReLU)
        else:
            assert isinstance(module, nn.Flatten)


def test_the_totals_are_those_of_the_code_not_of_the_printed_table():
    trainable, stats = keras_counts()
    assert (trainable, stats, trainable + stats) == (28_862_065, 21_136, 28_883_201)
    net, _ = tutorial_net()
    assert format_table(net, 224).splitlines()[-3:] == [
        f"Total params: {trainable + stats:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {stats:,} (BatchNorm moving mean and variance)",
    ]
    # the rows the tutorial prints, which agree with its code
    params = {r["layer"]: r["params"] for r in layer_table(net, 224)}
    assert (params["fc8"], params["norm8"], params["fc9"]) == (4_097_000, 4_000, 17_017)


def test_make_summary_prints_the_tutorials_totals():
    proc = run_cli("ablations.train.summary", "model.arch=tutorial", "model.num_classes=17")
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip().splitlines()[-3] == "Total params: 28,883,201"


def test_an_input_too_small_for_it_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"data.image_size=64 is too small for model.arch=tutorial; use data.image_size=224"):
        build_network(ModelConfig(arch="tutorial"), 17, 64)
    proc = run_cli("ablations.train", *SMOKE, "model.arch=tutorial", "data.image_size=64")
    assert proc.returncode == 2 and "too small for model.arch=tutorial" in proc.stderr, show(proc)


def test_the_recipe():
    cfg = load_config(profile="tutorial")
    m, o, d = cfg.model, cfg.optim, cfg.data
    assert (m.arch, m.norm, m.pool, m.dropout, m.groups, m.init) == ("tutorial", "batchnorm", "non_overlapping", 0.4, 1, "keras")
    assert (o.name, o.lr, o.momentum, o.eps, o.weight_decay, o.max_lr_drops) == ("adam", 1e-3, 0.9, 1e-7, 0.0, 0)
    assert (d.name, d.image_size, d.augment, d.normalize, d.batch_size) == ("flowers17", 224, "none", "unit", 64)


@pytest.mark.slow
def test_the_tutorial_profile_trains_on_oxford_17_flowers(store, tmp_path):
    """`make train PROFILE=tutorial DATA=flowers17 ARGS="data.root=..."`, a few steps, on
    the shared copy of the data where it exists, else on files in the official layout."""
    root = FLOWERS17.parent if FLOWERS17.is_dir() else make_flowers17(tmp_path / "data", size=64)
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2"]
    proc = run_cli("ablations.train", "--profile", "tutorial", "data.name=flowers17", f"data.root={root}", *short, timeout=900)
    assert proc.returncode == 0, show(proc)
    run = only_run(store, "train")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.arch"] == "tutorial" and run.data.params["resolved.num_classes"] == "17"
    assert run.data.params["optim.name"] == "adam" and run.data.params["resolved.image_size"] == "224"
