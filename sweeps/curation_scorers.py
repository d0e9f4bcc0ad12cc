"""The driver's half of curation (sweeps/curation.py): the off-class scorer of the split and of each fold, trained
once before any trial. Its own module because it needs sweeps.trial's classifier settings, and sweeps.trial imports
sweeps.curation.
"""
from __future__ import annotations

import json

from sweeps.curation import ensure_sweep_scorer, needs_scorer


def build_curation_scorers(sweep, data, store=None, stored: bool = False) -> None:
    """Driver, before any trial: the off-class scorer of the split and of each fold, when a curation choice needs
    it. Remote storage: quality_cache is published with the data (publish_for_cluster); a resumed sweep whose store
    lacked a scorer publishes the one trained now."""
    import time

    import torch

    from sweeps.trial import classifier_config

    if not needs_scorer(sweep):
        return
    device = "cuda" if sweep.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    trained_any = False
    for i, d in enumerate((data, *data.folds)):
        t = time.time()
        folder, trained = ensure_sweep_scorer(sweep, d, classifier_config, device)
        trained_any |= trained
        info = json.loads((folder / "scorer.json").read_text())
        print(f"curation scorer{f' (fold {i - 1})' if i else ''}: real-only classifier, val F1 {info['val_f1']:.3f}, "
              f"off-class threshold {info['threshold']:.3f} (minority log-odds; expected genuine drop "
              f"{info['expected_genuine_drop']:.1%} from {info['n_val_minority']} val minority images), "
              f"{f'trained in {time.time() - t:.0f} s' if trained else 'cached'}", flush=True)
    if trained_any and stored and store is not None and store.remote:
        store.publish("quality_cache")
