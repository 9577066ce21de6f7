"""Every toggle's path against the independent reference taking the same toggle.

Each row changes one of the ablations' layer choices from the ReLU row's network
(the small CIFAR-10 network, ReLU, no normalisation, overlapping pooling, no dropout,
one group, no augmentation) in the suite's config and in the reference's own network
(tools/reference.py), and times them as the ReLU rows are: suite steps alternating
one by one with reference steps, medians of the step pairs' ratios over the repeats.
The tutorial's network at 224 px runs a few steps, once, and is reported without a goal.
"""

from __future__ import annotations

from tools.bench.common import REFERENCE_TOGGLES, Sizes, bench_config, progress
from tools.bench.training import compare

# row -> (the suite's overrides, the reference's network choices)
TOGGLES: dict[str, tuple[tuple[str, ...], dict]] = {
    "tanh": (("model.activation=tanh",), {"activation": "tanh"}),
    "LRN": (("model.norm=lrn",), {"norm": "lrn"}),
    "BatchNorm": (("model.norm=batchnorm",), {"norm": "batchnorm"}),
    "non-overlapping pooling": (("model.pool=non_overlapping",), {"pool": "non_overlapping"}),
    "dropout 0.5": (("model.dropout=0.5",), {"dropout": 0.5}),
    "groups=2": (("model.groups=2",), {"groups": 2}),
}
# the tutorial's network as configs/archs/tutorial.yaml sets it up (BatchNorm, 2x2/2
# pooling, dropout 0.4, one group), on the suite's default SGD, no augmentation
TUTORIAL_REFERENCE = {"arch": "tutorial", "norm": "batchnorm", "pool": "non_overlapping", "dropout": 0.4, "groups": 1}


def toggle_rows(sizes: Sizes, threads_: int) -> dict[str, dict]:
    """Per toggle, `compare`'s figures against the reference with the same toggle."""
    w, n = sizes.warmup, sizes.steps
    out = {}
    for name, (overrides, layers) in TOGGLES.items():
        # just the images the steps use: every suite run ends by measuring its clean training error over all of them
        cfg = bench_config("cifar", threads_, False, (w + n + 1) * sizes.batch, w + n + 1, sizes.batch, (*REFERENCE_TOGGLES, "data.augment=none", *overrides))
        out[name] = compare(cfg, sizes, w, n, f"reference, {name}", reference=layers)
    w, n, b = sizes.tutorial_warmup, sizes.tutorial_steps, sizes.tutorial_batch
    progress(f"tutorial network at 224 px, batch {b}: {n} steps")
    cfg = bench_config("tutorial", threads_, False, (w + n + 1) * b, w + n + 1, b, ("data.augment=none",))
    out["tutorial 224 px"] = compare(cfg, sizes, w, n, "reference, tutorial 224 px", reference=TUTORIAL_REFERENCE, repeats=1)
    return out
