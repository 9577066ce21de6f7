"""The `data` section of the configuration and the datasets, one registry, chosen with `data.name`.

Each entry takes the data config and the stored image side and returns a
`Splits`: a training and a validation split, each either decoded images in
memory (uint8 N x 3 x S x S) or a list of image files to decode on the fly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from core.config import require, require_choice
from core.errors import DataError
from data.augment import TRAIN_AUGMENTS


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
    train_size: int | None = None  # None: the whole training split
    val_size: int | None = None
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


log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
IN_MEMORY_LIMIT_BYTES = 4 << 30  # decode file datasets into memory up to this size


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


def subset(split: Split, size: int | None, seed: int) -> Split:
    """`size` images of the split, drawn with `seed` (in their original order), or all."""
    n = len(split.labels)
    if size is None or size >= n:
        return split
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:size])
    if isinstance(split, ArraySplit):
        t = torch.from_numpy(idx)
        return ArraySplit(split.images[t], split.labels[t])
    return FileSplit([split.files[i] for i in idx], [split.labels[i] for i in idx])


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


def shapes(cfg: DataConfig, side: int) -> Splits:
    from data.shapes import CLASSES, make_shapes

    splits = {}
    for split, default in (("train", 10_000), ("val", 2_000)):
        n = (cfg.train_size if split == "train" else cfg.val_size) or default
        images, labels = make_shapes(n, side, cfg.seed, split)
        splits[split] = ArraySplit(torch.from_numpy(images), torch.from_numpy(labels))
    return Splits(splits["train"], splits["val"], list(CLASSES))


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def read_cifar10(folder: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """CIFAR-10's python batches: data_batch_1..5, test_batch, batches.meta."""
    out = {}
    try:
        for split, names in (("train", CIFAR10_FILES[:5]), ("val", ["test_batch"])):
            xs, ys = [], []
            for name in names:
                with open(folder / name, "rb") as fh:
                    batch = pickle.load(fh, encoding="bytes")
                xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[b"labels"], np.int64))
            out[split] = (np.concatenate(xs), np.concatenate(ys))
        with open(folder / "batches.meta", "rb") as fh:
            meta = pickle.load(fh, encoding="bytes")
        classes = [c.decode() for c in meta[b"label_names"]]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as err:
        raise DataError(
            f"cannot read CIFAR-10 from {folder} ({type(err).__name__}: {err}); delete the folder and "
            f"set data.download=true, or extract {CIFAR10_URL} there again."
        ) from None
    return out, classes


def cifar10(cfg: DataConfig, side: int) -> Splits:
    root = Path(cfg.root)
    folder = root / "cifar-10-batches-py"
    if not all((folder / name).exists() for name in CIFAR10_FILES):
        if not cfg.download:
            raise _missing("cifar10", folder, f"Set data.download=true, or extract {CIFAR10_URL} into {root}.")
        _download(CIFAR10_URL, root, "cifar10")
    arrays, classes = read_cifar10(folder)
    splits = []
    for (x, y), size in ((arrays["train"], cfg.train_size), (arrays["val"], cfg.val_size)):
        # subset before resizing (as load_splits would after it: same images), so that a
        # small subset at a large side does not resize the whole set
        split = subset(ArraySplit(torch.from_numpy(x), torch.from_numpy(y)), size, cfg.seed)
        splits.append(ArraySplit(_resize_array(split.images, side), split.labels))
    return Splits(splits[0], splits[1], classes)


FLOWERS17_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz"
FLOWERS17_CLASSES = [
    "daffodil", "snowdrop", "lily_valley", "bluebell", "crocus", "iris", "tigerlily", "tulip", "fritillary",
    "sunflower", "daisy", "colts_foot", "dandelion", "cowslip", "buttercup", "windflower", "pansy",
]  # fmt: skip


def flowers17(cfg: DataConfig, side: int) -> Splits:
    """Oxford 17 Flowers: jpg/image_0001.jpg .. image_1360.jpg, 80 images per class in
    file order. Split (fixed): in each class, a permutation with seed 17 puts 60 images
    in train and 20 in val."""
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
    rng = np.random.default_rng(17)
    train, val = FileSplit([], []), FileSplit([], [])
    for c in range(len(FLOWERS17_CLASSES)):
        order = rng.permutation(80)
        for rank, i in enumerate(order):
            target = train if rank < 60 else val
            target.files.append(files[c * 80 + i])
            target.labels.append(c)
    return Splits(train, val, list(FLOWERS17_CLASSES))


def flowers102(cfg: DataConfig, side: int) -> Splits:
    from torchvision.datasets import Flowers102

    root = Path(cfg.root)
    splits = []
    for split in ("train", "val"):
        try:
            ds = Flowers102(str(root), split=split, download=cfg.download)
        except RuntimeError as err:
            raise _missing("flowers102", root / "flowers-102", f"{err} Set data.download=true to fetch it.") from None
        splits.append(FileSplit([Path(f) for f in ds._image_files], list(ds._labels)))
    return Splits(splits[0], splits[1], [str(i) for i in range(102)])


def imagefolder(cfg: DataConfig, side: int) -> Splits:
    """Any tree data.root/{train, val or test}/<class>/<image>."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise _missing("imagefolder", root, "Point data.root at a folder holding train/<class>/* and val/<class>/* (or test/).")
    val_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or val_dir is None:
        raise DataError(f"{root} needs a train/ and a val/ (or test/) folder, each with one sub-folder per class")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    val_classes = sorted(d.name for d in val_dir.iterdir() if d.is_dir())
    if set(classes) != set(val_classes):
        raise DataError(
            f"the splits of {root} have different classes: train lacks {sorted(set(val_classes) - set(classes))}, "
            f"{val_dir.name} lacks {sorted(set(classes) - set(val_classes))}. Every class needs images in both splits."
        )
    splits = []
    for folder in (root / "train", val_dir):
        split = FileSplit([], [])
        for c, name in enumerate(classes):
            files = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"class '{name}' has no images in {folder}; every class needs images in both splits")
            split.files += files
            split.labels += [c] * len(files)
        splits.append(split)
    return Splits(splits[0], splits[1], classes)


DATASETS: dict[str, Callable[[DataConfig, int], Splits]] = {
    "shapes": shapes,
    "cifar10": cifar10,
    "flowers17": flowers17,
    "flowers102": flowers102,
    "imagefolder": imagefolder,
}


def load_splits(cfg: DataConfig, side: int, cache_dir: Path | None = None) -> Splits:
    """The dataset at stored side `side`, subset to data.train_size / data.val_size,
    with file splits checked and, when they fit, decoded into memory."""
    splits = DATASETS[cfg.name](cfg, side)
    out = {}
    for what, split, size in (("train", splits.train, cfg.train_size), ("val", splits.val, cfg.val_size)):
        split = subset(split, size, cfg.seed)
        if isinstance(split, FileSplit):
            split = materialise(split, side, cfg, what, cache_dir)
        out[what] = split
    return Splits(out["train"], out["val"], splits.classes)


def class_count(cfg: DataConfig) -> int:
    """The number of classes, without loading the images."""
    known = {"shapes": 10, "cifar10": 10, "flowers17": len(FLOWERS17_CLASSES), "flowers102": 102}
    if cfg.name in known:
        return known[cfg.name]
    return len(imagefolder(cfg, 8).classes)
