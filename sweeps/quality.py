"""GAN quality in the sweep: the evaluator every trial shares (domain or Inception features; the real
reference is val minority images unless val is too small, see sweeps.trial.reference_split), the final
audit of a sampled set (FID, KID, precision/recall, diversity, memorisation against real train), and the
quality of a mix's synthetic set (computed once per mix)."""
from __future__ import annotations

import json
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
                              split=data.gan_reference_split, domain_epochs=sweep.quality_domain_epochs)


QUALITY_COLUMNS = {"fid": "gan_fid", "kid": "gan_kid", "kid_std": "gan_kid_std", "precision": "gan_precision",
                   "recall": "gan_recall", "diversity_ratio": "gan_diversity_ratio",
                   "memorised_fraction": "gan_memorised_fraction"}


def audit_gan(evaluator, synthetic_dirs: list, out_dir: Path) -> dict[str, Any]:
    """Final quality + memorisation audit of a sampled set (equal parts of each folder in synthetic_dirs)
    against the evaluator's real reference; the memorisation audit compares with real train images."""
    import pandas as pd

    from data_prep.arrays import decode_rows
    from data_prep.manifest import read_synthetic_rows
    from trainables.metrics.generative import evaluate_synthetic

    sets = [read_synthetic_rows(d) for d in synthetic_dirs]
    n_each = min(len(r) for r in sets)
    rows = pd.concat([r.head(n_each) for r in sets], ignore_index=True)
    ref = evaluator.reference
    fake = decode_rows(rows, ref.pixels.shape[1], ref.pixels.shape[3])
    m = evaluate_synthetic(None, fake, None, evaluator.extractor, out_dir=out_dir, reference=ref)
    (out_dir / "metrics.json").write_text(json.dumps(m, indent=2, default=str))
    out: dict[str, Any] = {col: float(m[k]) for k, col in QUALITY_COLUMNS.items() if isinstance(m.get(k), (int, float))}
    out["gan_kid_reference"] = str(ref.meta.get("split", ""))
    out["gan_extractor"] = str(getattr(evaluator.extractor, "kind", ""))  # the report names the feature space
    return out


def mix_quality(config: Mapping[str, Any], gans: list[dict], sweep: SweepConfig, data: TrialData,
                device: str, holder: str = "") -> dict[str, Any]:
    """Quality of a mix's synthetic set (equal parts of each member's), computed once per mix under its lease."""
    from data_prep import read_manifest
    from sweeps.artifacts import store_of
    from sweeps.leases import gan_lease

    key = gan_key(config)
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
