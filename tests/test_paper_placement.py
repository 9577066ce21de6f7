"""The studies that test two claims where the paper made them: dropout on hidden fully connected
layers (dropout_fc, model.arch=cifar_fc) and Figure 1 under the authors' CIFAR-10 initialisation
(figure1's relu_authors_init / tanh_authors_init, model.init=authors_cifar). Their files load and
every variant resolves to the configuration it names."""

from __future__ import annotations

from ablations.spec import load_ablation
from ablations.study.plan import expand


def _resolved(name: str) -> dict:
    ablation = load_ablation(name)
    return {r.variant: r.config for r in expand(ablation, profile=ablation.profile, seeds=[0])}


def test_dropout_fc_varies_dropout_on_the_hidden_layers_network_on_cifar10():
    ablation = load_ablation("dropout_fc")
    assert (ablation.profile, ablation.baseline, ablation.seeds, ablation.demo) == ("cifar", "p0.5", [0, 1, 2], False)
    configs = _resolved("dropout_fc")
    assert list(configs) == ["p0.5", "p0"]
    assert {v: (c.model.arch, c.model.dropout, c.data.name) for v, c in configs.items()} == {
        "p0.5": ("cifar_fc", 0.5, "cifar10"),
        "p0": ("cifar_fc", 0.0, "cifar10"),
    }
    assert "cifar_fc" in ablation.description and "4096" in ablation.description


def test_figure1_runs_its_paper_pair_under_the_authors_initialisation_too():
    ablation = load_ablation("figure1")
    assert ablation.compare == {"tanh_paper_init": "relu_paper_init", "tanh_authors_init": "relu_authors_init"}
    configs = _resolved("figure1")
    for variant, activation in (("relu_authors_init", "relu"), ("tanh_authors_init", "tanh")):
        c = configs[variant]
        assert (c.model.activation, c.model.init, c.data.normalize, c.trainer.max_epochs) == (activation, "authors_cifar", "paper", 20)
        assert (c.model.arch, c.model.norm, c.model.dropout, c.data.augment, c.optim.weight_decay) == ("cifar", "none", 0.0, "none", 0.0)
    paper, authors = configs["relu_paper_init"], configs["relu_authors_init"]
    assert {k: v for k, v in authors.identity().items() if paper.identity().get(k) != v} == {"model.init": "authors_cifar"}
