"""Metric primitives on features and pixels: FID statistics, KID, Inception score, k-NN precision/recall/
density/coverage, nearest neighbours, mean pairwise distance, SSIM. Plain functions of arrays, no state.

    fid = frechet_distance(gaussian_stats(real_feats), gaussian_stats(fake_feats))
    kid_mean, kid_std, subset = kernel_inception_distance(real_feats, fake_feats)

The quality evaluation built on them (the cached real reference, memorisation audit, the GAN evaluator)
is trainables.metrics.generative. FID uses float64 statistics and an eigen-decomposition (sqrt(S_r) S_f
sqrt(S_r) is symmetric PSD, so tr sqrt(S_r S_f) = sum sqrt(eigvalsh(.))). KID is the unbiased MMD^2 with
the cubic polynomial kernel of Binkowski et al. (2018), mean and std over random subsets drawn exactly as
torchmetrics draws them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PR_K = 3  # k of the k-NN manifolds (precision/recall, density/coverage); Naeem et al. use 5, Kynkaanniemi 3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
MAX_FULL_KERNEL = 4096  # KID: precompute full kernel matrices up to this many images per set
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
def poly_kernel(a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
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
    full = max(n_r, n_f) <= MAX_FULL_KERNEL
    if full:
        k_rr = real_kernel if real_kernel is not None else poly_kernel(xr, xr, degree, gamma, coef)
        k_ff = poly_kernel(xf, xf, degree, gamma, coef)
        k_rf = poly_kernel(xr, xf, degree, gamma, coef)
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
            values.append(_mmd2_unbiased(poly_kernel(a, a, degree, gamma, coef), poly_kernel(a, b, degree, gamma, coef),
                                         poly_kernel(b, b, degree, gamma, coef)))
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


THUMBNAIL_SIDE = 32  # pixel diversity compares images at this side (area-averaged): cheap at any image size


def pixel_diversity(images: np.ndarray, max_n: int = 1000, seed: int = 0) -> float:
    """Mean pairwise RMS distance (0..1) between uint8 (N, H, W, C) images shrunk to THUMBNAIL_SIDE px: how much
    a set's images differ from each other in what they show, in no learnt feature space (a generator repeating a
    few pictures scores low here whatever a feature network makes of them)."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).double() / 255.0
    if x.shape[-1] > THUMBNAIL_SIDE:
        x = torch.nn.functional.adaptive_avg_pool2d(x, THUMBNAIL_SIDE)
    flat = x.reshape(len(x), -1)
    return mean_pairwise_distance((flat / math.sqrt(flat.shape[1])).numpy(), max_n=max_n, seed=seed)


def channel_stats(images: np.ndarray) -> dict[str, list[float]]:
    """uint8 (N, H, W, C) -> per-channel mean/std/min/max in 0..255."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return {"mean": x.mean(0).round(3).tolist(), "std": x.std(0).round(3).tolist(),
            "min": x.min(0).tolist(), "max": x.max(0).tolist()}


def pixel_vectors(images: np.ndarray) -> np.ndarray:
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
