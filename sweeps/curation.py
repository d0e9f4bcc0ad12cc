"""Curation of synthetic images in the sweep (issue 24): the search dimension `curation_choices`, the off-class
scorer every trial shares, and the row columns. What curation does: trainables.classifier.curation.

    --curation-choices none copies copies+off_class     # searched with the rest; the confirm arms keep the pick's

Curation is a classifier setting: it is in config_id (when not "none") but not in gan_key, so one GAN serves every
choice, and each classifier curates that GAN's set itself before drawing its ratio's count. While any choice curates,
each GAN samples CURATION_SAMPLE_HEADROOM x the largest ratio's images (and the headroom joins gan_key, so a cached
set sampled without it is not reused), so that the largest ratio still finds its count after the drops.

The off-class scorer (a classifier trained on REAL train images only, threshold chosen on real val) is trained ONCE
per sweep - per fold with --folds - by the driver before any trial (sweeps.curation_scorers, beside the GAN quality
reference), in <work>/quality_cache/curation_scorer_<manifest fingerprint>_<settings digest>/. quality_cache travels
to every node with remote storage (sweeps.artifacts), so trials only read it; a trial that finds none (a test calling
run_trial, a cache removed by hand) trains it under a node lock, so concurrent trials never train it twice.
Its settings: the sweep's classifier (model, size, epochs, batch), class-weighted loss (the minority's score is then
centred on the boundary), the middle of clf_lr_range, search seed 0, the real training set's epoch size.

Row columns: curation, curation_candidates, curation_dropped_copies, curation_dropped_off_class, curation_grid
(the dropped-samples PNG in the classifier run folder; "" when nothing was dropped).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping

CURATION_SAMPLE_HEADROOM = 1.25  # x the largest ratio's images a GAN samples while any curation choice drops images


def curating(sweep) -> bool:
    return any(c != "none" for c in getattr(sweep, "curation_choices", ("none",)))


def sample_headroom(sweep) -> float:
    """How many times the largest ratio's images a GAN samples: more while curation may drop some."""
    return CURATION_SAMPLE_HEADROOM if curating(sweep) else 1.0


def needs_scorer(sweep) -> bool:
    return any("off_class" in c for c in getattr(sweep, "curation_choices", ()))


def scorer_config(sweep, n_train_real: int, device: str, make_config):
    """The scorer's ClassifierConfig (the same for every trial of the sweep); make_config: sweeps.trial's
    classifier_config (passed in: the trial module imports this one)."""
    lo, hi = sweep.clf_lr_range
    values = {"clf_lr": math.sqrt(lo * hi), "synthetic_ratio": 0.0, "imbalance_fix": "class_weight",
              "augment": "none", "seed": 0}
    return make_config(values, sweep, device, n_train_real)


def scorer_dir(sweep, data, make_config, device: str = "cpu") -> tuple[Path, Any]:
    """(the scorer's cache folder for this data's manifest, its config)."""
    from data_prep import read_manifest
    from data_prep.config import config_to_dict

    cfg = scorer_config(sweep, data.n_train_real, device, make_config)
    values = {k: v for k, v in config_to_dict(cfg).items() if k != "device"}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]
    fingerprint = read_manifest(data.manifest).fingerprint()
    return Path(data.work_dir) / "quality_cache" / f"curation_scorer_{fingerprint}_{digest}", cfg


def ensure_sweep_scorer(sweep, data, make_config, device: str = "cpu", log=None) -> tuple[Path, bool]:
    """The scorer of this data (trained under a node lock when missing) -> (its folder, trained now)."""
    from sweeps.artifacts import node_lock
    from trainables.classifier.curation import SCORER_FILE, ensure_scorer
    from trainables.classifier.run import run_classifier_local

    folder, cfg = scorer_dir(sweep, data, make_config, device)
    with node_lock(folder.with_name(folder.name + ".lock")):
        trained = not (folder / SCORER_FILE).is_file()
        ensure_scorer(folder, data.manifest, cfg, run_classifier_local, log=log)
    return folder, trained


def trial_curation(config: Mapping[str, Any]) -> str:
    """A trial's curation: its config's, "none" for arms without synthetic images (or rows from before it)."""
    value = config.get("curation")
    if not isinstance(value, str) or not value or float(config.get("synthetic_ratio") or 0) <= 0:
        return "none"
    return value


def row_values(result: Mapping[str, Any], curation: str, artifact) -> dict[str, Any]:
    """The row's curation columns from a classifier result; artifact(local path) -> the URI readers use."""
    cur = result.get("curation") or {}
    grid = cur.get("grid")
    return {"curation": curation, "curation_candidates": int(cur.get("candidates", 0)),
            "curation_dropped_copies": int(cur.get("dropped_copies", 0)),
            "curation_dropped_off_class": int(cur.get("dropped_off_class", 0)),
            "curation_grid": artifact(grid) if grid else ""}
