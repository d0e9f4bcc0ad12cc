"""Figures of the headline's classifier runs (matplotlib, Agg, PNG): confusion matrices, ROC and PR curves on one
axis each, train / val loss per epoch. Each function draws what it is given (analysis.report_runs gathers it)
and returns (path, "") or (None, why) when there is nothing to draw; none raises on missing data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plots import _plt, _save

ARM_COLORS = {"baseline": "black", "gan": "tab:blue", "control": "tab:red"}


@dataclass
class Curve:
    """One arm's representative run on real test, ready to draw."""
    label: str        # legend text before the area (arm and seed)
    key: str          # "baseline" | "gan" | "control" (colour)
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    recall: np.ndarray
    precision: np.ndarray
    ap: float
    prevalence: float  # share of positives among the test images (a PR curve's chance level)


def _wrap(title: str, width: int = 36) -> str:
    """Panel titles wrapped line by line, so neighbouring panels' titles never run into each other."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))

def confusion_matrices(panels: list[tuple[str, np.ndarray, list[str]]], out: Path,
                       positive: str = "") -> tuple[Path | None, str]:
    """One panel per arm: counts (rows true, columns predicted) with each row's percentage."""
    if not panels:
        return None, "no run of the headline's arms has a readable metrics.json"
    plt = _plt()
    k = max(len(c) for _, _, c in panels)
    side = max(3.4, 0.75 * k + 1.6)
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), side), squeeze=False)
    for ax, (title, cm, classes) in zip(axes[0], panels):
        cm = np.asarray(cm, dtype=np.int64)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, f"{v}\n{share[r, c]:.0%}", ha="center", va="center", fontsize=8 if k <= 4 else 6,
                    color="white" if share[r, c] > 0.5 else "black")
        names = [f"{n} (+)" if n == positive else n for n in classes]
        ax.set_xticks(range(len(classes)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(_wrap(title), fontsize=9)
    fig.tight_layout()
    return _save(fig, out), ""


def roc_pr(curves: list[Curve], out: Path, positive: str = "") -> tuple[Path | None, str]:
    """ROC (left) and precision-recall (right) of each arm on one axis each; AUC / AP in the legends (the PR
    steps are drawn so that the area under them is the AP)."""
    if not curves:
        return None, "no run of the headline's arms has a usable test_scores.csv"
    plt = _plt()
    fig, (a_roc, a_pr) = plt.subplots(1, 2, figsize=(11, 4.6))
    for c in curves:
        color = ARM_COLORS.get(c.key, "tab:purple")
        a_roc.plot(c.fpr, c.tpr, color=color, drawstyle="default", label=f"{c.label}: AUC {c.auc:.3f}")
        a_pr.step(c.recall, c.precision, where="pre", color=color, label=f"{c.label}: AP {c.ap:.3f}")
    a_roc.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="chance")
    prevalence = curves[0].prevalence
    a_pr.axhline(prevalence, color="gray", linestyle=":", linewidth=1, label=f"chance ({prevalence:.2f})")
    what = f" ({positive} = positive)" if positive else ""
    a_roc.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
              title="ROC on real test" + what, xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    a_pr.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall on real test" + what,
             xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    for ax in (a_roc, a_pr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is a_roc else "lower left")
    fig.tight_layout()
    return _save(fig, out), ""


def training_curves(panels: list[tuple[str, str, pd.DataFrame, int | None]], out: Path) -> tuple[Path | None, str]:
    """Train and val loss per epoch, one panel per arm (title, key, history.csv, best epoch), shared y axis."""
    if not panels:
        return None, "no run of the headline's arms has a history.csv with train_loss and val_loss"
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, (title, key, h, best) in zip(axes[0], panels):
        color = ARM_COLORS.get(key, "tab:purple")
        epoch = pd.to_numeric(h["epoch"], errors="coerce")
        ax.plot(epoch, pd.to_numeric(h["train_loss"], errors="coerce"), color=color, marker=".", label="train loss")
        ax.plot(epoch, pd.to_numeric(h["val_loss"], errors="coerce"), color=color, linestyle="--", marker=".",
                label="val loss (real)")
        if best is not None:
            ax.axvline(best, color="gray", linestyle=":", linewidth=1, label=f"chosen epoch {best}")
        ax.set_title(_wrap(title), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("cross-entropy")
    fig.tight_layout()
    return _save(fig, out), ""
