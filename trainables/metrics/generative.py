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
images. The metric functions themselves (FID, KID, precision/recall, SSIM, ...) are
trainables.metrics.primitives; this module builds the evaluation on them.
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
from trainables.metrics.memorisation import (MEMORISATION_PERCENTILE, chance_rate, memorisation_audit,  # noqa: F401
                                             save_closest_pairs_png)
# the primitives (re-exported here, their old home, for existing imports)
from trainables.metrics.primitives import (KID_SUBSET_SIZE, KID_SUBSETS, MAX_FULL_KERNEL, PR_K,  # noqa: F401
                                           GaussianStats, channel_stats, frechet_distance, gaussian_stats,
                                           inception_score, kernel_inception_distance, knn_radii,
                                           mean_pairwise_distance, nearest_neighbours, nearest_ssim,
                                           pixel_diversity, pixel_vectors, poly_kernel,
                                           precision_recall_density_coverage)

REFERENCE_VERSION = 1  # bump when what the reference cache holds changes
DIVERSITY_WARN_RATIO = 0.6  # synthetic / real mean pairwise feature distance below this: likely mode collapse


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
    _pixel_diversity: float | None = None  # kept in memory only

    def audit_is_reference(self) -> bool:
        return self.audit_pixels is self.pixels or (self.audit_pixels.shape == self.pixels.shape
                                                    and np.array_equal(self.audit_pixels, self.pixels))

    def pixel_diversity(self) -> float:
        """Mean pairwise thumbnail distance of the reference images (the pixel diversity ratio's denominator)."""
        if self._pixel_diversity is None:
            self._pixel_diversity = pixel_diversity(self.pixels)
        return self._pixel_diversity

    def real_kernel(self, degree: int = 3, coef: float = 1.0) -> torch.Tensor | None:
        if len(self.features) > MAX_FULL_KERNEL:
            return None
        if self._kernel is None:
            x = torch.as_tensor(self.features.astype(np.float64))
            self._kernel = poly_kernel(x, x, degree, 1.0 / x.shape[1], coef)
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
        audit_nn_pixel=nearest_neighbours(pixel_vectors(audit_px), pixel_vectors(audit_px), exclude_self=True)[0][:, 0],
        audit_nn_feature=nearest_neighbours(audit_feats, audit_feats, exclude_self=True)[0][:, 0],
        channel_stats=channel_stats(real), k=k, extractor_name=getattr(extractor, "name", ""), meta=dict(meta or {}))


# ------------------------------------------------------------------------------- matched and real-vs-real
def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(b) else float("nan")


MATCHED_DRAWS = 50  # random subsets averaged by matched_precision_recall


def matched_precision_recall(ref: RealReference, features: np.ndarray, draws: int = MATCHED_DRAWS,
                             seed: int = 0) -> tuple[float, float]:
    """Precision and recall of `features` at the reference's own sample size: the mean over `draws` random subsets
    of len(ref.features) rows (all rows, once, when there are not more). Recall grows with the synthetic sample
    (more synthetic k-NN balls cover more real images), so only at a matched size is it comparable with the same
    metric of real images (real_reference_metrics)."""
    n = len(ref.features)
    if len(features) <= n:
        m = precision_recall_density_coverage(ref.features, features, ref.k, real_radii=ref.radii)
        return m["precision"], m["recall"]
    rng = np.random.default_rng(seed)
    prs = [precision_recall_density_coverage(ref.features, features[rng.choice(len(features), n, replace=False)],
                                             ref.k, real_radii=ref.radii) for _ in range(draws)]
    return float(np.mean([m["precision"] for m in prs])), float(np.mean([m["recall"] for m in prs]))


def real_reference_metrics(ref: RealReference, kid_subsets: int = KID_SUBSETS, seed: int = 0) -> dict[str, float]:
    """The quality metrics of REAL images against the same reference: the real training images of the class (the
    memorisation audit set) in place of synthetic ones - what a generator that sampled the real distribution
    would score at these sample sizes (the "real-vs-real" value beside each synthetic metric). Keys: fid, kid,
    precision, recall (both matched to the reference's size, as for synthetic sets), diversity_ratio (mean
    pairwise feature distance of the training images / that of the reference: ~1 when both sample one
    distribution and the feature network treats train and val alike; a domain network trained on the train split
    draws its own training images closer, ~0.7 on the demo), pixel_diversity_ratio (the same on pixel
    thumbnails, ~1), memorised_fraction (the audit's rule applied to the training images themselves: its rate by
    chance). {} when the reference IS the training set (no independent real images to compare)."""
    if ref.audit_is_reference():
        return {}
    feats = ref.audit_features
    kid = kernel_inception_distance(ref.features, feats, subsets=kid_subsets, seed=seed, real_kernel=ref.real_kernel())
    precision, recall = matched_precision_recall(ref, feats, seed=seed)
    return {"fid": frechet_distance(ref.stats, gaussian_stats(feats)), "kid": kid[0], "precision": precision,
            "recall": recall, "diversity_ratio": mean_pairwise_distance(feats, seed=seed) / ref.mean_pairwise,
            "pixel_diversity_ratio": _ratio(pixel_diversity(ref.audit_pixels, seed=seed), ref.pixel_diversity()),
            "memorised_fraction": chance_rate(ref)[2]}


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
    out["precision_matched"], out["recall_matched"] = matched_precision_recall(ref, fake_features, seed=seed)
    syn_div = mean_pairwise_distance(fake_features, seed=seed)
    ratio = syn_div / ref.mean_pairwise if ref.mean_pairwise > 0 else float("nan")
    # the same in pixel space (thumbnails): a feature network trained to tell the classes apart draws images of one
    # class together, so a generator repeating a few shapes can keep a feature-space ratio near real's
    out["pixel_diversity_ratio"] = _ratio(pixel_diversity(fake, seed=seed), ref.pixel_diversity())
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
        near_idx = nearest_neighbours(pixel_vectors(fake), pixel_vectors(ref.pixels))[1][:, 0]
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


def match_reference_size(fake: np.ndarray, ref: "RealReference") -> np.ndarray:
    """Synthetic images resized to the real reference's side, as the classifier will see them: a GAN trains at
    a supported side (224 px asked -> 256 px generated) while the reference and the classifier use the asked one."""
    side = ref.pixels.shape[1]
    if fake.shape[1:3] == (side, side):
        return fake
    from data_prep.images import resize_uint8

    return np.stack([resize_uint8(img, side) for img in fake])


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
        fake = match_reference_size(fake, self.reference)
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
