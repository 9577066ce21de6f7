"""The data layer: every dataset read from its real on-disk format, the decoded
cache, bad files, the synthetic `shapes` set, and the samplers and loaders."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data.registry as registry
from core.errors import DataError
from data.datamodule import AblationDataModule, GlobalBatchSampler, ShardSampler
from data.registry import DATASETS, FLOWERS17_CLASSES, ArraySplit, DataConfig, FileSplit, load_splits, materialise
from data.shapes import CLASSES, make_shapes
from data.splits import hold_out
from tests.helpers import CIFAR_JPEG, make_flowers17, save_image, solid

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


save = save_image


# ------------------------------------------------------------------ cifar10


def cifar_image(i: int) -> np.ndarray:
    """Image i, CHW: red grows down the rows, green along the columns, blue is i."""
    img = np.empty((3, 32, 32), np.uint8)
    img[0] = (np.arange(32) * 8)[:, None]
    img[1] = (np.arange(32) * 8)[None, :]
    img[2] = i % 256
    return img


def write_cifar(root: Path, monkeypatch=None, per_batch: int = 12) -> Path:
    """The python release's layout: 1024 red, 1024 green, 1024 blue values per row, row-major,
    under the release's keys. torchvision checks each file against the official release's
    MD5 checksum; with `monkeypatch`, it is given these files' checksums instead (the check
    still runs: a file changed afterwards fails it)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        idx = range(k * per_batch, (k + 1) * per_batch)
        batch = {
            "batch_label": name,
            "data": np.stack([cifar_image(i).reshape(3072) for i in idx]),
            "labels": [i % 10 for i in idx],
            "filenames": [f"{i}.png" for i in idx],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    if monkeypatch is not None:
        from torchvision.datasets import CIFAR10

        def md5(name: str) -> str:
            return hashlib.md5((folder / name).read_bytes()).hexdigest()

        monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n in names[:5]])
        monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
        monkeypatch.setattr(CIFAR10, "meta", dict(CIFAR10.meta, md5=md5("batches.meta")))
    return folder


def test_cifar10_reads_the_python_batches(tmp_path, monkeypatch):
    write_cifar(tmp_path, monkeypatch)
    cfg = DataConfig(name="cifar10", root=str(tmp_path), download=False, splits="train_val")  # the former two splits
    splits = load_splits(cfg, 32)
    assert splits.classes == CIFAR_NAMES and splits.test is None
    train, val = splits.train, splits.val
    assert isinstance(train, ArraySplit) and isinstance(val, ArraySplit)
    assert train.images.shape == (60, 3, 32, 32) and val.images.shape == (12, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.labels.tolist() == [i % 10 for i in range(60)]
    assert val.labels.tolist() == [i % 10 for i in range(60, 72)]
    for split, offset in ((train, 0), (val, 60)):
        for j in range(len(split.labels)):
            assert torch.equal(split.images[j], torch.from_numpy(cifar_image(offset + j)))
    # the layout, spelled out: pixel (row 3, column 5) of image 7
    assert train.images[7, :, 3, 5].tolist() == [24, 40, 7]


def test_cifar10_three_splits_hold_val_out_of_the_training_batches(tmp_path, monkeypatch):
    write_cifar(tmp_path, monkeypatch, per_batch=40)  # 200 training images, 20 per class; 40 test images
    splits = load_splits(DataConfig(name="cifar10", root=str(tmp_path), download=False), 32)
    index = {what: getattr(splits, what).images[:, 2, 0, 0].long().tolist() for what in ("train", "val", "test")}  # blue: the index
    assert index["test"] == list(range(200, 240))  # test_batch, whole and in order
    assert sorted(index["train"] + index["val"]) == list(range(200)) and not set(index["train"]) & set(index["val"])
    assert np.bincount(splits.val.labels.numpy(), minlength=10).tolist() == [2] * 10  # 10% of each class
    assert index["val"] == hold_out([i % 10 for i in range(200)])[1].tolist()  # the documented rule
    for what in ("train", "val", "test"):
        split = getattr(splits, what)
        assert torch.equal(split.labels, split.images[:, 2, 0, 0].long() % 10)  # labels travel with their images
    # fixed: the same val whatever data.seed (which draws subsets) or the training seed
    other = load_splits(DataConfig(name="cifar10", root=str(tmp_path), download=False, seed=7), 32)
    assert torch.equal(other.val.images, splits.val.images)


def test_cifar10_resizes_to_another_stored_size(tmp_path, monkeypatch):
    write_cifar(tmp_path, monkeypatch)
    cfg = DataConfig(name="cifar10", root=str(tmp_path), download=False, splits="train_val")
    splits = load_splits(cfg, 40)
    images = splits.train.images
    assert images.shape == (60, 3, 40, 40) and images.dtype == torch.uint8
    assert torch.equal(images[:, 2], torch.arange(60, dtype=torch.uint8)[:, None, None].expand(60, 40, 40))  # flat stays flat
    red_rows = images[0, 0, :, 20].int()
    assert (red_rows.diff() >= 0).all() and red_rows[0] < 10 and red_rows[-1] > 240  # the gradient survives, down the rows
    green_cols = images[0, 1, 20, :].int()
    assert (green_cols.diff() >= 0).all() and green_cols[-1] > 240
    # resized in chunks, with the same result as in one go
    raw = torch.from_numpy(np.stack([cifar_image(i) for i in range(20)]))
    assert torch.equal(registry._resize_array(raw, 40, chunk=6), registry._resize_array(raw, 40, chunk=1000))
    assert torch.equal(registry._resize_array(raw, 40, chunk=6), images[:20])


def test_cifar10_subset_keeps_images_and_labels_together(tmp_path, monkeypatch):
    write_cifar(tmp_path, monkeypatch)
    small = DataConfig(name="cifar10", root=str(tmp_path), download=False, train_size=25, val_size=5, test_size=7, seed=3)
    at32, at64 = load_splits(small, 32), load_splits(small, 64)
    for splits in (at32, at64):
        assert len(splits.train.labels) == 25 and len(splits.val.labels) == 5 and len(splits.test.labels) == 7
        for split in (splits.train, splits.val, splits.test):
            index = split.images[:, 2, 0, 0].long()  # blue holds the image's index
            assert torch.equal(split.labels, index % 10)
    assert torch.equal(at32.train.images[:, 2, 0, 0], at64.train.images[:, 2, 0, 0])  # the same subset at any size


@pytest.mark.parametrize("broken", ["missing", "partial", "corrupt", "not the official files"])
def test_cifar10_missing_or_broken_says_how_to_get_it(tmp_path, monkeypatch, broken):
    if broken != "missing":
        folder = write_cifar(tmp_path, None if broken == "not the official files" else monkeypatch, per_batch=2)
        if broken == "partial":
            (folder / "data_batch_3").unlink()
        elif broken == "corrupt":
            (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    cfg = DataConfig(name="cifar10", root=str(tmp_path), download=False)
    with pytest.raises(DataError) as err:
        load_splits(cfg, 32)
    message = str(err.value)
    assert "cifar-10-batches-py" in message and "data.download=true" in message
    assert registry.CIFAR10_URL in message
    if broken in ("corrupt", "not the official files"):
        assert "checksum" in message


# ---------------------------------------------------------------- flowers17


@pytest.fixture(scope="module")
def flowers17_root(tmp_path_factory) -> Path:
    return make_flowers17(tmp_path_factory.mktemp("flowers"))


def test_flowers17_fixed_split(flowers17_root):
    cfg = DataConfig(name="flowers17", root=str(flowers17_root), download=False)
    splits = DATASETS["flowers17"](cfg, 8)
    assert splits.classes == FLOWERS17_CLASSES and len(splits.classes) == 17
    train, val, test = splits.train, splits.val, splits.test
    assert isinstance(train, FileSplit) and isinstance(val, FileSplit) and isinstance(test, FileSplit)
    for split, per_class in ((train, 50), (val, 10), (test, 20)):
        assert np.bincount(split.labels, minlength=17).tolist() == [per_class] * 17
        for f, label in zip(split.files, split.labels):
            assert label == (int(f.stem.split("_")[1]) - 1) // 80  # labels follow file order
    assert not set(train.files) & set(val.files) and not set(test.files) & (set(train.files) | set(val.files))
    assert len(set(train.files) | set(val.files) | set(test.files)) == 1360
    again = DATASETS["flowers17"](cfg, 8)
    assert (again.train.files, again.val.files, again.test.files) == (train.files, val.files, test.files)  # fixed, whatever the call
    other_seed = DATASETS["flowers17"](DataConfig(name="flowers17", root=str(flowers17_root), download=False, seed=5), 8)
    assert other_seed.val.files == val.files and other_seed.test.files == test.files  # the split is the dataset's, not the run's
    # the former two splits: 60 train and 20 val per class; that val is today's test, and val is held out of that train
    former = DATASETS["flowers17"](DataConfig(name="flowers17", root=str(flowers17_root), download=False, splits="train_val"), 8)
    assert former.test is None and len(former.train.files) == 1020
    assert former.val.files == test.files and set(former.train.files) == set(train.files) | set(val.files)


def test_flowers17_decodes_with_labels(flowers17_root, tmp_path):
    cfg = DataConfig(name="flowers17", root=str(flowers17_root), download=False, val_size=100)
    splits = load_splits(cfg, 8, cache_dir=tmp_path / "cache")
    for split, n in ((splits.val, 100), (splits.test, 340)):
        assert isinstance(split, ArraySplit) and split.images.shape == (n, 3, 8, 8) and split.images.dtype == torch.uint8
        red = split.images[:, 0].float().mean(dim=(1, 2))
        assert torch.equal(torch.round(red / 15).long(), split.labels)  # the colour painted for the label
    assert len(splits.train.labels) == 850


def test_flowers17_wrong_file_count(tmp_path):
    folder = tmp_path / "flowers17" / "jpg"
    for i in range(1, 11):
        save(folder / f"image_{i:04d}.jpg", solid((1, 2, 3)))
    with pytest.raises(DataError, match="1360"):
        DATASETS["flowers17"](DataConfig(name="flowers17", root=str(tmp_path), download=False), 8)


def test_flowers17_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(name="flowers17", root=str(tmp_path), download=False), 8)
    message = str(err.value)
    assert "flowers17" in message and "data.download=true" in message and registry.FLOWERS17_URL in message


# -------------------------------------------------------------- imagefolder

FOLDER_COLOURS = {"cat": (200, 10, 10), "ant": (10, 200, 10), "dog": (10, 10, 200)}


def make_folder(root: Path, val: str = "val", counts=None) -> Path:
    """root/train/<class>/*.png|jpg and root/<val>/<class>/*, each class its own colour."""
    counts = counts or {"train": 5, val: 3}
    for split, n in counts.items():
        for name, colour in FOLDER_COLOURS.items():
            for i in range(n):
                suffix = ".png" if i % 2 == 0 else ".JPG"
                save(root / split / name / f"{i:03d}{suffix}", solid(colour, 12))
            (root / split / name / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("val", ["val", "test"])
def test_imagefolder_reads_the_tree(tmp_path, val):
    root = make_folder(tmp_path / "data", val)
    cfg = DataConfig(name="imagefolder", root=str(root), splits="train_val")  # the former two splits: the folder as val
    listed = DATASETS["imagefolder"](cfg, 8)
    assert listed.classes == ["ant", "cat", "dog"]  # sorted
    assert listed.train.labels == [0] * 5 + [1] * 5 + [2] * 5 and listed.val.labels == [0] * 3 + [1] * 3 + [2] * 3
    assert all(f.parent.name == listed.classes[label] for f, label in zip(listed.train.files, listed.train.labels))
    assert all(f.parts[-3] == val for f in listed.val.files)
    splits = load_splits(cfg, 8, cache_dir=tmp_path / "cache")
    assert splits.train.images.shape == (15, 3, 8, 8) and splits.val.images.shape == (9, 3, 8, 8)
    assert splits.train.labels.dtype == torch.int64
    for images, labels in ((splits.train.images, splits.train.labels), (splits.val.images, splits.val.labels)):
        for image, label in zip(images, labels):
            expected = torch.tensor(FOLDER_COLOURS[listed.classes[label]], dtype=torch.float)
            assert (image.float().mean(dim=(1, 2)) - expected).abs().max() < 6  # png exact, jpg close


@pytest.mark.parametrize("held", ["val", "test"])
def test_imagefolder_three_splits_from_train_and_one_held_out_folder(tmp_path, held):
    """With train/ and one of val/ or test/, that folder is test and val is 10% of each
    class of train/ (at least one image): the same images in every run."""
    root = make_folder(tmp_path / "data", held, counts={"train": 20, held: 3})
    listed = DATASETS["imagefolder"](DataConfig(name="imagefolder", root=str(root)), 8)
    assert listed.train.labels == [0] * 18 + [1] * 18 + [2] * 18 and listed.val.labels == [0] * 2 + [1] * 2 + [2] * 2
    assert listed.test.labels == [0] * 3 + [1] * 3 + [2] * 3 and all(f.parts[-3] == held for f in listed.test.files)
    assert all(f.parts[-3] == "train" for f in listed.train.files + listed.val.files)
    assert not set(listed.train.files) & set(listed.val.files)
    again = DATASETS["imagefolder"](DataConfig(name="imagefolder", root=str(root), seed=9), 8)
    assert again.val.files == listed.val.files
    splits = load_splits(DataConfig(name="imagefolder", root=str(root), val_size=4), 8, cache_dir=tmp_path / "cache")
    assert [len(s.labels) for s in (splits.train, splits.val, splits.test)] == [54, 4, 9]
    assert all(isinstance(s, ArraySplit) for s in (splits.train, splits.val, splits.test))


def test_imagefolder_with_val_and_test_folders_uses_both(tmp_path):
    root = make_folder(tmp_path / "data", counts={"train": 4, "val": 2, "test": 3})
    listed = DATASETS["imagefolder"](DataConfig(name="imagefolder", root=str(root)), 8)
    assert len(listed.train.files) == 12 and all(f.parts[-3] == "train" for f in listed.train.files)
    assert len(listed.val.files) == 6 and all(f.parts[-3] == "val" for f in listed.val.files)
    assert len(listed.test.files) == 9 and all(f.parts[-3] == "test" for f in listed.test.files)
    former = DATASETS["imagefolder"](DataConfig(name="imagefolder", root=str(root), splits="train_val"), 8)
    assert former.val.files == listed.val.files and former.test is None


def test_imagefolder_too_few_images_to_hold_out_val(tmp_path):
    root = make_folder(tmp_path / "data", counts={"train": 1, "val": 1})
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(name="imagefolder", root=str(root)), 8)
    message = str(err.value)
    assert "at least 2" in message and "test/" in message and "data.splits=train_val" in message


def test_imagefolder_class_missing_from_a_split(tmp_path):
    root = make_folder(tmp_path)
    for f in (root / "val" / "dog").iterdir():
        f.unlink()
    (root / "val" / "dog").rmdir()
    with pytest.raises(DataError, match="dog"):
        load_splits(DataConfig(name="imagefolder", root=str(root)), 8)


def test_imagefolder_class_without_images(tmp_path):
    root = make_folder(tmp_path)
    for f in (root / "train" / "ant").glob("*[gG]"):
        f.unlink()
    with pytest.raises(DataError, match="'ant' has no images"):
        load_splits(DataConfig(name="imagefolder", root=str(root)), 8)


def test_imagefolder_missing_root_says_how_to_point_at_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(name="imagefolder", root=str(tmp_path / "nowhere")), 8)
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "data.root" in message and "train/<class>" in message


def test_imagefolder_without_a_val_split(tmp_path):
    root = make_folder(tmp_path, counts={"train": 2})
    with pytest.raises(DataError, match="val/"):
        load_splits(DataConfig(name="imagefolder", root=str(root)), 8)


def add_bad_files(root: Path) -> list[Path]:
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(good, "PNG")
    truncated = root / "train" / "cat" / "truncated.png"
    truncated.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    garbage = root / "train" / "dog" / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg" * 20)
    empty = root / "train" / "ant" / "empty.jpeg"
    empty.write_bytes(b"")
    return [truncated, garbage, empty]


@pytest.mark.parametrize("in_memory", [True, False], ids=["decoded", "on-the-fly"])
def test_bad_files_error_names_them(tmp_path, monkeypatch, in_memory):
    root = make_folder(tmp_path / "data")
    bad = add_bad_files(root)
    if not in_memory:
        monkeypatch.setattr(registry, "IN_MEMORY_LIMIT_BYTES", 0)
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(name="imagefolder", root=str(root), bad_files="error", splits="train_val"), 8, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "3 unreadable" in message and "data.bad_files=skip" in message
    for f in bad:
        assert str(f) in message


@pytest.mark.parametrize("in_memory", [True, False], ids=["decoded", "on-the-fly"])
def test_bad_files_skip_warns_and_drops_them(tmp_path, monkeypatch, caplog, in_memory):
    root = make_folder(tmp_path / "data")
    bad = add_bad_files(root)
    if not in_memory:
        monkeypatch.setattr(registry, "IN_MEMORY_LIMIT_BYTES", 0)
    with caplog.at_level(logging.WARNING, logger="data.registry"):
        splits = load_splits(DataConfig(name="imagefolder", root=str(root), bad_files="skip", splits="train_val"), 8, cache_dir=tmp_path / "cache")
    assert "skipping 3 of 18 image files in the train split" in caplog.text
    assert len(splits.train.labels) == 15 and len(splits.val.labels) == 9
    if in_memory:
        assert isinstance(splits.train, ArraySplit) and splits.train.images.shape[0] == 15
        assert splits.train.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    else:
        assert isinstance(splits.train, FileSplit) and not set(bad) & set(splits.train.files)
        assert splits.train.labels == [0] * 5 + [1] * 5 + [2] * 5


# ---------------------------------------------------------------- the cache


def test_decoded_cache_is_read_back_and_invalidated(tmp_path):
    root = make_folder(tmp_path / "data")
    cfg = DataConfig(name="imagefolder", root=str(root))
    cache = tmp_path / "cache"
    first = load_splits(cfg, 8, cache_dir=cache)
    assert len(list(cache.glob("decoded-*.npz"))) == 3  # train, val (held out of train/) and test
    # break a file but keep its size and time stamp: only a cache hit can still read it
    victim = root / "train" / "cat" / "000.png"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = load_splits(cfg, 8, cache_dir=cache)
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert a.images.dtype == b.images.dtype == torch.uint8
    # a changed file is a new cache key: decoded again, and found broken
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="000.png"):
        load_splits(cfg, 8, cache_dir=cache)
    # a different stored size is another cache entry
    assert load_splits(DataConfig(name="imagefolder", root=str(root), bad_files="skip"), 6, cache_dir=cache).train.images.shape[-1] == 6


def test_decoded_cache_follows_the_labels(tmp_path):
    files = [save(tmp_path / f"{i}.png", solid((i * 50, 0, 0))) for i in range(3)]
    cfg = DataConfig(name="imagefolder", root=str(tmp_path))
    a = materialise(FileSplit(files, [0, 1, 2]), 8, cfg, "train", tmp_path / "cache")
    b = materialise(FileSplit(files, [2, 1, 0]), 8, cfg, "train", tmp_path / "cache")
    assert a.labels.tolist() == [0, 1, 2] and b.labels.tolist() == [2, 1, 0]


def test_unwritable_cache_still_loads(tmp_path, caplog):
    root = make_folder(tmp_path / "data")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should go")
    with caplog.at_level(logging.WARNING, logger="data.registry"):
        splits = load_splits(DataConfig(name="imagefolder", root=str(root)), 8, cache_dir=blocker / "cache")
    assert splits.train.images.shape == (12, 3, 8, 8) and splits.val.images.shape == (3, 3, 8, 8) and splits.test.images.shape == (9, 3, 8, 8)
    assert "cache" in caplog.text


# ------------------------------------------------------------------- shapes


def foreground_x(images: np.ndarray) -> np.ndarray:
    """Per image, the mean x (in [-1, 1]) of the pixels far from the image's median colour."""
    f = images.astype(np.float64) / 255
    median = np.median(f.reshape(len(f), 3, -1), axis=2)[:, :, None, None]
    fg = np.abs(f - median).sum(axis=1) > 0.5
    grid = (np.arange(images.shape[-1]) + 0.5) / images.shape[-1] * 2 - 1
    return (fg * grid).sum(axis=(1, 2)) / np.maximum(fg.sum(axis=(1, 2)), 1)


def test_shapes_deterministic_in_seed_and_split():
    a, la = make_shapes(64, 32, 0, "train")
    b, lb = make_shapes(64, 32, 0, "train")
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    c, _ = make_shapes(64, 32, 1, "train")
    v, _ = make_shapes(64, 32, 0, "val")
    t, _ = make_shapes(64, 32, 0, "test")
    assert not np.array_equal(a, c) and not np.array_equal(a, v) and not np.array_equal(v, t)
    again, _ = make_shapes(64, 32, 0, "val")
    assert np.array_equal(v, again)


@pytest.mark.parametrize("size", [32, 67])
def test_shapes_any_size_all_classes(size):
    cfg = DataConfig(name="shapes", train_size=300, val_size=120, test_size=90)
    splits = load_splits(cfg, size)
    assert splits.classes == CLASSES and len(CLASSES) == 10
    for split, n in ((splits.train, 300), (splits.val, 120), (splits.test, 90)):
        assert split.images.shape == (n, 3, size, size) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64 and set(split.labels.tolist()) == set(range(10))
        assert split.images.float().std() > 30  # not blank


@pytest.mark.parametrize("held", ["val", "test"])
def test_shapes_val_and_test_are_shifted_right(held):
    train, _ = make_shapes(600, 32, 0, "train")
    val, _ = make_shapes(600, 32, 0, held)
    tx, vx = foreground_x(train), foreground_x(val)
    assert tx.mean() < -0.05 and vx.mean() > 0.05
    # every validation shape stands right of the training range's left part, mirrored or not
    assert (vx < -0.25).mean() < 0.05 and (tx < -0.25).mean() > 0.15


def test_shapes_test_split_follows_val_size_and_the_protocol():
    assert len(load_splits(DataConfig(name="shapes", train_size=64, val_size=48), 16).test.labels) == 48
    assert load_splits(DataConfig(name="shapes", train_size=64, val_size=48, splits="train_val"), 16).test is None


def shape_masks(images: np.ndarray) -> np.ndarray:
    """Per image, the pixels of the shape: far from the background (the median colour)
    and close to the shape's own colour (the background's gradient is not)."""
    f = images.astype(np.float64) / 255
    deviation = np.abs(f - np.median(f.reshape(len(f), 3, -1), axis=2)[:, :, None, None]).sum(axis=1)
    masks = np.zeros(deviation.shape, bool)
    for k in range(len(f)):
        candidates = deviation[k] > 0.5
        if candidates.sum() >= 5:
            colour = np.median(f[k][:, candidates], axis=1)[:, None, None]
            masks[k] = (np.abs(f[k] - colour).sum(axis=0) < 0.3) & (deviation[k] > 0.3)
    return masks


def test_shapes_val_mirrors_the_asymmetric_shapes():
    """The L's foot points right in training, either way in validation (half are mirrored)."""

    def foot_right(images):
        out = []
        for m in shape_masks(images):
            xs = np.nonzero(m)[1]
            if len(xs) > 20:
                out.append((xs.max() - xs.mean()) > (xs.mean() - xs.min()))
        return np.asarray(out)

    (train, tl), (val, vl) = make_shapes(800, 48, 0, "train"), make_shapes(800, 48, 0, "val")
    ell = CLASSES.index("ell")
    assert foot_right(train[tl == ell]).mean() > 0.75
    assert 0.3 < foot_right(val[vl == ell]).mean() < 0.7


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="the shared CIFAR-10 JPEGs are not on this machine")
def test_real_cifar10_jpegs_through_imagefolder(tmp_path):
    cfg = DataConfig(name="imagefolder", root=str(CIFAR_JPEG), train_size=500, val_size=200, test_size=300, download=False)
    listed = DATASETS["imagefolder"](cfg, 32)
    # train/ and test/: val is 500 of each class's 5,000 training images, test/ is test
    assert [len(s.files) for s in (listed.train, listed.val, listed.test)] == [45_000, 5_000, 10_000]
    assert np.bincount(listed.val.labels).tolist() == [500] * 10 and not set(listed.train.files) & set(listed.val.files)
    assert all(f.parts[-3] == "test" for f in listed.test.files)
    splits = load_splits(cfg, 32, cache_dir=tmp_path / "cache")
    assert splits.classes == sorted(CIFAR_NAMES)
    assert splits.train.images.shape == (500, 3, 32, 32) and splits.val.images.shape == (200, 3, 32, 32) and splits.test.images.shape == (300, 3, 32, 32)
    assert set(splits.train.labels.tolist()) == set(range(10))
    assert splits.train.images.float().std() > 30


# --------------------------------------------------------------- samplers


def test_global_batches_are_the_same_on_any_world_size():
    n, batch = 103, 8
    single = list(GlobalBatchSampler(n, batch, 1, 0, seed=4))
    ranks = [list(GlobalBatchSampler(n, batch, 2, r, seed=4)) for r in range(2)]
    assert len(single) == 96 == len(GlobalBatchSampler(n, batch, 1, 0, seed=4))  # the partial batch dropped
    assert all(len(r) == 48 == len(GlobalBatchSampler(n, batch, 2, 0, seed=4)) for r in ranks)
    assert len(set(single)) == 96 and set(single) <= set(range(n))
    for b in range(n // batch):
        whole = single[b * batch : (b + 1) * batch]
        halves = [r[b * 4 : (b + 1) * 4] for r in ranks]
        assert halves[0] + halves[1] == whole
        assert not set(halves[0]) & set(halves[1])


def test_global_batches_change_with_epoch_and_seed():
    sampler = GlobalBatchSampler(64, 16, 1, 0, seed=0)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    assert list(GlobalBatchSampler(64, 16, 1, 0, seed=1)) != epoch0
    two = [GlobalBatchSampler(64, 16, 2, r, seed=0) for r in range(2)]
    for s in two:
        s.set_epoch(1)
    assert sorted(list(two[0]) + list(two[1])) == sorted(epoch1)


@pytest.mark.parametrize("n", [0, 1, 5, 9, 10, 103])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shards_cover_the_split_once(n, world):
    shards = [list(ShardSampler(n, world, r)) for r in range(world)]
    assert sum(shards, []) == list(range(n))  # every index once, in order, no padding
    sizes = [len(s) for s in shards]
    assert sizes == [len(ShardSampler(n, world, r)) for r in range(world)]
    assert max(sizes) - min(sizes) <= 1  # no rank idles while another works


# ------------------------------------------------------------ data module


def shapes_module(tmp_path, **kw) -> AblationDataModule:
    cfg = DataConfig(name="shapes", train_size=96, val_size=40, batch_size=16, **kw)
    dm = AblationDataModule(cfg, 32, seed=1, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    return dm


def test_datamodule_loaders(tmp_path):
    dm = shapes_module(tmp_path)
    assert dm.num_classes == 10 and dm.side == 32
    assert set(dm.stats) == {"mean", "std", "eigval", "eigvec", "mean_image"} and dm.stats["mean_image"].shape == (3, 32, 32)
    train = list(dm.train_dataloader())
    assert len(train) == 6
    seen = []
    for images, labels in train:
        assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.shape == (16,) and labels.dtype == torch.int64
        seen.append(images)
    order = list(dm.train_dataloader().sampler)
    assert torch.equal(torch.cat(seen), dm.splits.train.images[order])
    for loader, split in ((dm.val_dataloader(), dm.splits.val), (dm.test_loader(), dm.splits.test)):
        batches = list(loader)
        assert [len(labels) for _, labels in batches] == [16, 16, 8]
        assert torch.equal(torch.cat([x for x, _ in batches]), split.images)
        assert torch.equal(torch.cat([y for _, y in batches]), split.labels)
    shards = [torch.cat([y for _, y in dm.test_loader(2, r)]) for r in range(2)]
    assert [len(y) for y in shards] == [20, 20] and torch.equal(torch.cat(shards), dm.splits.test.labels)  # sharded as val is
    assert set(dm.describe()) == {"train", "val", "test"} and dm.describe()["test"]["name"] == "shapes-test"


def test_datamodule_extended_runs_albumentations_per_image(tmp_path):
    dm = shapes_module(tmp_path, augment="extended")
    loader = dm.train_dataloader()
    order = list(loader.sampler)[:16]
    images, labels = next(iter(loader))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    original = dm.splits.train.images[order]
    assert torch.equal(labels, dm.splits.train.labels[order])
    changed = (images != original).flatten(1).any(dim=1)
    assert changed.sum() >= 12  # colour jitter, affine and cut-out, image by image
    val_images, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(val_images, dm.splits.val.images[:16])  # evaluation is untouched


def test_datamodule_decodes_files_on_the_fly(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", counts={"train": 6, "val": 2})
    monkeypatch.setattr(registry, "IN_MEMORY_LIMIT_BYTES", 0)
    cfg = DataConfig(name="imagefolder", root=str(root), batch_size=4, augment="extended")
    dm = AblationDataModule(cfg, 10, seed=0, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    assert isinstance(dm.splits.train, FileSplit) and isinstance(dm.splits.test, FileSplit) and dm.num_classes == 3
    batches = list(dm.train_dataloader())
    assert len(batches) == 3  # 15 images: one of each class's 6 is held out as val
    for images, labels in batches:
        assert images.shape == (4, 3, 10, 10) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    images, labels = next(iter(dm.val_dataloader()))
    assert labels.tolist() == [0, 1, 2]
    images, labels = next(iter(dm.test_loader()))
    assert labels.tolist() == [0, 0, 1, 1]  # the val/ folder, the test split
    assert (images[0].float().mean(dim=(1, 2)) - torch.tensor(FOLDER_COLOURS["ant"], dtype=torch.float)).abs().max() < 6


def test_datamodule_batch_larger_than_the_data(tmp_path):
    cfg = DataConfig(name="shapes", train_size=10, val_size=10, batch_size=16)
    with pytest.raises(DataError, match="data.batch_size"):
        AblationDataModule(cfg, 32, cache_dir=tmp_path).setup("fit")
