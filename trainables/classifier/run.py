"""In-process classifier runs (the sweep's single-device trials) and the run-folder artifacts.

    out = run_classifier_local("runs/demo/manifest.parquet", "runs/clf", {"synthetic_ratio": 1.0},
                               synthetic_dir="runs/gan/samples")
    out["val"]["f1"], out["test"]["f1"], out["threshold"], out["best_epoch"]

Writes RUN/config.json, RUN/history.jsonl and RUN/history.csv (one row per epoch: train_loss, val_loss,
every val metric, steps so far; for loss curves), RUN/metrics.json ({"val", "test", "threshold", "best_epoch",
"steps" (optimizer steps taken), "epoch_size" (images per epoch), "data", "manifest", "synthetic", ...}; val/test "per_class" keyed by class name), RUN/test_scores.csv (row, label,
score: each real test image's label and positive-class probability at the best epoch; the report's ROC/PR
curves), RUN/confusion_matrix.png and RUN/checkpoints/{best,last}.pt; with cfg.curation (trainables.classifier.curation)
metrics.json "curation" (candidates, dropped_copies, dropped_off_class, kept, thresholds, grid),
RUN/curation_dropped.png (the dropped images beside their nearest real train image), RUN/curation_dropped.csv and,
for off_class without a given scorer, RUN/curation_scorer/ (the real-only scorer run). With cfg.num_folds = k the folds go to
RUN/fold_<i>/ and RUN/metrics.json holds the fold means (plus "val_std"/"test_std"); k-fold CV with synthetic
images is refused (the GAN trained on images that become a fold's validation set).
TorchTrainer costs ~40 s fixed per fit, so single-device trials use this path; `run_classifier_ray`
(trainables.classifier.ray_train) runs the same loop under DDP.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from data_prep.config import config_to_dict
from data_prep.errors import ConfigError
from data_prep.manifest import Manifest, read_manifest
from trainables.classifier.config import ClassifierConfig, classifier_config
from trainables.classifier.data import (build_classifier_data, epoch_indices, kfold_manifests, load_tensors,
                                        sample_weights_for)
from trainables.classifier.loop import (evaluate_best, merge_predictions, resolve_device, strip_models,
                                        tensor_batches, train_classifier)
from trainables.metrics.classification import METRIC_KEYS


def as_config(cfg: ClassifierConfig | Mapping[str, Any] | None) -> ClassifierConfig:
    return cfg if isinstance(cfg, ClassifierConfig) else classifier_config(cfg)


def _scalars(m: dict) -> dict:
    return {k: m[k] for k in METRIC_KEYS}


def save_confusion_png(results: dict[str, dict], classes: list[str], path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.4), squeeze=False)
    for ax, (name, m) in zip(axes[0], results.items()):
        cm = np.asarray(m["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=30)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} (thr {m['threshold']:.2f})\nF1 {m['f1']:.3f}  sens {m['sensitivity']:.3f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def name_per_class(result: dict, classes: list[str]) -> dict:
    """val/test "per_class" keyed by class name (the metrics module keys them by label index)."""
    for split in ("val", "test"):
        pc = result.get(split, {}).get("per_class")
        if isinstance(pc, dict):
            result[split]["per_class"] = {classes[int(k)]: {**v, "label": int(k)} for k, v in pc.items()}
    return result


def run_sources(manifest, synthetic_dir) -> dict:
    """Where a run's data came from (metrics.json "manifest", "synthetic"): what a re-run needs besides config."""
    from trainables.classifier.data import synthetic_sources

    return {"manifest": str(Path(manifest.path).resolve()) if manifest.path is not None else None,
            "synthetic": [{"dir": str(Path(d).resolve()), "proportion": p} for d, p in synthetic_sources(synthetic_dir)]}


def write_history(out_dir: Path, history: list[dict]) -> None:
    """RUN/history.jsonl (every key) and RUN/history.csv (epoch, train_loss, val_loss first: the loss curves)."""
    with open(out_dir / "history.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    if history:
        import pandas as pd

        df = pd.DataFrame(history)
        first = [c for c in ("epoch", "train_loss", "val_loss") if c in df.columns]
        df[first + [c for c in df.columns if c not in first]].to_csv(out_dir / "history.csv", index=False)


def keep_predictions(kept: list):
    """A gather for evaluate_best that also appends each split's merged predictions to `kept` (in split order):
    the per-image scores come out of the one evaluation pass that makes the metrics."""
    def gather(local, expected_n):
        preds = merge_predictions([local], expected_n)
        kept.append(preds)
        return preds
    return gather


def scores_csv(preds, positive_label: int) -> str:
    """RUN/test_scores.csv's text: row (position in the split), label, score (probability of the positive class)."""
    idx, probs, labels = preds
    score = probs[:, positive_label] if probs.ndim == 2 else probs
    # full precision (repr): the verdict recomputes each run's metrics from these at its threshold, so no score may round
    # across it
    return "row,label,score\n" + "".join(f"{int(i)},{int(y)},{float(p)!r}\n" for i, y, p in zip(idx, labels, score))


def write_scores(path: Path, preds, positive_label: int) -> None:
    Path(path).write_text(scores_csv(preds, positive_label))


def write_run_files(out_dir: Path, cfg: ClassifierConfig, result: dict, classes: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
    write_history(out_dir, result.get("history", []))
    (out_dir / "metrics.json").write_text(json.dumps({k: v for k, v in result.items() if k != "history"},
                                                     indent=2, default=str) + "\n")
    save_confusion_png({"val": result["val"], "test": result["test"]}, classes, out_dir / "confusion_matrix.png",
                       title=f"{cfg.model}, ratio {cfg.synthetic_ratio:g}, {cfg.imbalance_fix}, {cfg.augment}")


def same_config(saved: dict | None, cfg: ClassifierConfig) -> bool:
    """A resume file's config equals cfg; keys the file predates (added to ClassifierConfig since) count as equal
    while cfg leaves them at their defaults, so a sweep interrupted before an upgrade still resumes."""
    if not isinstance(saved, dict):
        return False
    now, defaults = config_to_dict(cfg), config_to_dict(ClassifierConfig())
    return {k: v for k, v in now.items() if k in saved or v != defaults.get(k)} == saved


def best_checkpoint(best: dict, cfg: ClassifierConfig | Mapping[str, Any], classes: list[str],
                    positive_label: int) -> dict:
    """The contents of checkpoints/best.pt, for every entry point: the selected epoch's weights, its epoch and
    val threshold, the config, and the classes with the positive (minority) label, so the file alone can be
    used to predict (trainables.classifier.__main__ / analysis.export read it)."""
    return {"model": best["model"], "epoch": best["epoch"], "threshold": best["threshold"],
            "config": cfg if isinstance(cfg, Mapping) else config_to_dict(cfg),
            "classes": list(classes), "positive_label": int(positive_label)}


def _fit_local(manifest: Manifest, out_dir: Path, cfg: ClassifierConfig, synthetic_dir, report, log,
               resume: bool, scorer=None) -> dict:
    from trainables.classifier.curation import write_curation_files

    t_start = time.perf_counter()
    data = build_classifier_data(manifest, cfg, synthetic_dir, scorer=scorer)
    curation = write_curation_files(out_dir, data.curated, cfg.curation)  # before training: a failed run shows it too
    size, ch = data.image_size, data.channels
    x_tr, y_tr = load_tensors(data.train_rows, size, ch)
    x_va, y_va = load_tensors(data.val_rows, size, ch)
    x_te, y_te = load_tensors(data.test_rows, size, ch)
    device = resolve_device(cfg.device)
    weights = sample_weights_for(cfg.imbalance_fix, y_tr.numpy(), data.num_classes, cfg.oversample_share,
                                 data.positive_label)

    def train_data(epoch: int):
        order = epoch_indices(len(y_tr), weights, cfg.seed, epoch, cfg.epoch_size)
        return tensor_batches(x_tr, y_tr, cfg.batch_size, order)

    def batches(x, y):
        return lambda: tensor_batches(x, y, cfg.batch_size, with_index=True)

    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume_state = None
    if resume and (ckpt_dir / "last.pt").is_file():
        resume_state = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)
        if not same_config(resume_state.get("config"), cfg):
            raise RuntimeError(f"{ckpt_dir / 'last.pt'} was written with another config; use a new --out folder")

    def save_state(state: dict, is_best: bool) -> None:
        torch.save({**state, "config": config_to_dict(cfg)}, ckpt_dir / "last.pt.tmp")
        (ckpt_dir / "last.pt.tmp").replace(ckpt_dir / "last.pt")
        if is_best:
            torch.save(best_checkpoint(state["best"], cfg, data.classes, data.positive_label), ckpt_dir / "best.pt")

    outcome = train_classifier(cfg, train_data, batches(x_va, y_va), report or (lambda row: None),
                               num_classes=data.num_classes, positive_label=data.positive_label,
                               train_labels=y_tr.numpy(), channels=ch, image_size=size, num_val=len(y_va),
                               device=device, resume_state=resume_state, save_state=save_state, log=log)
    kept: list = []  # (index, probs, labels) of val, then test
    final = evaluate_best(outcome, {"val": (batches(x_va, y_va), len(y_va)), "test": (batches(x_te, y_te), len(y_te))},
                          num_classes=data.num_classes, positive_label=data.positive_label, device=device,
                          gather=keep_predictions(kept))
    slim = strip_models(outcome)
    result = {"val": final["val"], "test": final["test"], "threshold": slim["best"]["threshold"],
              "best_epoch": slim["best"]["epoch"], "select_metric": cfg.select_metric, "steps": slim["steps"],
              "epoch_size": int(cfg.epoch_size) or len(y_tr), "n_synthetic": data.n_synthetic, "data": data.summary(), "classes": data.classes,
              "positive_label": data.positive_label, "train_seconds": time.perf_counter() - t_start,
              "run_dir": str(out_dir), "config": config_to_dict(cfg), "history": slim["history"],
              "curation": curation, **run_sources(manifest, synthetic_dir)}
    name_per_class(result, data.classes)
    write_run_files(out_dir, cfg, result, data.classes)
    write_scores(out_dir / "test_scores.csv", kept[-1], data.positive_label)
    return result


def curated_data(manifest, manifest_path, cfg, synthetic_dir, out_dir, curation_scorer=None, log=None):
    """build_classifier_data with cfg.curation's scorer resolved and the curation files written -> (data, summary)
    (the DDP path's; the local path resolves the scorer once for all folds)."""
    from trainables.classifier.curation import resolve_scorer, write_curation_files

    scorer = (resolve_scorer(cfg, manifest_path, out_dir, curation_scorer, run_classifier_local, log)
              if synthetic_dir else None)
    data = build_classifier_data(manifest, cfg, synthetic_dir, scorer=scorer)
    return data, write_curation_files(out_dir, data.curated, cfg.curation)


def aggregate_folds(folds: list[dict]) -> dict:
    """Mean and std (ddof=0 over folds) of every metric key, for val and test."""
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        vals = {k: np.array([f[split][k] for f in folds], dtype=np.float64) for k in METRIC_KEYS}
        out[split] = {k: float(np.nanmean(v)) for k, v in vals.items()}
        out[f"{split}_std"] = {k: float(np.nanstd(v)) for k, v in vals.items()}
        cm = np.sum([np.asarray(f[split]["confusion_matrix"]) for f in folds], axis=0)
        out[split]["confusion_matrix"] = cm.tolist()  # summed over folds
        out[split]["threshold"] = float(np.mean([f["threshold"] for f in folds]))
    return out


def check_folds_without_synthetic(cfg: ClassifierConfig, synthetic_dir) -> None:
    """k-fold CV re-splits real train+val into folds, but a GAN trained on the manifest's train split has seen
    images that land in a fold's validation set: its synthetic images would leak them into training."""
    if cfg.num_folds and synthetic_dir is not None and cfg.synthetic_ratio > 0:
        raise ConfigError(
            f"k-fold CV ({cfg.num_folds} folds) with synthetic images is refused: the GAN that made them trained on "
            f"real training images that the folds move into validation, so its images would leak validation "
            f"images into training. Run the folds without --synthetic (baseline and controls), drop --folds to "
            f"judge synthetic images on the manifest's fixed split; the sweep's --folds K retrains the GAN on each fold's "
            f"training part (python sweeps/augment_ratio.py --folds K)")


def run_classifier_local(manifest_path, out_dir, cfg: ClassifierConfig | Mapping[str, Any] | None = None,
                         synthetic_dir=None, report: Callable[[dict], Any] | None = None,
                         log: Callable[[str], None] | None = None, resume: bool = False,
                         curation_scorer=None) -> dict:
    """Train and evaluate in this process (one device). Returns {"val", "test", "threshold", "best_epoch", ...}.
    synthetic_dir: None, one folder, or a generator mix [(folder, proportion), ...] summing to 1
    (see trainables.classifier.data.build_classifier_data). curation_scorer (cfg.curation copies+off_class only):
    a curation.Scorer, or its folder (read; trained there when empty); None = trained in RUN/curation_scorer."""
    from trainables.classifier.curation import resolve_scorer

    cfg = as_config(cfg)
    check_folds_without_synthetic(cfg, synthetic_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(manifest_path)
    if not cfg.num_folds:
        scorer = (resolve_scorer(cfg, manifest_path, out_dir, curation_scorer, run_classifier_local, log)
                  if synthetic_dir else None)
        return _fit_local(manifest, out_dir, cfg, synthetic_dir, report, log, resume, scorer)
    folds = []
    for i, fold_manifest in enumerate(kfold_manifests(manifest, cfg.num_folds, cfg.seed)):
        if log is not None:
            log(f"--- fold {i + 1}/{cfg.num_folds}")
        fold_report = (lambda row, i=i: report({**row, "fold": i})) if report is not None else None
        folds.append(_fit_local(fold_manifest, out_dir / f"fold_{i}", cfg, synthetic_dir, fold_report, log, resume))
    agg = aggregate_folds(folds)
    result = {**agg, "threshold": agg["val"]["threshold"], "best_epoch": [f["best_epoch"] for f in folds],
              "steps": [f["steps"] for f in folds], "epoch_size": [f["epoch_size"] for f in folds],
              "num_folds": cfg.num_folds, "folds": [{"val": _scalars(f["val"]), "test": _scalars(f["test"]),
                                                    "threshold": f["threshold"], "best_epoch": f["best_epoch"]}
                                                   for f in folds],
              "n_synthetic": [f["n_synthetic"] for f in folds], "classes": folds[0]["classes"],
              "positive_label": folds[0]["positive_label"], "run_dir": str(out_dir), "config": config_to_dict(cfg),
              "select_metric": cfg.select_metric, **run_sources(manifest, synthetic_dir)}
    (out_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    save_confusion_png({"val": result["val"], "test": result["test"]}, result["classes"],
                       out_dir / "confusion_matrix.png", title=f"{cfg.num_folds}-fold CV (summed)")
    return result
