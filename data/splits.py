"""A dataset's splits, and how the suite picks its images (docs/data.md).

Three splits (`data.splits=train_val_test`, the default): `train`, what the network
is trained on; `val`, held out of the training images (or the dataset's own
validation split), what the schedule, stopping, tuning and any "best" read;
`test`, the dataset's test split, evaluated once, on the final weights, at the end
of a run. `data.splits=train_val` is the suite's former protocol, kept so that runs
made under it keep their identity: two splits, the second (the dataset's test split
where it has no validation split) serving as val, and no test.

A held-out validation split is fixed: the same images for every run, whatever its
seeds (`hold_out`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PROTOCOLS = ("train_val_test", "train_val")  # data.splits; the second is the former protocol
VAL_FRACTION = 0.1  # of each class's training images, held out as val where a dataset has no val split
HOLDOUT_SEED = 0  # the held-out images: one seed for every run (not data.seed, not the run's seed)


@dataclass
class ArraySplit:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]


@dataclass
class FileSplit:
    files: list[Path]
    labels: list[int]


Split = ArraySplit | FileSplit


@dataclass
class Splits:
    train: Split
    val: Split
    classes: list[str]
    test: Split | None = None  # None under data.splits=train_val


def take(split: Split, idx: np.ndarray) -> Split:
    """The images at positions `idx` of the split, in that order."""
    if isinstance(split, ArraySplit):
        t = torch.from_numpy(np.asarray(idx, np.int64))
        return ArraySplit(split.images[t], split.labels[t])
    return FileSplit([split.files[i] for i in idx], [split.labels[i] for i in idx])


def subset(split: Split, size: int | None, seed: int) -> Split:
    """`size` images of the split, drawn with `seed` (in their original order), or all."""
    n = len(split.labels)
    if size is None or size >= n:
        return split
    return take(split, np.sort(np.random.default_rng(seed).permutation(n)[:size]))


def hold_out(labels, fraction: float = VAL_FRACTION, seed: int = HOLDOUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions, each in the original order: in each class (in label
    order), a permutation drawn from `seed` holds out its first round(fraction x the
    class's images), at least one and never all. Depends on the labels alone, so the
    held-out images are the same for every run of the dataset. Raises ValueError for a
    class with fewer than two images (nothing to hold out while still training on it)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            raise ValueError(f"class {c} has {len(members)} training image(s); holding out a validation split needs at least 2 per class")
        k = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(members[rng.permutation(len(members))[:k]])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def train_val_test(cfg_splits: str, train: Split, test: Split) -> dict[str, Split]:
    """A dataset with a training and a test split but no validation split: under
    train_val_test, val is held out of the training images (`hold_out`) and test is the
    test split; under the former train_val, the test split is val and there is no test."""
    if cfg_splits == "train_val":
        return {"train": train, "val": test}
    kept, held = hold_out(train.labels.numpy() if isinstance(train, ArraySplit) else train.labels)
    return {"train": take(train, kept), "val": take(train, held), "test": test}
