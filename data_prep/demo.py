"""The built-in demo dataset: 10:1 imbalanced synthetic "skin lesion" images, made here, never downloaded.

Majority class "benign": a smooth, nearly round, single-coloured brown blob.
Minority class "malignant": an irregular blob (ragged border) with several colour patches.
The minority class has visible structure a GAN can learn and a classifier can use, and the
whole set is a pure function of (counts, size, seed):

    python -m data_prep --source demo --out runs/demo    # writes runs/demo/demo.npz + manifest
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_CLASSES = ("benign", "malignant")
DEMO_SEED = 20240611  # fixed: the demo is the same picture set everywhere


def _lesion(rng: np.random.Generator, size: int, malignant: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, size * 0.05, 2)
    dy, dx = yy - cy, xx - cx
    r = np.hypot(dy, dx) / size
    theta = np.arctan2(dy, dx)
    skin = np.array([224, 180, 150], np.float32) + rng.normal(0, 8, 3)
    img = np.broadcast_to(skin, (size, size, 3)).copy()
    base_r = rng.uniform(0.20, 0.30)
    # Border irregularity overlaps between classes on purpose: a demo that every method
    # classifies perfectly could not show whether augmentation helps.
    amp_lo, amp_hi = (0.05, 0.16) if malignant else (0.0, 0.07)
    border = base_r * (1 + sum(rng.uniform(amp_lo, amp_hi) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
                               for k in rng.choice(np.arange(2, 8), size=3, replace=False)))
    inside = np.clip((border - r) * size / 1.5, 0, 1)[:, :, None]  # soft edge, 1.5 px
    if malignant:
        # colour patches: dark brown, near-black, blue-grey, red, mixed by angle and radius
        palette = np.array([[90, 50, 30], [40, 25, 20], [90, 100, 130], [160, 60, 60]], np.float32)
        pick = rng.choice(len(palette), size=3, replace=False)
        phase = rng.uniform(0, 2 * np.pi)
        w0 = 0.5 + 0.5 * np.sin(2 * theta + phase)
        w1 = np.clip(r / (border + 1e-6), 0, 1)
        mix = (palette[pick[0]] * (w0 * (1 - w1))[:, :, None]
               + palette[pick[1]] * ((1 - w0) * (1 - w1))[:, :, None]
               + palette[pick[2]] * w1[:, :, None])
        brown = np.array([120, 75, 45], np.float32) + rng.normal(0, 10, 3)
        strength = rng.uniform(0.3, 1.0)  # some malignant lesions are only faintly multi-coloured
        colour = brown * (1 - strength) + mix * strength
    else:
        colour = np.array([120, 75, 45], np.float32) + rng.normal(0, 10, 3)
        colour = np.broadcast_to(colour, (size, size, 3))
    img = img * (1 - inside) + colour * inside
    img += rng.normal(0, 4, img.shape)  # sensor noise
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_demo_arrays(num_majority: int = 1000, num_minority: int = 100, size: int = 64,
                     seed: int = DEMO_SEED) -> tuple[np.ndarray, np.ndarray]:
    """-> images uint8 (N, size, size, 3), labels int64 (N,) with 0 = benign, 1 = malignant.

    Each image has its own generator seeded from (seed, class, index), so the set is
    deterministic and one image does not change when the counts do.
    """
    images = np.empty((num_majority + num_minority, size, size, 3), np.uint8)
    labels = np.zeros(num_majority + num_minority, np.int64)
    for i in range(num_majority + num_minority):
        malignant = i >= num_majority
        j = i - num_majority if malignant else i
        rng = np.random.default_rng([seed, int(malignant), j])
        images[i] = _lesion(rng, size, malignant)
        labels[i] = int(malignant)
    return images, labels


def write_demo_npz(path: str | Path, num_majority: int = 1000, num_minority: int = 100,
                   size: int = 64) -> Path:
    """Write the demo set as a flat npz (images, labels, classes); reuse an identical existing file."""
    path = Path(path)
    images, labels = make_demo_arrays(num_majority, num_minority, size)
    if path.exists():
        with np.load(path) as z:
            if (set(z.files) >= {"images", "labels"} and z["images"].shape == images.shape
                    and np.array_equal(z["images"], images) and np.array_equal(z["labels"], labels)):
                return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=images, labels=labels, classes=np.array(DEMO_CLASSES))
    tmp.replace(path)
    return path


def write_demo_pngs(root: str | Path, num_majority: int = 1000, num_minority: int = 100,
                    size: int = 64) -> Path:
    """Write the demo set as a class-folder tree (root/benign/*.png, root/malignant/*.png)."""
    from PIL import Image

    root = Path(root)
    images, labels = make_demo_arrays(num_majority, num_minority, size)
    counters = {0: 0, 1: 0}
    for img, lab in zip(images, labels):
        d = root / DEMO_CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{DEMO_CLASSES[lab]}_{counters[int(lab)]:05d}.png")
        counters[int(lab)] += 1
    return root
