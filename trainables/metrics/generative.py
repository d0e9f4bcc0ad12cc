"""Quality of synthetic images: FID/KID, precision/recall/density/coverage, diversity, SSIM, memorisation audit.

All distribution metrics live in the feature space of one extractor (trainables.metrics.features): the
"domain" CNN trained on the real training split (always available; NOT comparable with published FIDs) or
InceptionV3 from local weights. Pixel-space parts (memorisation, SSIM) do not depend on the extractor.

    evaluate = make_gan_evaluator(manifest, image_size=32, channels=3, cache_dir="runs/cache")
    report.update(evaluate(sample_fn, epoch))      # sample_fn(n) -> uint8 (n, H, W, C); every K epochs
    evaluate_synthetic(real, synthetic, real_train, extractor, out_dir="eval/")   # the full final audit
    python -m trainables.gan.evaluate --checkpoint CKPT --manifest M --out DIR     # the same, from a CLI

The real set's features and statistics (mean, covariance and its square root, k-NN radii, pairwise
distances, real-to-real nearest-neighbour distances) are computed once per (manifest fingerprint, split,
class, extractor, image size, channels) and cached as .npz, so an evaluation pays only for its synthetic
images. FID uses float64 statistics and an eigen-decomposition (sqrt(S_r) S_f sqrt(S_r) is symmetric PSD, so
tr sqrt(S_r S_f) = sum sqrt(eigvalsh(.))). KID is the unbiased MMD^2 with the cubic polynomial kernel of
Binkowski et al. (2018), mean and std over random subsets drawn exactly as torchmetrics draws them.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trainables.metrics.features import describe, extract_features

REFERENCE_VERSION = 1  # bump when what the reference cache holds changes
DIVERSITY_WARN_RATIO = 0.6  # synthetic / real mean pairwise feature distance below this: likely mode collapse
MEMORISATION_PERCENTILE = 5.0  # flag synthetic images closer to a train image than this pct of real-real NN distances
PR_K = 3  # k of the k-NN manifolds (precision/recall, density/coverage); Naeem et al. use 5, Kynkaanniemi 3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
_MAX_FULL_KERNEL = 4096  # KID: precompute full kernel matrices up to this many images per set
_DIVERSITY_MAX = 2000  # mean pairwise distance: subsample larger sets (the mean is estimated well)


# ------------------------------------------------------------------------------------------------------ FID
@dataclass
class GaussianStats:
    mu: np.ndarray  # (d,) float64
    sigma: np.ndarray  # (d, d) float64, unbiased covariance (n - 1)
    n: int
    sqrt_sigma: np.ndarray | None = None  # symmetric PSD square root of sigma, cached for the real set

    def with_sqrt(self) -> "GaussianStats":
        if self.sqrt_sigma is None:
            self.sqrt_sigma = _sqrt_psd(self.sigma)
        return self


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_stats(features: np.ndarray) -> GaussianStats:
    """Features (n, d) -> mean and unbiased covariance in float64."""
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(f)}")
    mu = f.mean(axis=0)
    c = f - mu
    return GaussianStats(mu, (c.T @ c) / (len(f) - 1), len(f))


def frechet_distance(real: GaussianStats, fake: GaussianStats) -> float:
    """||mu_r - mu_f||^2 + tr(S_r) + tr(S_f) - 2 tr sqrt(S_r S_f), in float64."""
    real.with_sqrt()
    m = real.sqrt_sigma @ fake.sigma @ real.sqrt_sigma
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = real.mu - fake.mu
    return float(diff @ diff + np.trace(real.sigma) + np.trace(fake.sigma) - 2.0 * tr_sqrt)


# ------------------------------------------------------------------------------------------------------ KID
def _poly(a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    return (a @ b.T * gamma + coef) ** degree


def _mmd2_unbiased(k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor) -> float:
    m = k_xx.shape[0]
    sxx = k_xx.sum() - k_xx.diagonal().sum()
    syy = k_yy.sum() - k_yy.diagonal().sum()
    return float((sxx + syy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, degree: int = 3, gamma: float | None = None,
                              coef: float = 1.0, seed: int = 0,
                              real_kernel: torch.Tensor | None = None) -> tuple[float, float, int]:
    """Unbiased MMD^2, polynomial kernel (x.y/d + 1)^3, over `subsets` random subsets -> (mean, std, subset size).

    Subsets are drawn like torchmetrics (randperm of real, then of fake, per subset) from a generator seeded
    with `seed`; std is the population std over subsets (torchmetrics' convention). The value is unbiased, so
    it is ~0 (and can be slightly negative) when both sets come from one distribution. subset_size is capped
    at the smaller set. `real_kernel`: precomputed k(real, real), reused across evaluations.
    """
    xr = torch.as_tensor(np.asarray(real, np.float64))
    xf = torch.as_tensor(np.asarray(fake, np.float64))
    n_r, n_f = len(xr), len(xf)
    m = min(subset_size, n_r, n_f)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {n_r} real and {n_f} synthetic")
    gamma = 1.0 / xr.shape[1] if gamma is None else gamma
    g = torch.Generator().manual_seed(seed)
    full = max(n_r, n_f) <= _MAX_FULL_KERNEL
    if full:
        k_rr = real_kernel if real_kernel is not None else _poly(xr, xr, degree, gamma, coef)
        k_ff = _poly(xf, xf, degree, gamma, coef)
        k_rf = _poly(xr, xf, degree, gamma, coef)
    picks = [(torch.randperm(n_r, generator=g)[:m], torch.randperm(n_f, generator=g)[:m]) for _ in range(subsets)]
    if full:
        # Sum of a subset's kernel block = v^T K v with v its indicator vector: all subsets in three matmuls
        # instead of gathering 3 x subsets sub-matrices (same sums, float64).
        v_r = torch.zeros(n_r, subsets, dtype=torch.float64)
        v_f = torch.zeros(n_f, subsets, dtype=torch.float64)
        for s, (pr, pf) in enumerate(picks):
            v_r[pr, s] = 1.0
            v_f[pf, s] = 1.0
        s_rr = ((k_rr @ v_r) * v_r).sum(0) - (k_rr.diagonal()[:, None] * v_r).sum(0)
        s_ff = ((k_ff @ v_f) * v_f).sum(0) - (k_ff.diagonal()[:, None] * v_f).sum(0)
        s_rf = ((k_rf @ v_f) * v_r).sum(0)
        v = ((s_rr + s_ff) / (m * (m - 1)) - 2.0 * s_rf / (m * m)).numpy()
    else:
        values = []
        for pr, pf in picks:
            a, b = xr[pr], xf[pf]
            values.append(_mmd2_unbiased(_poly(a, a, degree, gamma, coef), _poly(a, b, degree, gamma, coef),
                                         _poly(b, b, degree, gamma, coef)))
        v = np.asarray(values)
    return float(v.mean()), float(v.std()), m


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` chunks -> (mean, std), as torchmetrics computes it."""
    lg = torch.as_tensor(np.asarray(logits, np.float64))
    prob, log_prob = lg.softmax(dim=1), lg.log_softmax(dim=1)
    scores = []
    for p, lp in zip(prob.chunk(splits), log_prob.chunk(splits)):
        mean_p = p.mean(dim=0, keepdim=True)
        kl = (p * (lp - mean_p.log())).sum(dim=1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std()) if len(s) > 1 else 0.0


# ------------------------------------------------------------------------------------------------ neighbours
def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float64 matmul form: exact copies come out at ~1e-7, far below any real-to-real distance
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0.0).sqrt_()


def nearest_neighbours(query: np.ndarray, ref: np.ndarray, *, k: int = 1, exclude_self: bool = False,
                       chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean k nearest rows of `ref` for each row of `query` -> (distances (n, k), indices (n, k)).

    exclude_self: query is ref; an image is not its own neighbour (its duplicates still are)."""
    q = torch.as_tensor(np.asarray(query, np.float64).reshape(len(query), -1))
    r = torch.as_tensor(np.asarray(ref, np.float64).reshape(len(ref), -1))
    dists, idxs = [], []
    for i in range(0, len(q), chunk):
        d = _pairwise(q[i:i + chunk], r)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = float("inf")
        v, j = torch.topk(d, k, dim=1, largest=False)
        dists.append(v)
        idxs.append(j)
    return torch.cat(dists).numpy(), torch.cat(idxs).numpy()


def knn_radii(features: np.ndarray, k: int = PR_K) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (the k-NN manifold ball radius)."""
    if len(features) <= k:
        raise ValueError(f"k-NN radii need more than k={k} images, got {len(features)}")
    return nearest_neighbours(features, features, k=k, exclude_self=True)[0][:, -1]


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int = PR_K,
                                      real_radii: np.ndarray | None = None) -> dict[str, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020).

    precision: share of synthetic images inside the real k-NN manifold (fidelity);
    recall: share of real images inside the synthetic manifold (diversity / coverage of modes);
    density: how many real balls hold each synthetic image, / k (~1 for matching distributions);
    coverage: share of real images whose ball holds a synthetic image.
    """
    r = torch.as_tensor(np.asarray(real, np.float64))
    f = torch.as_tensor(np.asarray(fake, np.float64))
    rr = torch.as_tensor(knn_radii(real, k) if real_radii is None else real_radii)
    rf = torch.as_tensor(knn_radii(fake, k))
    d = _pairwise(r, f)  # (n_real, n_fake)
    inside_real = d <= rr[:, None]
    return {
        "precision": float(inside_real.any(dim=0).double().mean()),
        "recall": float((d <= rf[None, :]).any(dim=1).double().mean()),
        "density": float(inside_real.double().sum() / (k * len(f))),
        "coverage": float((d.min(dim=1).values <= rr).double().mean()),
    }


def mean_pairwise_distance(features: np.ndarray, max_n: int = _DIVERSITY_MAX, seed: int = 0) -> float:
    """Mean Euclidean distance over distinct pairs (a random subset of max_n rows for big sets)."""
    f = np.asarray(features, np.float64)
    if len(f) > max_n:
        f = f[np.random.default_rng(seed).choice(len(f), max_n, replace=False)]
    n = len(f)
    if n < 2:
        return float("nan")
    t = torch.as_tensor(f)
    return float(_pairwise(t, t).sum() / (n * (n - 1)))  # the zero diagonal adds nothing


def channel_stats(images: np.ndarray) -> dict[str, list[float]]:
    """uint8 (N, H, W, C) -> per-channel mean/std/min/max in 0..255."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return {"mean": x.mean(0).round(3).tolist(), "std": x.std(0).round(3).tolist(),
            "min": x.min(0).tolist(), "max": x.max(0).tolist()}


def _pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float (N, H*W*C) in [0, 1] / sqrt(D): Euclidean distance = RMS pixel difference."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return flat / math.sqrt(flat.shape[1])


# ---------------------------------------------------------------------------------------------- SSIM
def nearest_ssim(fake: np.ndarray, real: np.ndarray, nearest_idx: np.ndarray, batch_size: int = 256) -> dict[str, Any]:
    """SSIM (and MS-SSIM where the image is large enough for its 5 scales) of each synthetic image to its
    nearest real image (pixel space)."""
    from torchmetrics.functional.image import (multiscale_structural_similarity_index_measure,
                                               structural_similarity_index_measure)
    h, w = fake.shape[1:3]
    ms_ok = min(h, w) > (11 - 1) * 2 ** 4  # torchmetrics' condition for the default kernel and 5 betas
    ssim, ms = [], []
    for i in range(0, len(fake), batch_size):
        a = torch.from_numpy(fake[i:i + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        b = torch.from_numpy(real[nearest_idx[i:i + batch_size]].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        ssim.append(structural_similarity_index_measure(a, b, data_range=1.0, reduction="none").reshape(-1))
        if ms_ok:
            ms.append(multiscale_structural_similarity_index_measure(a, b, data_range=1.0, reduction="none").reshape(-1))
    s = torch.cat(ssim).double().numpy()
    out: dict[str, Any] = {"ssim_nearest_mean": float(s.mean()), "ssim_nearest_std": float(s.std()),
                           "ssim_nearest_max": float(s.max())}
    if ms_ok:
        m = torch.cat(ms).double().numpy()
        out.update({"ms_ssim_nearest_mean": float(m.mean()), "ms_ssim_nearest_std": float(m.std())})
    else:
        out["ms_ssim_nearest_mean"] = None
        out["ms_ssim_note"] = f"MS-SSIM needs images larger than 160 px (5 scales, 11 px kernel); these are {h}x{w}"
    return out


# --------------------------------------------------------------------------------------- real reference
@dataclass
class RealReference:
    """Everything about the real images an evaluation needs, computed once and cached (.npz)."""
    features: np.ndarray  # (n, d) float32 features of the reference set (real minority)
    stats: GaussianStats
    radii: np.ndarray  # (n,) k-NN radii in feature space
    mean_pairwise: float  # mean pairwise feature distance (diversity denominator)
    pixels: np.ndarray  # uint8 (n, H, W, C) reference images (SSIM partner)
    audit_pixels: np.ndarray  # uint8 (m, H, W, C) real TRAIN images for the memorisation audit
    audit_features: np.ndarray  # (m, d)
    audit_nn_pixel: np.ndarray  # (m,) real-to-real nearest-neighbour RMS pixel distance within the train set
    audit_nn_feature: np.ndarray  # (m,) same in feature space
    channel_stats: dict[str, list[float]]
    k: int = PR_K
    extractor_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    _kernel: torch.Tensor | None = None  # KID k(real, real), kept in memory only

    def audit_is_reference(self) -> bool:
        return self.audit_pixels is self.pixels or (self.audit_pixels.shape == self.pixels.shape
                                                    and np.array_equal(self.audit_pixels, self.pixels))

    def real_kernel(self, degree: int = 3, coef: float = 1.0) -> torch.Tensor | None:
        if len(self.features) > _MAX_FULL_KERNEL:
            return None
        if self._kernel is None:
            x = torch.as_tensor(self.features.astype(np.float64))
            self._kernel = _poly(x, x, degree, 1.0 / x.shape[1], coef)
        return self._kernel

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp.npz")
        os.close(fd)
        try:
            same = self.audit_is_reference()  # then the audit arrays are not stored twice
            np.savez(tmp, features=self.features, mu=self.stats.mu, sigma=self.stats.sigma,
                     sqrt_sigma=self.stats.with_sqrt().sqrt_sigma, n=self.stats.n, radii=self.radii,
                     mean_pairwise=self.mean_pairwise, pixels=self.pixels, audit_same=same,
                     audit_pixels=self.audit_pixels[:0] if same else self.audit_pixels,
                     audit_features=self.audit_features[:0] if same else self.audit_features,
                     audit_nn_pixel=self.audit_nn_pixel,
                     audit_nn_feature=self.audit_nn_feature, k=self.k,
                     meta=json.dumps({"channel_stats": self.channel_stats, "extractor_name": self.extractor_name,
                                      "version": REFERENCE_VERSION, **self.meta}))
            os.replace(tmp, path)  # atomic: concurrent trials never read a half-written cache
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RealReference":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            stats = GaussianStats(z["mu"], z["sigma"], int(z["n"]), z["sqrt_sigma"])
            same = bool(z["audit_same"])
            pixels, features = z["pixels"], z["features"]
            ref = cls(features=features, stats=stats, radii=z["radii"], mean_pairwise=float(z["mean_pairwise"]),
                      pixels=pixels, audit_pixels=pixels if same else z["audit_pixels"],
                      audit_features=features if same else z["audit_features"],
                      audit_nn_pixel=z["audit_nn_pixel"], audit_nn_feature=z["audit_nn_feature"],
                      channel_stats=meta.pop("channel_stats"), k=int(z["k"]),
                      extractor_name=meta.pop("extractor_name"))
        meta.pop("version", None)
        ref.meta = meta
        return ref


def build_reference(real: np.ndarray, extractor: torch.nn.Module, real_train: np.ndarray | None = None, *,
                    k: int = PR_K, batch_size: int = 256, meta: dict[str, Any] | None = None) -> RealReference:
    """Compute a RealReference. real_train (memorisation audit set) defaults to `real` itself."""
    feats = extract_features(extractor, real, batch_size)
    if real_train is None or real_train is real or (real_train.shape == real.shape and np.array_equal(real_train, real)):
        audit_px, audit_feats = real, feats
    else:
        audit_px, audit_feats = real_train, extract_features(extractor, real_train, batch_size)
    if len(audit_px) < 2:
        raise ValueError(f"the memorisation audit needs at least 2 real training images, got {len(audit_px)}")
    return RealReference(
        features=feats, stats=gaussian_stats(feats).with_sqrt(), radii=knn_radii(feats, k),
        mean_pairwise=mean_pairwise_distance(feats), pixels=real, audit_pixels=audit_px,
        audit_features=audit_feats,
        audit_nn_pixel=nearest_neighbours(_pixels(audit_px), _pixels(audit_px), exclude_self=True)[0][:, 0],
        audit_nn_feature=nearest_neighbours(audit_feats, audit_feats, exclude_self=True)[0][:, 0],
        channel_stats=channel_stats(real), k=k, extractor_name=getattr(extractor, "name", ""), meta=dict(meta or {}))


# ------------------------------------------------------------------------------------------- memorisation
def memorisation_audit(fake: np.ndarray, fake_features: np.ndarray, ref: RealReference,
                       percentile: float = MEMORISATION_PERCENTILE) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Nearest real TRAIN image of each synthetic image, in pixel (RMS, 0..1) and feature space.

    A synthetic image is flagged when it is at least as close to a training image as the `percentile`-th
    percentile of real-to-real nearest-neighbour distances, in either space. A generator that samples the
    real distribution without copying gets about percentile/100 flagged per space by chance (reported as
    memorised_fraction_expected_by_chance, the same rule applied to the real train images); planted copies and
    near copies sit far below the threshold. -> (summary, per-image arrays).
    """
    d_px, i_px = nearest_neighbours(_pixels(fake), _pixels(ref.audit_pixels))
    d_ft, i_ft = nearest_neighbours(fake_features, ref.audit_features)
    thr_px = float(np.percentile(ref.audit_nn_pixel, percentile))
    thr_ft = float(np.percentile(ref.audit_nn_feature, percentile))
    flag_px = d_px[:, 0] <= thr_px
    flag_ft = d_ft[:, 0] <= thr_ft
    flagged = flag_px | flag_ft
    # what the same rule flags among the real train images themselves (own image excluded): the rate a
    # generator that samples the real distribution without copying would get by chance (5-10 %)
    chance = float(((ref.audit_nn_pixel <= thr_px) | (ref.audit_nn_feature <= thr_ft)).mean())
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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(per_image["nn_pixel_distance"])[:num_pairs]
    cols = 4
    rows = max(1, math.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    gray = fake.shape[-1] == 1
    for n, j in enumerate(order):
        r, c = divmod(n, cols)
        pair = (fake[j], real[per_image["nn_pixel_index"][j]])
        for side, img in enumerate(pair):
            ax = axes[r, 2 * c + side]
            ax.imshow(img[:, :, 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255,
                      interpolation="nearest")
        flag = "!" if per_image["flagged"][j] else ""
        axes[r, 2 * c].set_title(f"syn {j}{flag}", fontsize=6)
        axes[r, 2 * c + 1].set_title(f"train d={per_image['nn_pixel_distance'][j]:.3f}", fontsize=6)
    fig.suptitle("closest synthetic (left) / real train (right) pairs; ! = flagged", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- combined
def compute_metrics(ref: RealReference, fake: np.ndarray, fake_features: np.ndarray, *,
                    fake_logits: np.ndarray | None = None, full: bool = True, kid_subsets: int = KID_SUBSETS,
                    kid_subset_size: int = KID_SUBSET_SIZE, diversity_threshold: float = DIVERSITY_WARN_RATIO,
                    percentile: float = MEMORISATION_PERCENTILE, seed: int = 0,
                    out_dir: str | Path | None = None) -> dict[str, Any]:
    """All metrics of synthetic images against a RealReference. full=False: the scalar subset a GAN trial
    reports every K epochs (no channel stats, no MS-SSIM, no files)."""
    if fake.shape[1:] != ref.pixels.shape[1:]:
        raise ValueError(f"synthetic images are {fake.shape[1:]} but the real reference is {ref.pixels.shape[1:]}; "
                         f"evaluate at the generator's size and channels")
    out: dict[str, Any] = {"num_synthetic": int(len(fake)), "num_real": int(len(ref.pixels)),
                           "num_real_train": int(len(ref.audit_pixels))}
    out["fid"] = frechet_distance(ref.stats, gaussian_stats(fake_features))
    kid_mean, kid_std, m = kernel_inception_distance(ref.features, fake_features, subsets=kid_subsets,
                                                     subset_size=kid_subset_size, seed=seed,
                                                     real_kernel=ref.real_kernel())
    out.update({"kid": kid_mean, "kid_std": kid_std, "kid_subset_size": m, "kid_subsets": kid_subsets})
    out.update(precision_recall_density_coverage(ref.features, fake_features, ref.k, real_radii=ref.radii))
    out["pr_k"] = ref.k
    syn_div = mean_pairwise_distance(fake_features, seed=seed)
    ratio = syn_div / ref.mean_pairwise if ref.mean_pairwise > 0 else float("nan")
    out.update({"diversity_ratio": ratio, "diversity_warning": bool(ratio < diversity_threshold),
                "diversity_threshold": diversity_threshold, "mean_pairwise_distance_synthetic": syn_div,
                "mean_pairwise_distance_real": ref.mean_pairwise})
    if ratio < diversity_threshold:
        warnings.warn(f"synthetic diversity is {ratio:.2f}x that of real images (< {diversity_threshold}): "
                      f"possible mode collapse")
    mem, per_image = memorisation_audit(fake, fake_features, ref, percentile)
    out.update(mem)
    # SSIM partner: the nearest real reference image in pixel space (the audit set when it is the same set)
    if ref.audit_is_reference():
        near_idx = per_image["nn_pixel_index"]
    else:
        near_idx = nearest_neighbours(_pixels(fake), _pixels(ref.pixels))[1][:, 0]
    ssim = nearest_ssim(fake, ref.pixels, near_idx)
    if not full:
        out.update({k: v for k, v in ssim.items() if k in ("ssim_nearest_mean", "ssim_nearest_std")})
        return out
    out.update(ssim)
    out["channel_stats"] = {"synthetic": channel_stats(fake), "real": ref.channel_stats}
    if fake_logits is not None:
        out["inception_score"], out["inception_score_std"] = inception_score(fake_logits)
    else:
        out["inception_score"] = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out["closest_pairs_png"] = str(save_closest_pairs_png(fake, ref.audit_pixels, per_image,
                                                              out_dir / "closest_pairs.png"))
        import pandas as pd
        pd.DataFrame(per_image).rename_axis("synthetic_index").to_csv(out_dir / "memorisation_audit.csv")
        out["memorisation_csv"] = str(out_dir / "memorisation_audit.csv")
    return out


def evaluate_synthetic(real_uint8: np.ndarray | None, synthetic_uint8: np.ndarray, real_train_uint8: np.ndarray | None,
                       extractor: torch.nn.Module, out_dir: str | Path | None = None, *,
                       reference: RealReference | None = None, batch_size: int = 256, **kwargs) -> dict[str, Any]:
    """The full audit of a synthetic set: FID, KID (+std), IS (Inception with logits only), precision/recall,
    density/coverage, diversity, SSIM/MS-SSIM to the nearest real image, channel stats, memorisation audit
    (against real_train_uint8; defaults to real_uint8). out_dir: closest_pairs.png + memorisation_audit.csv.
    With `reference` (e.g. a GanEvaluator's cached one) the real arrays are not needed and may be None.
    kwargs go to compute_metrics (kid_subsets, kid_subset_size, diversity_threshold, percentile, seed)."""
    t0 = time.perf_counter()
    if reference is None and real_uint8 is None:
        raise ValueError("evaluate_synthetic needs real images or a precomputed reference")
    ref = reference if reference is not None else build_reference(real_uint8, extractor, real_train_uint8,
                                                                  batch_size=batch_size)
    want_logits = bool(getattr(extractor, "has_logits", False))
    feats, logits = extract_features(extractor, synthetic_uint8, batch_size, with_logits=True)
    out = compute_metrics(ref, synthetic_uint8, feats, fake_logits=logits if want_logits else None, full=True,
                          out_dir=out_dir, **kwargs)
    out.update(describe(extractor))
    out["eval_seconds"] = round(time.perf_counter() - t0, 3)
    return out


# ----------------------------------------------------------------------------------- GAN-loop evaluator
def reference_cache_path(cache_dir: str | Path, fingerprint: str, split: str, label: int, extractor_name: str,
                         image_size: int, channels: int, k: int) -> Path:
    return Path(cache_dir) / (f"real_ref_v{REFERENCE_VERSION}_{fingerprint}_{split}_c{label}_{extractor_name}_"
                              f"{image_size}px_{channels}ch_k{k}.npz")


def load_or_build_reference(manifest, image_size: int, channels: int, cache_dir: str | Path,
                            extractor: torch.nn.Module, *, split: str = "train", label: int | None = None,
                            k: int = PR_K, batch_size: int = 256) -> tuple[RealReference, bool]:
    """The cached RealReference of (manifest, split, class, extractor, size, channels) -> (ref, was_cached).
    The memorisation audit set is always the real TRAIN images of that class."""
    label = manifest.positive_label if label is None else int(label)
    path = reference_cache_path(cache_dir, manifest.fingerprint(), split, label, extractor.name, image_size,
                                channels, k)
    if path.is_file():
        try:
            return RealReference.load(path), True
        except Exception as exc:  # a corrupt cache is rebuilt, not fatal
            warnings.warn(f"{path}: unreadable reference cache ({exc}); rebuilding it")
    from data_prep.arrays import load_split_arrays
    real, _ = load_split_arrays(manifest, split, image_size, channels, label=label, include_synthetic=False)
    train = real if split == "train" else load_split_arrays(manifest, "train", image_size, channels, label=label,
                                                            include_synthetic=False)[0]
    if len(real) < 2:
        raise ValueError(f"split {split!r} holds {len(real)} real image(s) of class {label}; need at least 2")
    ref = build_reference(real, extractor, train, k=k, batch_size=batch_size,
                          meta={"manifest_fingerprint": manifest.fingerprint(), "split": split, "label": label,
                                "image_size": image_size, "channels": channels})
    ref.save(path)
    return ref, False


class GanEvaluator:
    """evaluate(sample_fn, epoch) -> flat dict of scalar metrics; real side precomputed / cached."""

    def __init__(self, reference: RealReference, extractor: torch.nn.Module, *, num_samples: int,
                 kid_subsets: int, kid_subset_size: int, batch_size: int = 256, seed: int = 0,
                 extractor_note: str | None = None, reference_was_cached: bool = False):
        self.reference = reference
        self.extractor = extractor
        self.num_samples = num_samples
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.batch_size = batch_size
        self.seed = seed
        self.extractor_note = extractor_note
        self.reference_was_cached = reference_was_cached

    def __call__(self, sample_fn: Callable[[int], np.ndarray], epoch: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        fake = np.asarray(sample_fn(self.num_samples))
        if fake.dtype != np.uint8 or fake.ndim != 4:
            raise ValueError(f"sample_fn must return uint8 (n, H, W, C); got {fake.dtype} {fake.shape}")
        t_sample = time.perf_counter() - t0
        feats = extract_features(self.extractor, fake, self.batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # per-epoch: the flag is in the dict, no log spam
            out = compute_metrics(self.reference, fake, feats, full=False, kid_subsets=self.kid_subsets,
                                  kid_subset_size=self.kid_subset_size, seed=self.seed + int(epoch))
        out["epoch"] = int(epoch)
        out["extractor"] = getattr(self.extractor, "kind", "custom")
        out["sample_seconds"] = round(t_sample, 3)
        out["eval_seconds"] = round(time.perf_counter() - t0, 3)
        return out


def make_gan_evaluator(manifest, image_size: int, channels: int, cache_dir: str | Path, extractor: str = "domain", *,
                       inception_weights: str | Path | None = None, device: str | torch.device | None = None,
                       num_samples: int | None = None, split: str = "train", label: int | None = None,
                       kid_subsets: int = 50, kid_subset_size: int = KID_SUBSET_SIZE, k: int = PR_K,
                       domain_epochs: int = 8, batch_size: int = 256, seed: int = 0) -> GanEvaluator:
    """Build the evaluator a GAN trial calls every K epochs: `evaluate(sample_fn, epoch) -> dict`.

    Resolves the feature extractor (domain CNN trained/cached for this manifest, or Inception from local
    weights, falling back to domain with a warning), then loads or builds the cached real reference of the
    class `label` (default: the manifest's positive = minority class) in `split`. num_samples defaults to the
    size of the real reference set (at least 2*k+2). Returned keys: fid, kid, kid_std, precision, recall,
    density, coverage, diversity_ratio, diversity_warning, memorised_fraction(_pixel|_feature),
    ssim_nearest_mean, ... (all scalars), epoch, extractor, eval_seconds.
    """
    from trainables.metrics.features import resolve_extractor
    choice = resolve_extractor(extractor, manifest, image_size, channels, cache_dir,
                               inception_weights=inception_weights, device=device, domain_epochs=domain_epochs)
    ref, cached = load_or_build_reference(manifest, image_size, channels, cache_dir, choice.extractor, split=split,
                                          label=label, k=k, batch_size=batch_size)
    n = int(num_samples) if num_samples is not None else max(len(ref.pixels), 2 * k + 2)
    return GanEvaluator(ref, choice.extractor, num_samples=n, kid_subsets=kid_subsets,
                        kid_subset_size=kid_subset_size, batch_size=batch_size, seed=seed,
                        extractor_note=choice.note, reference_was_cached=cached)
