"""`--smoke-test` of the analysis entry points: a tiny results table with made-up numbers, shaped as the sweep
writes it (a search phase and a confirm phase with the four arms), so the report's whole pipeline runs in seconds
without a sweep. The numbers mean nothing; the sweep name says so. pandas/numpy only. The export needs real run
folders: smoke_sweep_folder trains a tiny GAN and classifier for it (torch imported there only).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SMOKE_NAME = "smoke_test_made_up_numbers"


def smoke_results(seed: int = 0) -> pd.DataFrame:
    """~40 classifier rows: 4 GAN search trials, then baseline / control / control+gan / gan x 2 LRs x 3 seeds."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(arm: str, cid: str, setup: str, s: int, phase: str, rank=np.nan, **kw):
        f1 = float(np.clip(0.6 + rng.normal(0, 0.05), 0, 1))
        rows.append({"sweep_name": SMOKE_NAME, "trial_id": f"t{len(rows):03d}", "stage": "classifier", "arm": arm,
                     "config_id": cid, "setup_id": setup, "seed": s, "status": "ok", "error": "",
                     "sweep_phase": phase, "confirm_rank": rank, "n_test_positive": 15,
                     **{f"{p}_{m}": float(np.clip(f1 + rng.normal(0, 0.02), 0, 1)) for p in ("val", "test")
                        for m in ("f1", "sensitivity", "specificity", "accuracy", "roc_auc")}, **kw})

    gan = dict(gan_loss="hinge", synthetic_ratio=1.0, gan_lr_g=2e-4, gan_lr_d=2e-4)
    for g in range(4):
        add("gan", f"search{g}", f"search{g}", 0, "search", **gan)
    for lr in (1e-3, 3e-3):
        for s in (1000, 1001, 1002):
            add("baseline", f"b{lr}", "b", s, "confirm", clf_lr=lr)
            add("control", f"c{lr}", "c", s, "confirm", clf_lr=lr, imbalance_fix="class_weight",
                class_weight_power=0.8)
            add("control+gan", f"cg{lr}", "cg", s, "confirm", 1.0, clf_lr=lr, imbalance_fix="class_weight",
                class_weight_power=0.8, **gan)
            add("gan", f"g{lr}", "g", s, "confirm", 1.0, clf_lr=lr, **gan)
    return pd.DataFrame(rows)


def smoke_sweep_folder(work: Path) -> Path:
    """A tiny real sweep folder for `python -m analysis.export --smoke-test`: data_prep's smoke demo, a 1-epoch GAN
    of width 8 and 16 of its samples, a 1-epoch classifier on real + synthetic, and the two rows a sweep writes
    for them -> work/results.parquet. Trains (torch is imported here only: the analysis side stays torch-free)."""
    from trainables.classifier.__main__ import main as classifier_main
    from trainables.gan.sample import smoke_gan, write_samples

    work = Path(work)
    manifest, ckpt = smoke_gan(work)
    gan = work / "gan"
    write_samples(ckpt, 16, gan / "synthetic", device="cpu", progress=False)
    clf = work / "classifiers" / "smoke"
    if classifier_main(["--manifest", str(manifest), "--out", str(clf), "--smoke-test", "--epochs", "1",
                        "--synthetic", str(gan / "synthetic"), "--synthetic-ratio", "1"]) != 0:
        raise RuntimeError("the smoke test's classifier run failed (its error is printed above)")
    metrics = json.loads((clf / "metrics.json").read_text())
    base = {"sweep_name": SMOKE_NAME, "status": "ok", "error": "", "seed": 0, "arm": "gan", "gan_loss": "hinge",
            "gan_key": "smoke", "gan_run_dir": str(gan), "synthetic_ratio": 1.0, "sweep_phase": "confirm"}
    rows = [{**base, "trial_id": "g", "stage": "gan", "config_id": ""},
            {**base, "trial_id": "c", "stage": "classifier", "config_id": "smoke", "clf_run_dir": str(clf),
             "synthetic_dir": str(gan / "synthetic"), "val_f1": metrics["val"]["f1"],
             "val_sensitivity": metrics["val"]["sensitivity"]}]
    pd.DataFrame(rows).to_parquet(work / "results.parquet")
    return work / "results.parquet"
