"""The report section on the headline's runs: confusion matrices, ROC and PR curves, classifier training curves
of the baseline, the GAN and the best classical control on real test, and per-class metrics when the data set
has more than two classes (+ headline_runs.csv, per_class_test.csv).

    runs_section(doc, out, clf, hl, base)     # hl: the report's Headline (or None); base: the results' folder

The arms are the verdict's picks (analysis.runs explains which seeds are shown and how). Missing run folders
or files (results copied without the sweep's classifiers/ folder, runs from before test_scores.csv existed,
DDP runs) make the section say what is missing, never raise. pandas/numpy/matplotlib only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import run_plots
from analysis.document import Doc, fnum
from analysis.runs import ArmRuns, headline_runs, pr, roc

TITLE = "The headline's runs on real test: confusion matrices, ROC / PR and training curves"


def runs_section(doc: Doc, out: Path, clf: pd.DataFrame, hl, base: Path) -> list[ArmRuns]:
    """Figures and tables of the headline's arms; -> the arms with their runs (for tests and callers)."""
    doc.h(2, TITLE)
    if hl is None or all(getattr(hl, k) is None for k in ("baseline", "gan", "control")):
        doc.p("No headline arm was chosen, so there are no runs to show.")
        return []
    arms = headline_runs(hl, clf, base)
    classes, positive = _classes(arms)
    phase = "confirm phase; " if hl.confirm_only else "the results record no sweep phase, so any phase; "
    gan = "the GAN the search fixed (confirm rank 1)" if hl.gan_preregistered else "the GAN chosen on validation"
    doc.p(f"The runs of the configurations the headline compares ({phase}{gan}, each arm's classifier LR chosen "
          "on real validation, the best control chosen on validation): "
          + "; ".join(f"{a.label} `{a.config_id}`, {len(a.runs)} run(s)" for a in arms) + ". "
          "Confusion matrices are summed over the seeds (runs) whose run folder was found; ROC / PR and training "
          "curves show one representative seed per arm, the one with the median real-test F1 (the lower middle one "
          "for an even count), so they show a typical run, neither the best nor the worst.")
    confusion_figure(doc, out, arms, classes, positive)
    curves = roc_pr_figure(doc, out, arms, positive)
    training_figure(doc, out, arms)
    per_class_table(doc, out, arms, classes, positive)
    _runs_csv(out, arms, curves)
    missing = [f"{a.label}, {r.name}: " + "; ".join(r.problems) for a in arms for r in a.runs if r.problems]
    if missing:
        doc.p(f"Missing run files ({len(missing)} run(s); the figures use what was found). A results file "
              "moved elsewhere finds its runs when the sweep's `classifiers/` folder sits beside it:")
        doc.bullets(missing[:12] + ([f"... and {len(missing) - 12} more (all in `headline_runs.csv`)"]
                                    if len(missing) > 12 else []))
    return arms


def _classes(arms: list[ArmRuns]) -> tuple[list[str], str]:
    """Class names and the positive (minority) class, from the first metrics.json that has them."""
    for a in arms:
        for r in a.with_metrics:
            cls = r.metrics.get("classes")
            if isinstance(cls, list) and cls:
                pos = r.metrics.get("positive_label")
                return [str(c) for c in cls], str(cls[pos]) if isinstance(pos, int) and 0 <= pos < len(cls) else ""
    return [], ""


def confusion_figure(doc: Doc, out: Path, arms: list[ArmRuns], classes: list[str], positive: str) -> None:
    doc.h(3, "Confusion matrices on real test")
    panels = []
    for a in arms:
        cms = [np.asarray(r.metrics["test"].get("confusion_matrix", []), dtype=np.int64) for r in a.with_metrics]
        cms = [c for c in cms if c.ndim == 2 and c.shape == (len(classes), len(classes))]
        if cms:
            panels.append((f"{a.label}\nsummed over {_count(a)}", np.sum(cms, axis=0), classes))
    path, why = run_plots.confusion_matrices(panels, out / "confusion_test.png", positive)
    if not path:
        return doc.p(f"Not drawn: {why}.")
    doc.image(path, "Confusion matrices on real test (rows: true class, columns: predicted; count and share of the "
                    "row), each arm's chosen configuration summed over its seeds, every seed at its own threshold "
                    "chosen on validation. (+) marks the positive (minority) class"
                    + (f" {positive}." if positive else "."))


def _count(a: ArmRuns) -> str:
    """'3 seeds (1000, 1001, 1002)', or '15 runs (5 seeds x 3 folds)' of the runs with metrics.json."""
    runs = a.with_metrics
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    if any(r.fold is not None for r in runs):
        return f"{len(runs)} runs ({len(seeds)} seed(s) x {len({r.fold for r in runs})} fold(s))"
    return f"{len(runs)} seed(s) ({', '.join(map(str, seeds))})" if len(seeds) <= 6 else f"{len(runs)} seeds"


def roc_pr_figure(doc: Doc, out: Path, arms: list[ArmRuns], positive: str) -> dict[str, tuple[float, float]]:
    """-> arm key -> (ROC-AUC, AP) computed from the representative run's test_scores.csv."""
    doc.h(3, "ROC and precision-recall curves on real test")
    curves, areas = [], {}
    for a in arms:
        r = a.representative
        if r is None or r.scores is None or r.metrics is None:
            continue
        pos_label = r.metrics.get("positive_label", 1)
        is_pos = pd.to_numeric(r.scores["label"], errors="coerce").to_numpy() == pos_label
        score = pd.to_numeric(r.scores["score"], errors="coerce").to_numpy(dtype=np.float64)
        fpr, tpr, auc = roc(is_pos, score)
        rec, prec, ap = pr(is_pos, score)
        if not np.isfinite(auc):
            continue
        areas[a.key] = (auc, ap)
        curves.append(run_plots.Curve(f"{a.label}, {r.name}", a.key, fpr, tpr, auc, rec, prec, ap,
                                      float(is_pos.mean())))
    path, why = run_plots.roc_pr(curves, out / "roc_pr_test.png", positive)
    if not path:
        doc.p(f"Not drawn: {why}.")
        return areas
    doc.image(path, "ROC (left) and precision-recall (right) curves on real test, positive = the minority class "
                    "against all others, from each arm's representative seed ("
                    + "; ".join(f"{a.label}: {a.why}" for a in arms if a.key in areas)
                    + "). AUC and AP are computed from the run's per-image scores (test_scores.csv).")
    return areas


def training_figure(doc: Doc, out: Path, arms: list[ArmRuns]) -> None:
    doc.h(3, "Classifier training curves")
    panels = []
    for a in arms:
        r = a.representative
        if r is None or r.history is None:
            continue
        best = (r.metrics or {}).get("best_epoch")
        panels.append((f"{a.label}\n{r.name}", a.key, r.history, best if isinstance(best, int) else None))
    path, why = run_plots.training_curves(panels, out / "clf_training_curves.png")
    if not path:
        return doc.p(f"Not drawn: {why}.")
    doc.image(path, "Train loss and real-validation loss (the same weighted cross-entropy) per epoch of each arm's "
                    "representative seed, from history.csv; the dotted line is the epoch chosen on validation, "
                    "whose weights were tested.")


def per_class_table(doc: Doc, out: Path, arms: list[ArmRuns], classes: list[str], positive: str) -> None:
    """Per-class precision / recall / F1 on real test, mean over seeds, when there are more than two classes."""
    if len(classes) <= 2:
        return
    doc.h(3, "Per-class metrics on real test")
    long, shown = [], {"Class": [f"{c} (+)" if c == positive else c for c in classes]}
    for a in arms:
        cells = []
        for c in classes:
            vals = [r.metrics["test"].get("per_class", {}).get(c) for r in a.with_metrics]
            vals = [v for v in vals if isinstance(v, dict)]
            mean = {k: float(np.mean([v.get(k, np.nan) for v in vals])) if vals else np.nan
                    for k in ("precision", "recall", "f1", "support")}
            long.append({"arm": a.key, "label": a.label, "config_id": a.config_id, "class": c, "n_runs": len(vals),
                         **mean})
            cells.append(" / ".join(fnum(mean[k]) for k in ("precision", "recall", "f1")))
        shown[f"{a.label}: P / R / F1"] = cells
    per = pd.DataFrame(long)
    per.to_csv(out / "per_class_test.csv", index=False)
    support = per.groupby("class", sort=False)["support"].first()
    shown = {"Class": shown.pop("Class"), "Test images": [fnum(support.get(c), 0) for c in classes], **shown}
    doc.table(pd.DataFrame(shown), "per_class_test.csv")
    doc.p("Precision / recall / F1 of each class against all others on real test, at each run's own threshold, "
          "mean over the runs (seeds) with metrics.json (the headline's sensitivity is the recall of the positive "
          "class (+)). Exploratory: no claim is tested on these.")


def _runs_csv(out: Path, arms: list[ArmRuns], areas: dict) -> None:
    """headline_runs.csv: every run of the three arms, which one the curves show, its folder and what it lacks."""
    rows = [{"arm": a.key, "label": a.label, "config_id": a.config_id, "seed": r.seed, "fold": r.fold,
             "test_f1": r.test_f1,
             "representative": r is a.representative, "run_dir": str(r.dir) if r.dir else r.named,
             "found": r.dir is not None,
             "roc_auc_from_scores": areas.get(a.key, (np.nan, np.nan))[0] if r is a.representative else np.nan,
             "ap_from_scores": areas.get(a.key, (np.nan, np.nan))[1] if r is a.representative else np.nan,
             "problems": "; ".join(r.problems)} for a in arms for r in a.runs]
    pd.DataFrame(rows).to_csv(out / "headline_runs.csv", index=False)
