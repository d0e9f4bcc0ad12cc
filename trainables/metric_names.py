"""The metric names of the results contract, in one home both sides read: the training side writes them
(trainables.metrics.classification, sweeps/trial.py) and analysis/schema.py re-exports them for the readers.

It lives here, beside trainables/arms.py and like it free of torch and numpy, so that the training side never
imports the analysis side (tests/test_house.py checks both).
"""
METRIC_NAMES = ["accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
                "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1",
                "roc_auc", "pr_auc"]  # minority class = positive; weighted_* = per-class values weighted by support
