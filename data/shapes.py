"""`shapes`: a synthetic, offline 10-class dataset for demos and tests.

Coloured shapes with nuisance variation: position, scale, rotation, foreground
and background colour, a background gradient and pixel noise. The held-out splits
(val and test) are shifted on purpose, so that the regularisers under study have something to
do: their shapes sit further right than the training shapes (random crops help),
half of them are mirrored, and two classes (the half-disc and the L) are not
mirror-symmetric (horizontal flips help), and the training set is small enough
to overfit (dropout helps). Val and test are independent draws from that shifted
distribution. Generation is deterministic in (seed, split).
"""

from __future__ import annotations

import numpy as np

CLASSES = ["disc", "square", "triangle", "cross", "ring", "diamond", "striped", "half_disc", "star", "ell"]

# split -> (x-centre range, probability of a mirrored image); each split draws its own stream
_SPLITS = {"train": ((-0.4, 0.15), 0.0), "val": ((-0.15, 0.4), 0.5), "test": ((-0.15, 0.4), 0.5)}


def _masks(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u**2 + v**2)
    phi = np.arctan2(v, u)
    shapes = [
        r < 1.0,
        np.maximum(abs(u), abs(v)) < 0.8,
        (abs(v) < 0.8) & (abs(u) < (v + 0.8) * 0.55),
        ((abs(u) < 0.28) & (abs(v) < 0.95)) | ((abs(v) < 0.28) & (abs(u) < 0.95)),
        (r > 0.55) & (r < 1.0),
        abs(u) + abs(v) < 1.05,
        (r < 1.0) & (np.sin(3 * np.pi * u) > 0),
        (r < 1.0) & (u > -0.05),
        r < 0.5 + 0.45 * np.cos(5 * phi),
        ((abs(u + 0.45) < 0.28) & (abs(v) < 0.95)) | ((abs(v - 0.67) < 0.28) & (u > -0.73) & (u < 0.8)),
    ]
    stacked = np.stack(shapes, axis=0)  # [10, n, H, W]
    return np.take_along_axis(stacked, label[None, :, None, None], axis=0)[0]


def make_shapes(n: int, size: int, seed: int, split: str, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 images [n, 3, size, size], int64 labels [n])."""
    (x_lo, x_hi), p_mirror = _SPLITS[split]
    rng = np.random.default_rng([seed, list(_SPLITS).index(split)])
    labels = rng.integers(0, len(CLASSES), n)
    images = np.empty((n, 3, size, size), np.uint8)
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        m = len(lab)
        cx = rng.uniform(x_lo, x_hi, m)[:, None, None]
        cy = rng.uniform(-0.25, 0.25, m)[:, None, None]
        scale = rng.uniform(0.35, 0.6, m)[:, None, None]
        theta = rng.uniform(-np.pi / 6, np.pi / 6, m)[:, None, None]
        dx, dy = xx[None] - cx, yy[None] - cy
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / scale
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / scale
        mask = _masks(lab, u, v)[:, None]  # [m, 1, H, W]
        bg = rng.uniform(0.0, 1.0, (m, 3, 1, 1))
        fg = rng.uniform(0.0, 1.0, (m, 3, 1, 1))
        # keep the shape visible: push the foreground away from the background
        close = np.abs(fg - bg).sum(axis=1, keepdims=True) < 0.6
        fg = np.where(close, 1.0 - bg, fg)
        gradient = rng.uniform(-0.2, 0.2, (m, 3, 1, 1)) * xx[None, None] + rng.uniform(-0.2, 0.2, (m, 3, 1, 1)) * yy[None, None]
        noise = rng.normal(0.0, rng.uniform(0.02, 0.1, (m, 1, 1, 1)), (m, 3, size, size))
        mirror = rng.uniform(size=m) < p_mirror
        if mirror.any():  # mirror the shape about its own axis, where it stands (not the image)
            mask[mirror] = _masks(lab[mirror], -u[mirror], v[mirror])[:, None]
        img = np.where(mask, fg, bg + gradient) + noise
        images[start : start + m] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)
