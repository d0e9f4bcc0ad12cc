"""Classification metrics on real val/test predictions, positive = the minority class (never "label 1").

    m = classification_metrics(probs, labels, positive_label=1, threshold=0.37)
    m["f1"], m["sensitivity"], m["roc_auc"], m["confusion_matrix"]   # keys: METRIC_KEYS + extras

`probs` is either (N,) scores for the positive class or (N, C) class probabilities. The decision rule
is one-vs-rest on the positive class: predict positive when p_pos >= threshold, otherwise the most
probable other class (for 2 classes: the negative class). Thresholds are picked on val with
`choose_threshold` and then applied unchanged to test.

Zero-division conventions (so an all-negative model gives numbers, not NaN crashes):
precision = 0 when nothing is predicted positive; sensitivity/recall = 0 when a class has no
true images; F1 = 0 when precision + recall = 0. ROC-AUC and PR-AUC are NaN only when the labels
hold a single class (undefined; val/test always hold the positive class here).
Confusion matrix: rows = true class, columns = predicted class (torchmetrics convention).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (binary_auroc, binary_average_precision,
                                                    multiclass_confusion_matrix)

from trainables.metric_names import METRIC_NAMES  # pure Python: one home of the results contract's names

METRIC_KEYS = METRIC_NAMES  # the one list of metric names (tests/test_house.py checks it is the same object)
THRESHOLD_FREE = ("roc_auc", "pr_auc")  # metrics that do not depend on the decision threshold


def _div(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def positive_scores(probs, positive_label: int) -> np.ndarray:
    """(N,) or (N, C) -> (N,) float64 score of the positive class."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        return p
    if p.ndim != 2 or not 0 <= positive_label < p.shape[1]:
        raise ValueError(f"probs must be (N,) or (N, C) with positive_label < C; got shape {p.shape}, "
                         f"positive_label {positive_label}")
    return p[:, positive_label]


def predict_labels(probs, positive_label: int, threshold: float, num_classes: int = 2) -> np.ndarray:
    """One-vs-rest decision: positive when p_pos >= threshold, else the most probable other class."""
    p = np.asarray(probs, dtype=np.float64)
    pos = positive_scores(p, positive_label) >= threshold
    if p.ndim == 1 or p.shape[1] == 2:
        if num_classes != 2 or positive_label not in (0, 1):
            raise ValueError("(N,) positive scores need 2 classes; pass (N, C) probabilities for more")
        return np.where(pos, positive_label, 1 - positive_label).astype(np.int64)
    rest = p.copy()
    rest[:, positive_label] = -np.inf
    return np.where(pos, positive_label, rest.argmax(axis=1)).astype(np.int64)


def metrics_from_confusion(cm: np.ndarray, positive_label: int) -> dict[str, Any]:
    """Threshold-dependent metrics from a C x C confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    tp = int(cm[positive_label, positive_label])
    fn = int(cm[positive_label].sum()) - tp
    fp = int(cm[:, positive_label].sum()) - tp
    tn = total - tp - fn - fp
    sens = _div(tp, tp + fn)
    prec = _div(tp, tp + fp)
    per_class = {}
    for c in range(cm.shape[0]):
        c_tp, c_true, c_pred = int(cm[c, c]), int(cm[c].sum()), int(cm[:, c].sum())
        r, p = _div(c_tp, c_true), _div(c_tp, c_pred)
        per_class[c] = {"precision": p, "recall": r, "f1": _div(2 * p * r, p + r), "support": c_true}
    present = [c for c in per_class if per_class[c]["support"] > 0]
    support = np.array([per_class[c]["support"] for c in per_class], dtype=np.float64)

    def weighted(key: str) -> float:  # the X-ray studies' "weighted" averages: each class by its true count
        vals = np.array([per_class[c][key] for c in per_class])
        return float(vals @ support / support.sum()) if support.sum() > 0 else 0.0

    return {
        "accuracy": _div(np.trace(cm), total),
        # mean recall over the classes present (binary: (sensitivity + specificity) / 2)
        "balanced_accuracy": float(np.mean([per_class[c]["recall"] for c in present])) if present else 0.0,
        "sensitivity": sens,
        "specificity": _div(tn, tn + fp),
        "precision": prec,
        "f1": _div(2 * prec * sens, prec + sens),
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in per_class])),
        "weighted_precision": weighted("precision"), "weighted_recall": weighted("recall"),
        "weighted_f1": weighted("f1"),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "per_class": per_class,
    }


def classification_metrics(probs, labels, positive_label: int, threshold: float = 0.5,
                           num_classes: int | None = None) -> dict[str, Any]:
    """Every metric of METRIC_KEYS (+ confusion_matrix, per_class, tp/fp/tn/fn, threshold, n) for one split."""
    labels = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if len(p) != len(labels):
        raise ValueError(f"{len(p)} predictions for {len(labels)} labels")
    if num_classes is None:
        num_classes = p.shape[1] if p.ndim == 2 else max(2, int(labels.max(initial=0)) + 1, positive_label + 1)
    preds = predict_labels(p, positive_label, threshold, num_classes)
    cm = multiclass_confusion_matrix(torch.as_tensor(preds), torch.as_tensor(labels), num_classes=num_classes)
    out = metrics_from_confusion(cm.numpy(), positive_label)
    scores = torch.as_tensor(positive_scores(p, positive_label), dtype=torch.float64)
    is_pos = torch.as_tensor(labels == positive_label, dtype=torch.long)
    if 0 < int(is_pos.sum()) < len(is_pos):
        out["roc_auc"] = float(binary_auroc(scores, is_pos, thresholds=None))
        out["pr_auc"] = float(binary_average_precision(scores, is_pos, thresholds=None))
    else:  # a single class in the labels: both areas are undefined
        out["roc_auc"] = out["pr_auc"] = math.nan
    out["confusion_matrix"] = cm.numpy().tolist()
    out["threshold"] = float(threshold)
    out["n"] = int(len(labels))
    return out


THRESHOLD_RULES = ("max_f1", "target_sensitivity")


def choose_threshold(probs, labels, positive_label: int, rule: str = "max_f1",
                     target_sensitivity: float = 0.9) -> float:
    """Pick the decision threshold on (real) validation predictions.

    Candidates are the observed positive scores (predict positive when score >= t).
    max_f1: the candidate with the highest positive-class F1 (ties -> the higher threshold).
    target_sensitivity: the highest candidate whose sensitivity is >= target (the most specific
    operating point that still meets the target).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; valid: {list(THRESHOLD_RULES)}")
    s = positive_scores(probs, positive_label)
    y = np.asarray(labels) == positive_label
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("cannot choose a threshold: no positive (minority) image among the labels")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # predictions for threshold = s_sorted[i] include every score >= it: the last index of each tie run
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = np.cumsum(~y_sorted)[last]
    cand = s_sorted[last]
    sens = tp / n_pos
    if rule == "max_f1":
        prec = tp / np.maximum(tp + fp, 1)
        f1 = np.where(prec + sens > 0, 2 * prec * sens / np.maximum(prec + sens, 1e-300), 0.0)
        return float(cand[int(np.argmax(f1))])  # candidates descend: argmax's first hit = higher threshold
    ok = np.nonzero(sens >= target_sensitivity - 1e-12)[0]
    return float(cand[ok[0]])  # always exists: the lowest candidate has sensitivity 1
