"""A made-up results.parquet (and optional fake GAN run folders) for tests, demos and trying the report.
A test fixture, not product code (it lives in tests/; pytest puts tests/ on the path).

    python tests/fake_results.py --out /tmp/fake_sweep           # -> /tmp/fake_sweep/results.parquet
    python -m analysis.report /tmp/fake_sweep/results.parquet --out /tmp/fake_sweep/report

The numbers are synthetic (seeded): they follow the results contract, not any real experiment.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schema import METRIC_NAMES

LOSS_EFFECT = {"bce": 0.01, "hinge": 0.03, "wgan-gp": -0.01}
RATIO_EFFECT = {0.25: 0.005, 0.5: 0.015, 1.0: 0.02, 2.0: -0.01}
CONTROL_EFFECT = {"baseline": 0.0, "class_weight": 0.012, "oversample": 0.008, "augment": 0.015}


def _metrics(rng: np.random.Generator, f1: float, sens: float) -> dict:
    jitter = lambda s=0.01: float(rng.normal(0, s))  # noqa: E731
    return {"accuracy": 0.9 + f1 / 10 + jitter(0.005), "balanced_accuracy": 0.75 + f1 / 4 + jitter(),
            "sensitivity": sens, "specificity": 0.93 + jitter(), "precision": f1 + 0.05 + jitter(),
            "f1": f1, "macro_f1": 0.8 + f1 / 5 + jitter(), "weighted_precision": 0.9 + f1 / 10 + jitter(0.005),
            "weighted_recall": 0.9 + f1 / 10 + jitter(0.005), "weighted_f1": 0.9 + f1 / 10 + jitter(0.005),
            "roc_auc": 0.88 + f1 / 10 + jitter(),
            "pr_auc": f1 + 0.1 + jitter()}


def make_results(losses=("bce", "hinge", "wgan-gp"), ratios=(0.25, 0.5, 1.0, 2.0), lrs=(1e-4, 2e-4),
                 seeds=(0, 1, 2), run_root: str | Path | None = None, failures: bool = True,
                 seed: int = 0) -> pd.DataFrame:
    """Rows for every (loss, lr, ratio, seed) GAN config, the baseline and three controls, GAN-stage
    rows carrying FID/KID/memorisation (joined to classifier rows by gan_key), and a few failed /
    stopped trials. With run_root, fake GAN run folders (history.jsonl, preview.png,
    quality/closest_pairs.png, real_preview.png) are written there and referenced by gan_run_dir, and fake
    classifier run folders (metrics.json, history.csv, test_scores.csv) under run_root/classifiers/<trial_id>,
    referenced by clf_run_dir (their ROC-AUC near the row's test_roc_auc; their own seeded draw, so the rows'
    numbers do not depend on run_root)."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0

    def base_row(**kw):
        nonlocal t
        t += 1
        r = {"sweep_name": "fake_sweep", "trial_id": f"trial_{t:04d}", "stage": "classifier", "status": "ok",
             "error": "", "gan_loss": "", "gan_lr_g": np.nan, "gan_lr_d": np.nan, "diffaugment": False,
             "n_critic": 0, "gan_key": "", "synthetic_ratio": 0.0, "clf_lr": 1e-3, "imbalance_fix": "none",
             "augment": "none", "image_size": 28, "channels": 1, "time_total_s": float(rng.uniform(30, 90)),
             "finished_at": pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(minutes=t),
             "gan_run_dir": "", "clf_run_dir": f"clf/{t:04d}", "synthetic_dir": ""}
        r.update(kw)
        return r

    def add_clf(arm, cid, effect, s, **kw):
        f1 = 0.62 + effect + float(rng.normal(0, 0.012))
        sens = 0.58 + 1.5 * effect + float(rng.normal(0, 0.02))
        val = _metrics(rng, f1 + float(rng.normal(0, 0.008)), sens + float(rng.normal(0, 0.01)))
        test = _metrics(rng, f1 + float(rng.normal(0, 0.01)), sens + float(rng.normal(0, 0.015)))
        rows.append(base_row(arm=arm, config_id=cid, seed=s, **kw,
                             **{f"val_{m}": val[m] for m in METRIC_NAMES},
                             **{f"test_{m}": test[m] for m in METRIC_NAMES}))

    for arm, eff in CONTROL_EFFECT.items():
        for s in seeds:
            kw = {"imbalance_fix": arm if arm in ("class_weight", "oversample") else "none",
                  "augment": "standard" if arm == "augment" else "none"}
            add_clf(arm, f"cfg_{arm}", eff, s, **kw)

    for li, loss in enumerate(losses):
        for lr in lrs:
            for s in seeds:
                key = f"gan_{loss}_{lr:g}_s{s}"
                run_dir = ""
                if run_root is not None:
                    run_dir = str(_fake_run((Path(run_root) / key).resolve(), loss, rng))
                fid = 40 + 25 * li + 1e5 * lr + float(rng.normal(0, 3))
                rows.append(base_row(stage="gan", arm="gan", config_id=f"gan_{loss}_{lr:g}", seed=s, gan_loss=loss,
                                     gan_lr_g=lr, gan_lr_d=lr, gan_key=key, n_critic=5 if loss == "wgan-gp" else 0,
                                     synthetic_ratio=np.nan, gan_fid=fid, gan_kid=fid / 2000,
                                     gan_kid_std=0.002, gan_precision=0.7, gan_recall=0.5, gan_diversity_ratio=0.9,
                                     gan_memorised_fraction=0.02 if loss == "bce" else 0.0, gan_epochs=50,
                                     gan_run_dir=run_dir))
                for ratio in ratios:
                    eff = LOSS_EFFECT.get(loss, 0) + RATIO_EFFECT.get(ratio, 0) - (fid - 60) / 4000
                    add_clf("gan", f"cfg_{loss}_{lr:g}_r{ratio:g}", eff, s, gan_loss=loss, gan_lr_g=lr,
                            gan_lr_d=lr, gan_key=key, synthetic_ratio=ratio, diffaugment=True,
                            n_critic=5 if loss == "wgan-gp" else 0, gan_run_dir=run_dir,
                            synthetic_dir=f"{run_dir}/synthetic" if run_dir else "")
    if failures:
        rows.append(base_row(stage="gan", arm="gan", config_id="cfg_bce_oops", seed=9, gan_loss="bce", status="failed",
                             error="RuntimeError: CUDA out of memory.\nTried to allocate 2.00 GiB | retry with a "
                                   "smaller batch"))
        rows.append(base_row(arm="gan", config_id="cfg_hinge_stop", seed=1, gan_loss="hinge", status="stopped",
                             synthetic_ratio=4.0, error="early-stopped by ASHA at iteration 3 (val_f1 0.41)"))
        rows.append(base_row(arm="oversample", config_id="cfg_oversample", seed=7, status="failed", error=""))
    if run_root is not None:
        clf_rng = np.random.default_rng(seed + 1)
        for r in rows:
            if r["stage"] == "classifier" and r["status"] == "ok":
                r["clf_run_dir"] = str(_fake_clf_run((Path(run_root) / "classifiers" / r["trial_id"]).resolve(),
                                                     r["test_roc_auc"], clf_rng))
    return pd.DataFrame(rows)


def _fake_clf_run(run_dir: Path, auc: float, rng: np.random.Generator, n_neg: int = 80, n_pos: int = 20) -> Path:
    """metrics.json, history.csv and test_scores.csv of a pretend two-class classifier run (binormal scores whose
    separation gives about the ROC-AUC asked for), in the layout trainables.classifier.run writes."""
    from statistics import NormalDist

    run_dir.mkdir(parents=True, exist_ok=True)
    d = np.sqrt(2) * NormalDist().inv_cdf(min(max(auc, 0.501), 0.999))
    labels = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, len(labels)) + d * labels - d / 2)))
    pred = (scores >= 0.5).astype(int)
    cm = [[int(((labels == t) & (pred == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    per_class = {}
    for c, name in enumerate(("benign", "malignant")):
        prec, rec = cm[c][c] / max(cm[0][c] + cm[1][c], 1), cm[c][c] / max(sum(cm[c]), 1)
        per_class[name] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / max(prec + rec, 1e-12),
                           "support": sum(cm[c]), "label": c}
    epochs = np.arange(1, 11)
    best = int(rng.integers(4, 9))
    pd.DataFrame({"epoch": epochs, "train_loss": 0.3 + 0.5 * np.exp(-epochs / 3),
                  "val_loss": 0.45 + 0.3 * np.exp(-epochs / 3) + 0.01 * np.maximum(epochs - best, 0) ** 1.5}
                 ).to_csv(run_dir / "history.csv", index=False)
    pd.DataFrame({"row": np.arange(len(labels)), "label": labels, "score": scores.round(6)}).to_csv(
        run_dir / "test_scores.csv", index=False)
    (run_dir / "metrics.json").write_text(json.dumps({
        "classes": ["benign", "malignant"], "positive_label": 1, "best_epoch": best, "threshold": 0.5,
        "test": {"confusion_matrix": cm, "per_class": per_class, "n": len(labels), "threshold": 0.5}}, indent=2))
    return run_dir


def _fake_run(run_dir: Path, loss: str, rng: np.random.Generator) -> Path:
    """history.jsonl + PNG grids of a pretend GAN run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (run_dir / "quality").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "history.jsonl", "w") as f:
        for e in range(30):
            decay = np.exp(-e / 10)
            f.write(json.dumps({"epoch": e, "loss_D": 0.6 + decay + float(rng.normal(0, 0.05)),
                                "loss_G": 0.8 + 1.5 * decay + float(rng.normal(0, 0.08)),
                                "D_x": 0.5 + 0.3 * decay, "D_G_z": 0.5 - 0.3 * decay}) + "\n")
    f.close()

    def grid(n=8, size=16, smooth=True):
        tiles = rng.random((n * size, n * size))
        if smooth:  # blobs, roughly lesion-like
            yy, xx = np.mgrid[0:n * size, 0:n * size] % size - size / 2
            tiles = np.exp(-(xx ** 2 + yy ** 2) / (2 * (size / 5) ** 2)) + 0.2 * tiles
        return tiles

    plt.imsave(run_dir / "preview.png", grid(), cmap="gray")
    plt.imsave(run_dir / "real_preview.png", grid(smooth=True) ** 1.5, cmap="gray")
    plt.imsave(run_dir / "quality" / "closest_pairs.png", np.hstack([grid(2, 16), grid(2, 16)]), cmap="gray")
    return run_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for results.parquet and fake run folders")
    ap.add_argument("--no-runs", action="store_true", help="do not write fake GAN run folders")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df = make_results(run_root=None if args.no_runs else out / "runs")
    df.to_parquet(out / "results.parquet", index=False)
    print(f"wrote {out / 'results.parquet'} ({len(df)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
