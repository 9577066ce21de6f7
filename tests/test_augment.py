"""The train and eval pipelines: batched crops, flips, PCA lighting, ten crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.augment import TRAIN_AUGMENTS, BatchPipeline, TrainAugment, image_statistics, stored_size

PLAIN = TrainAugment(crop=False, flip=False, lighting=0.0)


def random_images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture(scope="module")
def stats():
    return image_statistics(random_images(16, 32))


def normalised(images: torch.Tensor, stats) -> torch.Tensor:
    return (images.float() / 255 - stats["mean"][:, None, None]) / stats["std"][:, None, None]


# The pipeline computes x * (1 / (255 std)) - mean / std: a rounding apart from the formula
# above (at most a few 1e-7 for values of order 1); a wrong crop or flip is off by far more.
ATOL = 1e-6


def test_stored_sizes():
    assert stored_size(32) == 32 and stored_size(64) == 64  # small images: kept at the input size
    assert stored_size(227) == 256 and stored_size(224) == 253  # the paper's 256 px for 227 px crops


@pytest.mark.parametrize("augment", sorted(TRAIN_AUGMENTS))
@pytest.mark.parametrize("size, batch", [(32, 8), (227, 2)])
def test_shapes_and_types(stats, augment, size, batch):
    side = stored_size(size)
    images = random_images(batch, side)
    train = BatchPipeline(size, stats, TRAIN_AUGMENTS[augment])
    out = train.train_batch(images)
    assert out.shape == (batch, 3, size, size) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert images.dtype == torch.uint8  # the input is left alone
    evaluated = train.eval_batch(images)
    assert evaluated.shape == (batch, 3, size, size) and evaluated.dtype == torch.float32 and evaluated.is_contiguous()
    ten = BatchPipeline(size, stats, TRAIN_AUGMENTS[augment], ten_crop=True).eval_batch(images)
    assert ten.shape == (batch, 10, 3, size, size) and ten.dtype == torch.float32 and torch.isfinite(ten).all()


def test_eval_crops_are_the_papers(stats):
    images = random_images(3, 256)
    full = normalised(images, stats)
    s, m = 227, 29
    centre = BatchPipeline(s, stats, PLAIN).eval_batch(images)
    assert torch.allclose(centre, full[:, :, 14 : 14 + s, 14 : 14 + s], atol=ATOL)
    ten = BatchPipeline(s, stats, PLAIN, ten_crop=True).eval_batch(images)
    corners = [full[:, :, :s, :s], full[:, :, :s, m:], full[:, :, m:, :s], full[:, :, m:, m:], full[:, :, 14 : 14 + s, 14 : 14 + s]]
    for k, crop in enumerate(corners):
        assert torch.allclose(ten[:, k], crop, atol=ATOL)
        assert torch.allclose(ten[:, 5 + k], crop.flip(-1), atol=ATOL)  # and their mirror images


@pytest.mark.parametrize("augment", sorted(TRAIN_AUGMENTS))
def test_seeded_and_deterministic(stats, augment):
    pipe = BatchPipeline(32, stats, TRAIN_AUGMENTS[augment])
    images = random_images(16, 32)
    torch.manual_seed(0)
    a = pipe.train_batch(images)
    torch.manual_seed(0)
    b = pipe.train_batch(images)
    assert torch.equal(a, b)
    torch.manual_seed(1)
    c = pipe.train_batch(images)
    if augment == "none":
        assert torch.equal(a, c)
        assert torch.equal(a, pipe.eval_batch(images))  # no augmentation: the eval centre crop
    else:
        assert not torch.allclose(a, c)


def test_none_is_the_centre_crop_at_stored_256(stats):
    pipe = BatchPipeline(227, stats, TRAIN_AUGMENTS["none"])
    images = random_images(2, 256)
    torch.manual_seed(0)
    a = pipe.train_batch(images)
    torch.manual_seed(5)
    assert torch.equal(a, pipe.train_batch(images)) and torch.allclose(a, pipe.eval_batch(images))


def test_random_crops_are_crops_of_the_padded_image(stats):
    """32 px images stored at 32: crops of a copy zero-padded by 4 (zero is the mean colour)."""
    pipe = BatchPipeline(32, stats, TrainAugment(crop=True, flip=False, lighting=0.0))
    images = random_images(32, 32)
    torch.manual_seed(0)
    out = pipe.train_batch(images)
    padded = torch.nn.functional.pad(normalised(images, stats), [4] * 4)
    offsets = []
    for k in range(len(images)):
        found = [(dy, dx) for dy in range(9) for dx in range(9) if torch.allclose(out[k], padded[k, :, dy : dy + 32, dx : dx + 32], atol=ATOL)]
        assert len(found) == 1
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # offsets vary from image to image
    assert {dy for dy, _ in offsets} >= {0, 8} or {dx for _, dx in offsets} >= {0, 8}  # the extremes are reachable
    assert (out == 0).any()  # some padding shows


def test_random_crops_from_stored_256(stats):
    pipe = BatchPipeline(227, stats, TrainAugment(crop=True, flip=False, lighting=0.0))
    images = random_images(4, 256)
    torch.manual_seed(3)
    out = pipe.train_batch(images)
    full = normalised(images, stats)
    for k in range(4):
        # the top-left pixel locates the crop; the whole crop must then match
        hits = (full[k, 0, :30, :30] - out[k, 0, 0, 0]).abs() < ATOL
        matches = [(dy, dx) for dy, dx in hits.nonzero().tolist() if torch.allclose(out[k], full[k, :, dy : dy + 227, dx : dx + 227], atol=ATOL)]
        assert len(matches) == 1


def test_flips_mirror_some_images(stats):
    pipe = BatchPipeline(32, stats, TrainAugment(crop=False, flip=True, lighting=0.0))
    images = random_images(64, 32)
    torch.manual_seed(0)
    out = pipe.train_batch(images)
    plain = normalised(images, stats)
    same = torch.isclose(out, plain, atol=ATOL).flatten(1).all(dim=1)
    mirrored = torch.isclose(out, plain.flip(-1), atol=ATOL).flatten(1).all(dim=1)
    assert (same ^ mirrored).all()  # each image is itself or its mirror image
    assert 16 < mirrored.sum() < 48  # about half are mirrored


# -------------------------------------------------------------- PCA lighting


def known_covariance():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    cov = q @ np.diag([0.012, 0.004, 0.001]) @ q.T
    return cov


def coloured_images(cov: np.ndarray, n: int = 200, side: int = 16) -> torch.Tensor:
    """Pixels drawn from N([0.5, 0.45, 0.4], cov), in uint8."""
    rng = np.random.default_rng(1)
    pixels = rng.multivariate_normal([0.5, 0.45, 0.4], cov, size=n * side * side)
    images = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    return torch.from_numpy(images.reshape(n, side, side, 3).transpose(0, 3, 1, 2).copy())


def test_image_statistics_recover_the_colour_covariance():
    cov = known_covariance()
    images = coloured_images(cov)
    stats = image_statistics(images)
    true_val, true_vec = np.linalg.eigh(cov)
    assert np.allclose(stats["eigval"].numpy(), true_val, rtol=0.05)
    for i in range(3):  # eigenvectors, up to sign
        assert abs(float(stats["eigvec"][:, i].double() @ torch.from_numpy(true_vec[:, i]))) > 0.99
    assert np.allclose(stats["mean"].numpy(), [0.5, 0.45, 0.4], atol=0.005)
    assert np.allclose(stats["std"].numpy(), np.sqrt(np.diag(cov)), rtol=0.03)
    # exactly the sample statistics of the pixels, however they are chunked
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double().numpy() / 255
    sample_val, sample_vec = np.linalg.eigh(np.cov(pixels))
    for chunk in (7, 64, 1000):
        s = image_statistics(images, chunk=chunk)
        assert np.allclose(s["eigval"].numpy(), sample_val, rtol=1e-4)
        assert np.allclose(s["mean"].numpy(), pixels.mean(axis=1), atol=1e-6)
        assert np.allclose(s["std"].numpy(), pixels.std(axis=1, ddof=1), rtol=1e-4)
        assert np.allclose(np.abs(s["eigvec"].numpy().T @ sample_vec), np.eye(3), atol=1e-3)


def test_image_statistics_uses_a_seeded_subset():
    images = coloured_images(known_covariance(), n=60, side=8)
    a = image_statistics(images, max_images=20, seed=0)
    b = image_statistics(images, max_images=20, seed=0)
    c = image_statistics(images, max_images=20, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mean"], c["mean"])


def test_lighting_noise_has_the_papers_covariance():
    """The colour shift is sum_i alpha_i lambda_i p_i with alpha_i ~ N(0, 0.1):
    covariance P diag((0.1 lambda)^2) P^T, isolated on a uniform grey batch."""
    stats = image_statistics(coloured_images(known_covariance()))
    pipe = BatchPipeline(32, stats, TRAIN_AUGMENTS["paper"])
    grey = torch.full((4000, 3, 32, 32), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    out = pipe.train_batch(grey)
    centre = out[:, :, 12:20, 12:20]  # never padding, whatever the crop
    assert torch.allclose(centre, centre[:, :, :1, :1].expand_as(centre), atol=1e-5)  # one shift per image
    shift = (centre[:, :, 0, 0].double() * stats["std"].double() + stats["mean"].double() - 128 / 255).numpy()
    val, vec = stats["eigval"].double().numpy(), stats["eigvec"].double().numpy()
    expected = vec @ np.diag((0.1 * val) ** 2) @ vec.T
    measured = np.cov(shift.T)
    assert np.abs(shift.mean(axis=0)).max() < 4 * 0.1 * val.max() / np.sqrt(len(shift))
    assert np.linalg.norm(measured - expected) < 0.15 * np.linalg.norm(expected)
    along = np.var(shift @ vec, axis=0, ddof=1)  # the variance along each principal component
    assert np.allclose(along, (0.1 * val) ** 2, rtol=0.15)


def test_no_lighting_without_it(stats):
    grey = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    for name, augment in TRAIN_AUGMENTS.items():
        out = BatchPipeline(32, stats, augment).train_batch(grey)[:, :, 12:20, 12:20]
        spread = out.flatten(2).std(dim=0).max()
        assert (spread > 1e-3) == (augment.lighting > 0), name
