"""The `data` section of the configuration and the datasets, one registry, chosen with `data.name`.

Each entry takes the data config and the stored image side and returns a
`Splits` (data/splits.py): train, val and, under `data.splits=train_val_test` (the
default), test, each either decoded images in memory (uint8 N x 3 x S x S) or a list
of image files to decode on the fly. Which images each split holds, per dataset, is
in each entry's docstring and in docs/data.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from core.config import NEUTRAL, require, require_choice
from core.errors import ConfigError, DataError
from data.augment import TRAIN_AUGMENTS
from data.splits import PROTOCOLS, ArraySplit, FileSplit, Split, Splits, subset, train_val_test


@dataclass
class DataConfig:
    name: str = "shapes"  # a key of DATASETS (below)
    root: str = "datasets"  # where downloads and image folders live
    image_size: int | None = None  # None: the architecture's input size
    augment: str = "paper"  # a key of augment.TRAIN_AUGMENTS
    normalize: Literal["standard", "paper", "unit"] = "standard"  # see augment.BatchPipeline
    ten_crop: bool = False  # the paper's 10-crop averaging at evaluation
    batch_size: int = 128  # the global batch, split across devices
    num_workers: int = 0
    # train_val_test: val held out of the training images (or the dataset's own), test
    # evaluated once at the end; train_val: the former protocol, the dataset's test split
    # as val, no test (neutral: runs made before the key were made so). See data/splits.py
    splits: Literal["train_val_test", "train_val"] = field(default="train_val_test", metadata={NEUTRAL: "train_val"})
    train_size: int | None = None  # None: the whole training split
    val_size: int | None = None
    test_size: int | None = None
    download: bool = True
    bad_files: Literal["error", "skip"] = "error"
    seed: int = 0  # seeds dataset generation (shapes) and subsets, not training

    def validate(self) -> None:
        require_choice("data.name", self.name, DATASETS)
        require_choice("data.augment", self.augment, TRAIN_AUGMENTS)
        require(self.image_size is None or self.image_size >= 8, "data.image_size", self.image_size, "null or >= 8")
        require(self.batch_size >= 1, "data.batch_size", self.batch_size, ">= 1")
        require(self.num_workers >= 0, "data.num_workers", self.num_workers, ">= 0")
        require(self.train_size is None or self.train_size >= 1, "data.train_size", self.train_size, "null or >= 1")
        require(self.val_size is None or self.val_size >= 1, "data.val_size", self.val_size, "null or >= 1")
        require(self.test_size is None or self.test_size >= 1, "data.test_size", self.test_size, "null or >= 1")
        require_choice("data.splits", self.splits, PROTOCOLS)
        if self.splits == "train_val" and self.test_size is not None:
            raise ConfigError(
                f"'data.test_size' = {self.test_size} but data.splits=train_val has no test split; remove data.test_size, or set data.splits=train_val_test"
            )


log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
IN_MEMORY_LIMIT_BYTES = 4 << 30  # decode file datasets into memory up to this size


# ------------------------------------------------------------------ decoding


def decode(path: Path, side: int) -> np.ndarray:
    """One image file -> uint8 [3, side, side]: shorter side resized to `side`, centre crop."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = side / min(w, h)
        im = im.resize((max(side, round(w * s)), max(side, round(h * s))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def _bad_files(cfg: DataConfig, bad: list[Path], total: int, what: str) -> None:
    if not bad:
        return
    if cfg.bad_files == "error":
        shown = "\n  ".join(str(b) for b in bad[:20]) + ("\n  ..." if len(bad) > 20 else "")
        raise DataError(
            f"{len(bad)} unreadable image file(s) in the {what} split:\n  {shown}\nRemove or replace them, or set data.bad_files=skip to train without them."
        )
    log.warning("skipping %d of %d image files in the %s split: unreadable", len(bad), total, what)


def materialise(split: FileSplit, side: int, cfg: DataConfig, what: str, cache_dir: Path | None) -> Split:
    """Decodes a file split into memory (cached on disk), unless it is too large to;
    unreadable files are an error, or skipped with a warning if data.bad_files=skip."""
    if len(split.files) * 3 * side * side > IN_MEMORY_LIMIT_BYTES:
        from PIL import Image

        bad = []
        for f in split.files:
            try:
                with Image.open(f) as im:
                    im.verify()
            except Exception:  # PIL raises many kinds for broken files
                bad.append(f)
        _bad_files(cfg, bad, len(split.files), what)
        bad_set = set(bad)
        keep = [i for i, f in enumerate(split.files) if f not in bad_set]
        return FileSplit([split.files[i] for i in keep], [split.labels[i] for i in keep])
    key = hashlib.sha256(f"{side}:{cfg.bad_files}".encode())
    for f, label in zip(split.files, split.labels, strict=True):
        st = f.stat()
        key.update(f"{f}:{st.st_size}:{st.st_mtime_ns}:{label}".encode())
    cache = cache_dir / f"decoded-{key.hexdigest()[:16]}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return ArraySplit(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]))
    images, labels, bad = [], [], []
    for f, label in zip(split.files, split.labels, strict=True):
        try:
            images.append(decode(f, side))
            labels.append(label)
        except Exception:
            bad.append(f)
    _bad_files(cfg, bad, len(split.files), what)
    arr = np.stack(images) if images else np.zeros((0, 3, side, side), np.uint8)
    lab = np.asarray(labels, np.int64)
    if cache is not None:
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, images=arr, labels=lab)
            tmp.replace(cache)
        except OSError as err:  # a read-only or full data folder: train without the cache
            log.warning("cannot write the decoded-image cache %s (%s); decoding again next time", cache, err)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return ArraySplit(torch.from_numpy(arr), torch.from_numpy(lab))


def _resize_array(images: np.ndarray | torch.Tensor, side: int, chunk: int = 256) -> torch.Tensor:
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if t.shape[-1] == side:
        return t
    out = torch.empty((t.shape[0], t.shape[1], side, side), dtype=torch.uint8)
    for start in range(0, t.shape[0], chunk):  # in chunks: a float copy of the whole set may not fit
        part = torch.nn.functional.interpolate(t[start : start + chunk].float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _missing(name: str, where: Path, how: str) -> DataError:
    return DataError(f"dataset '{name}' not found at {where}. {how}")


def _download(url: str, root: Path, name: str, filename: str | None = None) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(url, download_root=str(root), filename=filename)
    except Exception as err:  # no network, proxy, HTTP error...
        raise DataError(
            f"could not download dataset '{name}' from {url} ({type(err).__name__}: {err}). "
            f"Download it yourself and extract it into {root}, or check your network connection."
        ) from None


# ------------------------------------------------------------------ datasets


def _size(cfg: DataConfig, what: str) -> int | None:
    return {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}[what]


def _splits(parts: dict[str, Split], classes: list[str]) -> Splits:
    return Splits(parts["train"], parts["val"], classes, parts.get("test"))


def shapes(cfg: DataConfig, side: int) -> Splits:
    """Synthetic, drawn from data.seed: train 10,000 images (data.train_size), val 2,000
    (data.val_size) and, under train_val_test, test as many as val (data.test_size).
    Every split is its own draw; val and test come from the same shifted distribution
    (data/shapes.py), so val is held out of training as a fresh sample, not a slice of
    the training draw."""
    from data.shapes import CLASSES, make_shapes

    wanted = (("train", 10_000), ("val", 2_000)) + ((("test", cfg.val_size or 2_000),) if cfg.splits == "train_val_test" else ())
    parts = {}
    for split, default in wanted:
        images, labels = make_shapes(_size(cfg, split) or default, side, cfg.seed, split)
        parts[split] = ArraySplit(torch.from_numpy(images), torch.from_numpy(labels))
    return _splits(parts, list(CLASSES))


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _torchvision_cifar10(cfg: DataConfig):
    """(train, test) torchvision CIFAR10 datasets: torchvision reads the python batches,
    checks each file against the official release's MD5 checksum, and downloads the
    release (checking the archive's checksum) when data.download is true."""
    from torchvision.datasets import CIFAR10

    root = Path(cfg.root)
    folder = root / CIFAR10.base_folder
    if not cfg.download and not all((folder / name).exists() for name in CIFAR10_FILES):
        raise _missing("cifar10", folder, f"Set data.download=true, or extract {CIFAR10_URL} into {root}.")
    fix = f"delete the folder and set data.download=true, or extract {CIFAR10_URL} there again."
    try:
        return CIFAR10(str(root), train=True, download=cfg.download), CIFAR10(str(root), train=False)
    except RuntimeError:  # torchvision: a file missing, or not the official one
        raise DataError(f"CIFAR-10 in {folder} is incomplete or not the official release: a file's MD5 checksum does not match; {fix}") from None
    except (OSError, EOFError, ValueError) as err:  # no network, a proxy, an HTTP error, a broken archive...
        raise DataError(
            f"could not download dataset 'cifar10' from {CIFAR10_URL} ({type(err).__name__}: {err}). "
            f"Download it yourself and extract it into {root}, or check your network connection."
        ) from None


def cifar10(cfg: DataConfig, side: int) -> Splits:
    """CIFAR-10's python release, read through torchvision (its checksums checked).
    train_val_test: train 45,000 of the 50,000 training images, val the other 5,000 (500
    per class: `splits.hold_out`, fixed), test the 10,000 of test_batch. train_val (the
    former protocol): train all 50,000, val test_batch. Why torchvision, and what its
    checksums cost (about 1 s per run start, measured): docs/data.md."""
    train_ds, test_ds = _torchvision_cifar10(cfg)

    def as_split(ds) -> ArraySplit:  # torchvision holds N x 32 x 32 x 3
        return ArraySplit(torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))), torch.as_tensor(ds.targets, dtype=torch.int64))

    parts = train_val_test(cfg.splits, as_split(train_ds), as_split(test_ds))
    # subset before resizing (as load_splits would after it: same images), so that a
    # small subset at a large side does not resize the whole set
    for what, split in parts.items():
        split = subset(split, _size(cfg, what), cfg.seed)
        parts[what] = ArraySplit(_resize_array(split.images, side), split.labels)
    return _splits(parts, list(train_ds.classes))


FLOWERS17_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz"
FLOWERS17_CLASSES = [
    "daffodil", "snowdrop", "lily_valley", "bluebell", "crocus", "iris", "tigerlily", "tulip", "fritillary",
    "sunflower", "daisy", "colts_foot", "dandelion", "cowslip", "buttercup", "windflower", "pansy",
]  # fmt: skip


def flowers17(cfg: DataConfig, side: int) -> Splits:
    """Oxford 17 Flowers: jpg/image_0001.jpg .. image_1360.jpg, 80 images per class in
    file order. Splits (fixed): in each class, a permutation with seed 17 ranks the 80
    images; train_val_test: ranks 0-49 train, 50-59 val, 60-79 test (50 / 10 / 20 per
    class: 850 / 170 / 340). train_val (the former protocol): ranks 0-59 train, 60-79
    val, the same 20 images as test now. The official archive's three 40 / 20 / 20
    splits (datasplits.mat) are a separate download, and not used."""
    root = Path(cfg.root) / "flowers17"
    folder = root / "jpg"
    files = sorted(folder.glob("image_*.jpg")) if folder.is_dir() else []
    if not files:
        if not cfg.download:
            raise _missing("flowers17", folder, f"Set data.download=true, or extract {FLOWERS17_URL} into {root}.")
        _download(FLOWERS17_URL, root, "flowers17")
        files = sorted(folder.glob("image_*.jpg"))
    if len(files) != 80 * len(FLOWERS17_CLASSES):
        raise DataError(f"{folder} holds {len(files)} images; Oxford 17 Flowers has 1360 (image_0001.jpg .. image_1360.jpg)")
    ranks = {"train": range(60), "val": range(60, 80)} if cfg.splits == "train_val" else {"train": range(50), "val": range(50, 60), "test": range(60, 80)}
    rng = np.random.default_rng(17)
    parts = {what: FileSplit([], []) for what in ranks}
    for c in range(len(FLOWERS17_CLASSES)):
        order = rng.permutation(80)
        for what, rank in ranks.items():
            parts[what].files += [files[c * 80 + i] for i in order[rank.start : rank.stop]]
            parts[what].labels += [c] * len(rank)
    return _splits(parts, list(FLOWERS17_CLASSES))


def flowers102(cfg: DataConfig, side: int) -> Splits:
    """Oxford 102 Flowers through torchvision, its official splits: train 1,020 (10 per
    class), val 1,020 and (train_val_test) test 6,149."""
    from torchvision.datasets import Flowers102

    root = Path(cfg.root)
    parts = {}
    for split in ("train", "val") + (("test",) if cfg.splits == "train_val_test" else ()):
        try:
            ds = Flowers102(str(root), split=split, download=cfg.download)
        except RuntimeError as err:
            raise _missing("flowers102", root / "flowers-102", f"{err} Set data.download=true to fetch it.") from None
        parts[split] = FileSplit([Path(f) for f in ds._image_files], list(ds._labels))
    return _splits(parts, [str(i) for i in range(102)])


def _list_folder(folder: Path, classes: list[str]) -> FileSplit:
    split = FileSplit([], [])
    for c, name in enumerate(classes):
        files = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class '{name}' has no images in {folder}; every class needs images in every split")
        split.files += files
        split.labels += [c] * len(files)
    return split


def imagefolder(cfg: DataConfig, side: int) -> Splits:
    """Any tree data.root/train/<class>/<image>, with val/ and/or test/ beside train/.
    train_val_test: with both val/ and test/, each is its split; with only one of them,
    that folder is test (the dataset's held-out split: ImageNet's val/, say, the one its
    results are reported on) and val is held out of train/: 10% of each class's images
    (`splits.hold_out`, fixed). train_val (the former protocol): train/, and val/ (else
    test/) as val."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise _missing("imagefolder", root, "Point data.root at a folder holding train/<class>/* and val/<class>/* (or test/).")
    held = [root / d for d in ("val", "test") if (root / d).is_dir()]
    if not (root / "train").is_dir() or not held:
        raise DataError(f"{root} needs a train/ and a val/ (or test/) folder, each with one sub-folder per class")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    for folder in held:
        other = sorted(d.name for d in folder.iterdir() if d.is_dir())
        if set(classes) != set(other):
            raise DataError(
                f"the splits of {root} have different classes: train lacks {sorted(set(other) - set(classes))}, "
                f"{folder.name} lacks {sorted(set(classes) - set(other))}. Every class needs images in every split."
            )
    train = _list_folder(root / "train", classes)
    if cfg.splits == "train_val":
        return Splits(train, _list_folder(held[0], classes), classes)
    if len(held) == 2:
        return Splits(train, _list_folder(held[0], classes), classes, _list_folder(held[1], classes))
    try:
        parts = train_val_test(cfg.splits, train, _list_folder(held[0], classes))
    except ValueError as err:
        raise DataError(
            f"{root / 'train'}: {err}. Add training images, give the folder both a val/ and a test/ folder, or set data.splits=train_val."
        ) from None
    if held[0].name == "val":
        log.info("%s has no test/ folder: its val/ folder is the test split, and val is held out of train/ (10%% per class)", root)
    return _splits(parts, classes)


DATASETS: dict[str, Callable[[DataConfig, int], Splits]] = {
    "shapes": shapes,
    "cifar10": cifar10,
    "flowers17": flowers17,
    "flowers102": flowers102,
    "imagefolder": imagefolder,
}


def load_splits(cfg: DataConfig, side: int, cache_dir: Path | None = None) -> Splits:
    """The dataset at stored side `side`, subset to data.train_size / val_size / test_size,
    with file splits checked and, when they fit, decoded into memory (each split cached)."""
    splits = DATASETS[cfg.name](cfg, side)
    out = {}
    for what, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        if split is None:
            continue
        split = subset(split, _size(cfg, what), cfg.seed)
        if isinstance(split, FileSplit):
            split = materialise(split, side, cfg, what, cache_dir)
        out[what] = split
    return _splits(out, splits.classes)


def class_count(cfg: DataConfig) -> int:
    """The number of classes, without loading the images."""
    known = {"shapes": 10, "cifar10": 10, "flowers17": len(FLOWERS17_CLASSES), "flowers102": 102}
    if cfg.name in known:
        return known[cfg.name]
    return len(imagefolder(cfg, 8).classes)
