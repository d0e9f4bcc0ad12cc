"""The memorisation audit of a synthetic set: each synthetic image's nearest real TRAIN image in pixel and feature
space, the images flagged as near-copies, the rate the same rule flags among real images by chance, and a picture
of the closest pairs. Works on a trainables.metrics.generative.RealReference (its audit_* arrays)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from trainables.metrics.primitives import nearest_neighbours, pixel_vectors

MEMORISATION_PERCENTILE = 5.0  # flag synthetic images closer to a train image than this pct of real-real NN distances


def chance_rate(ref, percentile: float = MEMORISATION_PERCENTILE) -> tuple[float, float, float]:
    """(pixel threshold, feature threshold, share of real train images the rule flags among themselves)."""
    thr_px = float(np.percentile(ref.audit_nn_pixel, percentile))
    thr_ft = float(np.percentile(ref.audit_nn_feature, percentile))
    return thr_px, thr_ft, float(((ref.audit_nn_pixel <= thr_px) | (ref.audit_nn_feature <= thr_ft)).mean())


def pixel_near_copies(fake: np.ndarray, real_train: np.ndarray, percentile: float = MEMORISATION_PERCENTILE
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The audit's pixel rule on its own (no feature network): fake is flagged when its RMS distance to the nearest
    real train image is <= the `percentile`-th percentile of the train images' distances to their own nearest
    other train image. -> (flags, nn distances, nn indices into real_train, threshold). Curation uses it
    (trainables.classifier.curation) to drop near-copies before a classifier trains on them."""
    train = pixel_vectors(real_train)
    if len(train) < 2:
        raise ValueError(f"the near-copy rule needs at least 2 real training images, got {len(train)}")
    thr = float(np.percentile(nearest_neighbours(train, train, exclude_self=True)[0][:, 0], percentile))
    d, i = nearest_neighbours(pixel_vectors(fake), train)
    return d[:, 0] <= thr, d[:, 0], i[:, 0], thr


def memorisation_audit(fake: np.ndarray, fake_features: np.ndarray, ref,
                       percentile: float = MEMORISATION_PERCENTILE) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Nearest real TRAIN image of each synthetic image, in pixel (RMS, 0..1) and feature space.

    A synthetic image is flagged when it is at least as close to a training image as the `percentile`-th
    percentile of real-to-real nearest-neighbour distances, in either space. A generator that samples the
    real distribution without copying gets about percentile/100 flagged per space by chance (reported as
    memorised_fraction_expected_by_chance, the same rule applied to the real train images); planted copies and
    near copies sit far below the threshold. -> (summary, per-image arrays).
    """
    d_px, i_px = nearest_neighbours(pixel_vectors(fake), pixel_vectors(ref.audit_pixels))
    d_ft, i_ft = nearest_neighbours(fake_features, ref.audit_features)
    # chance: what the same rule flags among the real train images themselves (own image excluded), the rate a
    # generator that samples the real distribution without copying would get by chance (5-10 %)
    thr_px, thr_ft, chance = chance_rate(ref, percentile)
    flag_px = d_px[:, 0] <= thr_px
    flag_ft = d_ft[:, 0] <= thr_ft
    flagged = flag_px | flag_ft
    summary = {
        "memorised_fraction_expected_by_chance": chance,
        "memorised_fraction": float(flagged.mean()),
        "memorised_fraction_pixel": float(flag_px.mean()),
        "memorised_fraction_feature": float(flag_ft.mean()),
        "memorised_count": int(flagged.sum()),
        "memorisation_percentile": percentile,
        "memorisation_threshold_pixel": thr_px,
        "memorisation_threshold_feature": thr_ft,
        "nn_train_pixel_distance_min": float(d_px.min()),
        "nn_train_pixel_distance_median": float(np.median(d_px)),
        "nn_train_feature_distance_min": float(d_ft.min()),
        "nn_train_feature_distance_median": float(np.median(d_ft)),
    }
    per_image = {"nn_pixel_distance": d_px[:, 0], "nn_pixel_index": i_px[:, 0], "nn_feature_distance": d_ft[:, 0],
                 "nn_feature_index": i_ft[:, 0], "flag_pixel": flag_px, "flag_feature": flag_ft,
                 "flagged": flagged}
    return summary, per_image


def save_closest_pairs_png(fake: np.ndarray, real: np.ndarray, per_image: dict[str, np.ndarray],
                           path: str | Path, num_pairs: int = 16) -> Path:
    """Grid of the synthetic images closest (pixel RMS) to a training image, each beside that image."""
    order = np.argsort(per_image["nn_pixel_distance"])[:num_pairs]
    items = [(fake[j], real[per_image["nn_pixel_index"][j]], f"syn {j}{'!' if per_image['flagged'][j] else ''}",
              f"train d={per_image['nn_pixel_distance'][j]:.3f}") for j in order]
    return save_pairs_png(items, "closest synthetic (left) / real train (right) pairs; ! = flagged", path)


def save_pairs_png(items: list, title: str, path: str | Path, left_color: str = "black", cols: int = 4) -> Path:
    """A grid of (synthetic image, real image, left title, right title) pairs, synthetic on the left: the
    memorisation audit's closest pairs and curation's dropped images (trainables.classifier.curation)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.3, rows * 1.55 + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for n, (syn, real, t_left, t_right) in enumerate(items):
        r, c = divmod(n, cols)
        for side, (img, t) in enumerate(((syn, t_left), (real, t_right))):
            ax = axes[r, 2 * c + side]
            gray = img.shape[-1] == 1
            ax.imshow(img[:, :, 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_title(t, fontsize=6, color=left_color if side == 0 else "black")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ held-out leak audit
# A synthetic image at most this pixel RMS (0..1 range, at a thumbnail of <= LEAK_THUMB px) from a real validation
# or test image is a near-exact copy of it. Distinct real images of the shipped data sets lie >= 0.05 apart
# (PneumoniaMNIST test vs train: minimum 0.050; BreastMNIST's 1% at 0.005 are the source's own cross-split
# duplicates, handled below); a copy re-saved as JPEG (quality 75-95) or resized and back lies at 0.005-0.02.
# The percentile rule of the memorisation audit cannot serve here: it flags 5-10% of a copy-free set by chance.
LEAK_RMS = 0.03
LEAK_THUMB = 64


def thumbnails(images: np.ndarray, side: int = LEAK_THUMB) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, s, s, C) with s = min(H, side) (a near-exact copy stays one when shrunk)."""
    from data_prep.images import resize_uint8

    if images.shape[1] <= side:
        return images
    return np.stack([resize_uint8(im, side) for im in images]) if len(images) else images[:, :side, :side]


def held_out_copies(fake: np.ndarray, held_out: np.ndarray, train: np.ndarray, rms: float = LEAK_RMS
                    ) -> tuple[dict[str, Any], np.ndarray]:
    """Near-exact copies of real HELD-OUT (validation or test) images in a synthetic set: the leak audit.

    fake, held_out, train: uint8 (N, H, W, C) at one size. A synthetic image leaks a held-out image when its pixel
    RMS to it is <= rms, unless that held-out image has a near-exact twin in train (the data set's own duplicate:
    a generator that saw only train could make it). -> (summary, per synthetic image: index of the held-out
    image it copies, -1 for none)."""
    idx = np.full(len(fake), -1, np.int64)
    if not len(fake) or not len(held_out):
        return {"leak_copies": 0, "leak_rms": rms, "held_out_with_train_twin": 0, "leak_nn_min": math.nan}, idx
    f, h = pixel_vectors(thumbnails(fake)), pixel_vectors(thumbnails(held_out))
    d, i = nearest_neighbours(f, h)
    twin = np.zeros(len(held_out), bool)
    if len(train):
        dt, _ = nearest_neighbours(h, pixel_vectors(thumbnails(train)))
        twin = dt[:, 0] <= rms
    hit = (d[:, 0] <= rms) & ~twin[i[:, 0]]
    idx[hit] = i[hit, 0]
    return {"leak_copies": int(hit.sum()), "leak_copied_images": int(len(set(idx[hit].tolist()))),
            "leak_rms": rms, "held_out_with_train_twin": int(twin.sum()), "leak_nn_min": float(d[:, 0].min())}, idx
