"""GAN quality in the sweep: the evaluator every trial shares (domain or Inception features; the real
reference is val minority images unless val is too small, see sweeps.trial.reference_split), the final
audit of a sampled set (FID, KID, precision/recall, diversity, memorisation against real train) with the same
metrics of real training images beside it (the real-vs-real values, columns *_real_ref), the quality gate
that keeps a collapsed GAN from feeding a classifier, and the quality of a mix's synthetic set (once per mix).

The gate (quality_gate): a GAN is gated when its recall at the reference's sample size (gan_recall_matched) is
below gate_min_recall_share x the real-vs-real recall, or its diversity ratio - in the feature space or on pixel
thumbnails (gan_pixel_diversity_ratio) - below gate_min_diversity_share x the real-vs-real one, or (user
overrides, no default) its KID / FID above max_kid / max_fid. Shares, not absolute
values: the domain feature space is the data set's own, so only real images measured the same way say what
"good" is. The gate is applied when a trial uses a GAN, from the recorded quality, so changing its settings on
--resume re-judges cached GANs.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from sweeps.config import SweepConfig
from sweeps.space import gan_key


def quality_evaluator(manifest, sweep: SweepConfig, data: TrialData, device: str):
    """The GAN evaluator of this sweep: domain features, reference = real minority images of
    data.gan_reference_split ("val" unless val is too small), memorisation audit against real train."""
    from trainables.metrics.generative import make_gan_evaluator

    return make_gan_evaluator(manifest, sweep.image_size, sweep.channels, Path(data.work_dir) / "quality_cache",
                              "inception" if sweep.inception_weights else "domain",
                              inception_weights=sweep.inception_weights, device=device,
                              split=data.gan_reference_split, domain_epochs=sweep.quality_domain_epochs,
                              num_samples=sweep.gan_eval_samples)


QUALITY_COLUMNS = {"fid": "gan_fid", "kid": "gan_kid", "kid_std": "gan_kid_std", "precision": "gan_precision",
                   "recall": "gan_recall", "diversity_ratio": "gan_diversity_ratio",
                   "memorised_fraction": "gan_memorised_fraction", "precision_matched": "gan_precision_matched",
                   "recall_matched": "gan_recall_matched", "pixel_diversity_ratio": "gan_pixel_diversity_ratio"}
# the same metrics of the real training images against the same reference (trainables.metrics.generative.
# real_reference_metrics): what a generator that sampled the real distribution would score
REAL_REF_COLUMNS = {"fid": "gan_fid_real_ref", "kid": "gan_kid_real_ref", "precision": "gan_precision_real_ref",
                    "recall": "gan_recall_real_ref", "diversity_ratio": "gan_diversity_ratio_real_ref",
                    "pixel_diversity_ratio": "gan_pixel_diversity_ratio_real_ref",
                    "memorised_fraction": "gan_memorised_fraction_real_ref"}


def _share(value, real) -> float:
    """value / real (NaN when either is missing or real is 0): how far a GAN gets of what real images score."""
    try:
        v, r = float(value), float(real)
    except (TypeError, ValueError):
        return math.nan
    return v / r if math.isfinite(v) and math.isfinite(r) and r > 0 else math.nan


def with_shares(q: dict[str, Any]) -> dict[str, Any]:
    """q + gan_recall_vs_real (matched recall / real-vs-real recall), gan_diversity_vs_real and
    gan_pixel_diversity_vs_real (the same for the two diversity ratios): the numbers the gate reads."""
    return {**q, "gan_recall_vs_real": _share(q.get("gan_recall_matched"), q.get("gan_recall_real_ref")),
            "gan_diversity_vs_real": _share(q.get("gan_diversity_ratio"), q.get("gan_diversity_ratio_real_ref")),
            "gan_pixel_diversity_vs_real": _share(q.get("gan_pixel_diversity_ratio"),
                                                  q.get("gan_pixel_diversity_ratio_real_ref"))}


def quality_gate(q: Mapping[str, Any], sweep: SweepConfig) -> tuple[str, str]:
    """-> (gan_gate, reason): "gated" (reason: every threshold it missed), "pass", or "off" (reason: why it was not
    judged: no thresholds set, no quality measured, no real-vs-real value to take a share of)."""
    shares = (("recall", "gan_recall_matched", "gan_recall_real_ref", sweep.gate_min_recall_share),
              ("diversity", "gan_diversity_ratio", "gan_diversity_ratio_real_ref", sweep.gate_min_diversity_share),
              ("pixel diversity", "gan_pixel_diversity_ratio", "gan_pixel_diversity_ratio_real_ref",
               sweep.gate_min_diversity_share))
    limits = (("KID", "gan_kid", sweep.max_kid), ("FID", "gan_fid", sweep.max_fid))
    if not any(s for *_, s in shares) and all(limit is None for *_, limit in limits):
        return "off", "every gate threshold is off"
    if not isinstance(q.get("gan_kid"), (int, float)) or math.isnan(float(q["gan_kid"])):
        return "off", "no quality was measured (gan_eval_every 0)"
    reasons, notes = [], []
    for what, col, real_col, share in shares:
        got = _share(q.get(col), q.get(real_col))
        if share and math.isnan(got):
            notes.append(f"{what} not judged: no real-vs-real value (the quality reference is the training set)")
        elif share and got < share:
            reasons.append(f"{what} {float(q[col]):.3f} is {got:.2f}x the real-vs-real {float(q[real_col]):.3f} "
                           f"(< {share:g}x)")
    for what, col, limit in limits:
        if limit is not None and isinstance(q.get(col), (int, float)) and float(q[col]) > limit:
            reasons.append(f"{what} {float(q[col]):.4g} > max {limit:g}")
    if reasons:
        return "gated", "GAN gated (quality): " + "; ".join(reasons)
    judged = any(s for *_, s in shares) and len(notes) < sum(1 for *_, s in shares if s)
    return ("pass" if judged or any(limit is not None for *_, limit in limits) else "off"), "; ".join(notes)


def audit_gan(evaluator, synthetic_dirs: list, out_dir: Path) -> dict[str, Any]:
    """Final quality + memorisation audit of a sampled set (equal parts of each folder in synthetic_dirs)
    against the evaluator's real reference; the memorisation audit compares with real train images."""
    import pandas as pd

    from data_prep.arrays import decode_rows
    from data_prep.manifest import read_synthetic_rows
    from trainables.metrics.generative import evaluate_synthetic, real_reference_metrics

    sets = [read_synthetic_rows(d) for d in synthetic_dirs]
    n_each = min(len(r) for r in sets)
    rows = pd.concat([r.head(n_each) for r in sets], ignore_index=True)
    ref = evaluator.reference
    fake = decode_rows(rows, ref.pixels.shape[1], ref.pixels.shape[3])
    m = evaluate_synthetic(None, fake, None, evaluator.extractor, out_dir=out_dir, reference=ref)
    m["real_reference"] = real_reference_metrics(ref)
    (out_dir / "metrics.json").write_text(json.dumps(m, indent=2, default=str))
    out: dict[str, Any] = {col: float(m[k]) for k, col in QUALITY_COLUMNS.items() if isinstance(m.get(k), (int, float))}
    out.update({col: float(m["real_reference"][k]) for k, col in REAL_REF_COLUMNS.items() if k in m["real_reference"]})
    out["gan_kid_reference"] = str(ref.meta.get("split", ""))
    out["gan_extractor"] = str(getattr(evaluator.extractor, "kind", ""))  # the report names the feature space
    return with_shares(out)


def mix_quality(config: Mapping[str, Any], gans: list[dict], sweep: SweepConfig, data: TrialData,
                device: str, holder: str = "") -> dict[str, Any]:
    """Quality of a mix's synthetic set (equal parts of each member's), computed once per mix under its lease."""
    from data_prep import read_manifest
    from sweeps.artifacts import store_of
    from sweeps.leases import gan_lease

    key = gan_key(config, sweep)
    store = store_of(data)
    out_dir = store.local(f"gans/{key}")
    with gan_lease(store, key, holder or key, out_dir.parent / f"{key}.lock"):
        done = store.read_text(f"gans/{key}/mix_quality.json")
        if done is not None:
            return json.loads(done)
        evaluator = quality_evaluator(read_manifest(data.manifest), sweep, data, device)
        q = audit_gan(evaluator, [g["synthetic_dir"] for g in gans], out_dir / "quality")
        store.publish(f"gans/{key}")
        store.write_text(f"gans/{key}/mix_quality.json", json.dumps(q, default=float))
        return q


LEAK_FILE = "leak_reference.npz"  # in the quality cache: real train/val/test thumbnails for the leak audit


def leak_reference(manifest, sweep: SweepConfig, cache_dir: Path) -> dict:
    """Real train, val and test images (every class) at the leak audit's thumbnail size, built once per sweep and
    kept in the quality cache (which travels to every node with the data)."""
    import os

    import numpy as np

    from data_prep.arrays import decode_rows
    from trainables.metrics.memorisation import thumbnails

    import hashlib

    real = manifest.df[~manifest.df["is_synthetic"].astype(bool)]
    # one file per split (a CV fold's val part differs): named by the split's image ids and size
    digest = hashlib.sha256(("|".join(real["image_id"].astype(str) + ":" + real["split"].astype(str))
                             + f"|{sweep.image_size}|{sweep.channels}").encode()).hexdigest()[:12]
    path = Path(cache_dir) / LEAK_FILE.replace(".npz", f"_{digest}.npz")
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = {}
    for split in ("train", "val", "test"):
        rows = real[real["split"] == split]
        parts = [thumbnails(decode_rows(rows.iloc[i:i + 512], sweep.image_size, sweep.channels))
                 for i in range(0, len(rows), 512)]
        out[split] = np.concatenate(parts) if parts else np.zeros((0, 1, 1, sweep.channels), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # concurrent builders: the last rename wins
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def leak_audit(fake, manifest, sweep: SweepConfig, cache_dir: Path) -> dict[str, Any]:
    """Near-exact copies of real validation and test images in a synthetic set (uint8 N, H, W, C at the sweep's
    size): leak_val_copies, leak_test_copies (trainables.metrics.memorisation.held_out_copies), leak_rms."""
    from trainables.metrics.memorisation import held_out_copies, thumbnails

    ref = leak_reference(manifest, sweep, cache_dir)
    small = thumbnails(fake)
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        s, _ = held_out_copies(small, ref[split], ref["train"])
        out[f"leak_{split}_copies"] = s["leak_copies"]
        out["leak_rms"] = s["leak_rms"]
        out[f"leak_{split}_with_train_twin"] = s["held_out_with_train_twin"]
    return out


def build_quality_reference(cfg: SweepConfig, data, used_by: str = "") -> None:
    """Train the domain feature network and build the real reference once, before any trial: concurrent trials
    would otherwise each build the same ones side by side (minutes at 224 px) before their first GAN epoch."""
    import torch

    from data_prep import read_manifest

    t = time.time()
    device = "cuda" if cfg.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    manifest = read_manifest(data.manifest)
    ev = quality_evaluator(manifest, cfg, data, device)
    leak_reference(manifest, cfg, Path(data.work_dir) / "quality_cache")  # the leak audit's real images, once
    print(f"GAN quality reference: {len(ev.reference.pixels)} real minority {data.gan_reference_split} image(s), "
          f"{'cached' if ev.reference_was_cached else f'built in {time.time() - t:.0f} s'}, shared by "
          f"{used_by or 'every trial'}",
          flush=True)


def gan_leak_audit(synthetic_dir: Path, manifest, sweep: SweepConfig, data) -> dict[str, Any]:
    """Our GAN's set audited for near-copies of real val/test images, as every external set is (it never saw them:
    a copy here means the split itself leaks, e.g. near-duplicate images across splits)."""
    from data_prep.arrays import decode_rows
    from data_prep.manifest import read_synthetic_rows
    from sweeps.quality import leak_audit

    fake = decode_rows(read_synthetic_rows(synthetic_dir), sweep.image_size, sweep.channels)
    return leak_audit(fake, manifest, sweep, Path(data.work_dir) / "quality_cache")
