"""The classifier training loop (no Ray): train, pick the best epoch and threshold on real val, evaluate.

    out = train_classifier(cfg, train_data, val_data, report=rows.append, num_classes=2, positive_label=1,
                           train_labels=y_train)
    final = evaluate_best(cfg, out, val_data, test_data, ...)     # test gets val's threshold, unchanged

`train_data(epoch)` yields (images, labels) batches; `val_data()` yields (images, labels, index) batches,
index = row position in the split. Images are uint8 (B, C, S, S) (what the in-process path and the Ray shards
keep in memory) or float in [-1, 1]; uint8 batches are moved to the device first, then normalised there
(data_prep.arrays.normalize_batch: the same bits as normalising the whole split up front, at a quarter of
the host memory and of the host-to-device copy). `gather(local, n)` merges (index, probs, labels) across DDP
ranks; every rank then computes the same metrics over the whole split (`merge_predictions` drops padded
duplicates and fails if a row is missing), so each val/test image counts exactly once. Per epoch `report(row)` gets
epoch, train_loss, val_loss, images_per_s, val_<metric> for every metric key, val_threshold, best_epoch,
frozen (whether the backbone was frozen that epoch) and steps (optimizer steps taken so far; the outcome's
"steps" is the run's total: with cfg.epoch_size every arm is held to one step budget). val_loss is the training
loss (cross-entropy, with the same class weights under imbalance_fix="class_weight") on the real val images, so
the two curves compare.

Transfer learning: cfg.weights (a local state dict) + cfg.freeze_epochs N: during the first N epochs only the
head (and any layer the weights file could not fill) trains, and the frozen backbone's BatchNorm layers keep
their loaded running statistics (eval mode). Without DDP the frozen parameters get requires_grad=False (no
backward through the backbone); under DDP, whose gradient buckets are fixed when the model is wrapped, their
gradients are dropped before the optimizer step instead (same result, AdamW skips parameters without grad).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_prep.arrays import normalize_batch
from trainables.classifier.data import augment_for, loss_weights_for
from trainables.classifier.models import build_model, trainable_when_frozen
from trainables.metrics.classification import METRIC_KEYS, choose_threshold, classification_metrics

Preds = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row index, class probabilities (N, C), labels)
Gather = Callable[[Preds, "int | None"], Preds]  # (this rank's predictions, split size) -> whole split


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def merge_predictions(parts: Iterable[Preds], expected_n: int | None = None) -> Preds:
    """Concatenate per-rank predictions, keep one row per image index, sort by index.

    Padded duplicates (a sampler repeating rows to even out ranks) are dropped; a missing index
    (a split that dropped rows) is an error, because the metric would silently cover fewer images.
    """
    parts = [p for p in parts if len(p[0])]
    if not parts:
        raise RuntimeError("no predictions gathered from any rank")
    idx = np.concatenate([p[0] for p in parts]).astype(np.int64)
    probs = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts]).astype(np.int64)
    uniq, first = np.unique(idx, return_index=True)
    if expected_n is not None and (len(uniq) != expected_n or uniq[0] != 0 or uniq[-1] != expected_n - 1):
        missing = sorted(set(range(expected_n)) - set(uniq.tolist()))
        raise RuntimeError(f"evaluation covered {len(uniq)} of {expected_n} images (missing e.g. {missing[:5]}); "
                           f"every val/test image must be evaluated exactly once")
    return uniq, probs[first], labels[first]


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device: torch.device) -> Preds:
    model.eval()
    idx, probs, labels = [], [], []
    for x, y, i in batches:
        out = model(normalize_batch(x.to(device, non_blocking=True)))
        probs.append(torch.softmax(out.float(), dim=1).cpu().numpy())
        labels.append(np.asarray(y.cpu() if torch.is_tensor(y) else y))
        idx.append(np.asarray(i.cpu() if torch.is_tensor(i) else i))
    if not idx:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(idx), np.concatenate(probs), np.concatenate(labels)


def evaluate(model: nn.Module, batches: Iterable, device: torch.device, gather: Gather | None,
             expected_n: int | None) -> Preds:
    local = predict(model, batches, device)
    return gather(local, expected_n) if gather is not None else merge_predictions([local], expected_n)


def mean_loss(probs: np.ndarray, labels: np.ndarray, class_weights: torch.Tensor | None) -> float:
    """Cross-entropy of gathered class probabilities (the training loss, on val): weighted mean like
    F.cross_entropy(weight=...), so train and val curves are on one scale."""
    p = np.clip(np.asarray(probs, np.float64)[np.arange(len(labels)), np.asarray(labels, np.int64)], 1e-12, 1.0)
    w = np.ones(len(labels)) if class_weights is None else class_weights.detach().cpu().numpy()[labels]
    return float(np.sum(-np.log(p) * w) / max(np.sum(w), 1e-12))


def set_backbone_frozen(model: nn.Module, frozen: bool, keep: set[str], use_requires_grad: bool) -> None:
    """Freeze (or unfreeze) every parameter outside `keep`; frozen BatchNorm layers run in eval mode."""
    model = _unwrap(model)
    if use_requires_grad:
        for name, p in model.named_parameters():
            p.requires_grad_(not frozen or name in keep)
    if frozen:
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                    f"{name}.{p}" in keep for p, _ in m.named_parameters(recurse=False)):
                m.eval()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}


def train_classifier(cfg, train_data: Callable[[int], Iterable], val_data: Callable[[], Iterable],
                     report: Callable[[dict], Any], *, num_classes: int, positive_label: int, train_labels,
                     channels: int, image_size: int, num_val: int | None = None,
                     gather: Gather | None = None, wrap_model: Callable | None = None,
                     device: torch.device | None = None, resume_state: dict | None = None,
                     save_state: Callable[[dict, bool], None] | None = None, world_size: int = 1,
                     rank: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Train cfg.num_epochs epochs; returns {"model", "best": {epoch, score, threshold, model}, "history", "steps"}."""
    device = device or resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes, channels, image_size, cfg.weights,
                        input_norm=getattr(cfg, "input_norm", "none")).to(device)
    freeze_epochs = int(getattr(cfg, "freeze_epochs", 0))
    keep = trainable_when_frozen(model) if freeze_epochs else set()
    if freeze_epochs and log is not None:
        log(f"backbone frozen for {freeze_epochs} epoch(s); training {len(keep)} parameter tensor(s) of the head"
            + (f" and re-initialised {sorted(model.reinitialised_keys)}" if model.reinitialised_keys else ""))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history, best = 0, [], None
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        opt.load_state_dict(resume_state["optimizer"])
        start, history, best = resume_state["epoch"], list(resume_state["history"]), resume_state["best"]
    net = wrap_model(model) if wrap_model is not None else model
    weights = loss_weights_for(cfg.imbalance_fix, train_labels, num_classes, getattr(cfg, "class_weight_power", 1.0))
    weights = weights.to(device) if weights is not None else None
    augment = augment_for(cfg.augment, getattr(cfg, "augment_strength", 1.0))
    steps = int(history[-1].get("steps", 0)) if history else 0  # resumed: the steps its history counted
    frozen_names = {n for n, _ in model.named_parameters() if n not in keep}
    for epoch in range(start, cfg.num_epochs):
        net.train()
        frozen = epoch < freeze_epochs
        if freeze_epochs:
            set_backbone_frozen(net, frozen, keep, use_requires_grad=wrap_model is None)
        g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 31 + rank)
        t0, n_images, loss_sum = time.perf_counter(), 0, 0.0
        for x, y in train_data(epoch):
            x, y = normalize_batch(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x, g)
            loss = F.cross_entropy(net(x), y, weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if frozen and wrap_model is not None:  # DDP: drop the frozen backbone's (all-reduced) gradients
                for name, p in _unwrap(net).named_parameters():
                    if name in frozen_names:
                        p.grad = None
            opt.step()
            steps += 1
            loss_sum += float(loss.detach()) * len(y)
            n_images += len(y)
        seconds = time.perf_counter() - t0
        _, probs, labels = evaluate(net, val_data(), device, gather, num_val)
        threshold = choose_threshold(probs, labels, positive_label, cfg.threshold_rule, cfg.target_sensitivity)
        m = classification_metrics(probs, labels, positive_label, threshold, num_classes)
        score = m[cfg.select_metric]
        is_best = best is None or (not math.isnan(score) and (math.isnan(best["score"]) or score > best["score"]))
        if is_best:
            best = {"epoch": epoch + 1, "score": float(score), "threshold": threshold, "model": _cpu_state(net)}
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_images, 1),
               "val_loss": mean_loss(probs, labels, weights), "frozen": frozen,
               "images_per_s": n_images * world_size / max(seconds, 1e-9),
               **{f"val_{k}": float(m[k]) for k in METRIC_KEYS}, "val_threshold": threshold,
               "best_epoch": best["epoch"], f"best_val_{cfg.select_metric}": best["score"], "steps": steps}
        history.append(row)
        if save_state is not None:
            save_state({"model": _cpu_state(net), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                        "history": history, "best": best}, is_best)
        if log is not None:
            log(f"epoch {epoch + 1}/{cfg.num_epochs}  loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                f"val f1 {m['f1']:.3f}  "
                f"sens {m['sensitivity']:.3f}  spec {m['specificity']:.3f}  auc {m['roc_auc']:.3f}  "
                f"thr {threshold:.3f}  {row['images_per_s']:.0f} img/s" + ("  *" if is_best else ""))
        report(row)
    return {"model": net, "best": best, "history": history, "steps": steps}


def evaluate_best(outcome: dict, splits: dict[str, tuple[Callable[[], Iterable], int | None]], *,
                  num_classes: int, positive_label: int, device: torch.device,
                  gather: Gather | None = None) -> dict:
    """Load the best epoch's weights and evaluate each split at the threshold chosen on val (unchanged)."""
    net, best = outcome["model"], outcome["best"]
    _unwrap(net).load_state_dict(best["model"])
    out = {}
    for name, (batches, n) in splits.items():
        _, probs, labels = evaluate(net, batches(), device, gather, n)
        out[name] = classification_metrics(probs, labels, positive_label, best["threshold"], num_classes)
    return out


def tensor_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, order: torch.Tensor | None = None,
                   with_index: bool = False):
    """In-memory batches in `order` (default: as stored, in x's dtype: uint8 stays uint8), optionally with the
    row index."""
    order = torch.arange(len(y)) if order is None else order
    for s in range(0, len(order), batch_size):
        i = order[s:s + batch_size]
        yield (x[i], y[i], i) if with_index else (x[i], y[i])


def strip_models(outcome: dict) -> dict:
    """The outcome without tensors (for JSON)."""
    best = {k: v for k, v in outcome["best"].items() if k != "model"}
    return {"best": best, "history": copy.deepcopy(outcome["history"]), "steps": int(outcome.get("steps", 0))}
