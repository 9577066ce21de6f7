"""The paper's claims an ablation file tests (`claims:`), as data the scoreboard reads.

    claims:
      - quote: "reduces our top-1 and top-5 error rates by 1.4% and 1.2%"
        section: "3.3"          # where the paper says it
        network: alexnet        # what it was made on: a key of NETWORKS
        dataset: imagenet       # a key of DATASETS
        with: lrn               # the variant that has the innovation
        without: none           # the variant that lacks it
        size: 1.4               # optional: the claimed gain on the study's primary metric, in points
                                # of error (a ratio for epochs_to_train_err); it is also the claim's δ

A claim says that `with` beats `without` (lower error, or fewer epochs) by `size`. Its
verdict comes from the study's own comparison of the two variants on its primary metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError

NETWORKS = {
    "alexnet": "AlexNet (60M parameters)",
    "cifar": "a four-layer CIFAR-10 CNN (here the `cifar` net, the trunk of layers-18pct)",
    "cifar_fc": "a CIFAR-10 CNN with hidden fully connected layers (`cifar_fc`)",
    "tutorial": "the tutorial's Keras AlexNet",
}
DATASETS = {"imagenet": "ImageNet (ILSVRC)", "cifar10": "CIFAR-10", "flowers17": "Oxford 17 Flowers", "shapes": "synthetic shapes"}
KEYS = {"quote", "section", "network", "dataset", "with", "without", "size"}


@dataclass(frozen=True)
class Claim:
    quote: str
    section: str
    network: str
    dataset: str
    with_: str  # the variant with the innovation
    without: str
    size: float | None  # points of error, or a ratio; None: the paper gives no size
    ablation: str = ""
    metric: str = "test_err1"  # the study's primary metric, on which it is judged
    tuned_in_paper: bool = False  # the file has a tune: block (the paper tuned what it compares): an untuned study says so

    @property
    def claimed(self) -> str:
        if self.size is None:
            return ""
        return f"{self.size:g}x" if self.metric == "epochs_to_train_err" else f"{self.size:g} point{'s' if self.size != 1 else ''}"

    @property
    def made_on(self) -> str:
        return f"{NETWORKS.get(self.network, self.network)}, {DATASETS.get(self.dataset, self.dataset)}"

    def delta(self, metric: str) -> float:
        """Its size on the verdicts' scale (a fraction of error, or a log ratio): the claim's δ."""
        assert self.size is not None
        return math.log(self.size) if metric == "epochs_to_train_err" else self.size / 100


def parse_claims(raw: Any, where: str, variants: dict, metric: str, ablation: str, tuned: bool = False) -> list[Claim]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'claims' is a list of claims, each with {', '.join(sorted(KEYS))}")
    out = []
    for i, c in enumerate(raw):
        at = f"{where}: claims[{i}]"
        if not isinstance(c, dict) or set(c) - KEYS or not {"quote", "section", "network", "dataset", "with", "without"} <= set(c):
            raise ConfigError(f"{at}: a claim has quote, section, network, dataset, with, without and optionally size; got {c!r}")
        for key, known in (("network", NETWORKS), ("dataset", DATASETS)):
            if c[key] not in known:
                raise ConfigError(f"{at}: {key} must be one of {', '.join(known)} (ablations/spec/claims.py), not {c[key]!r}")
        for key in ("with", "without"):
            if c[key] not in variants:
                raise ConfigError(f"{at}: '{key}' must name a variant of the file ({', '.join(variants)}), not {c[key]!r}")
        size = c.get("size")
        ratio = metric == "epochs_to_train_err"
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float)) or not (size > 1 if ratio else 0 < size < 100)):
            raise ConfigError(f"{at}: 'size' is {'a ratio > 1' if ratio else 'points of error in (0, 100)'}, not {size!r}")
        out.append(Claim(str(c["quote"]).strip(), str(c["section"]), c["network"], c["dataset"], str(c["with"]), str(c["without"]),
                         None if size is None else float(size), ablation, metric, tuned))  # fmt: skip
    return out
