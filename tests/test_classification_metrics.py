"""Classification metrics against hand-computed confusion matrices, and the val threshold rules."""
import math

import numpy as np
import pytest

from trainables.metrics.classification import METRIC_KEYS, choose_threshold, classification_metrics

# 3 positives (label 1), 5 negatives; at threshold 0.5: TP=2, FN=1, FP=1, TN=4
LABELS = [1, 1, 1, 0, 0, 0, 0, 0]
SCORES = [0.9, 0.7, 0.2, 0.6, 0.4, 0.3, 0.1, 0.05]


def test_binary_metrics_match_hand_computed_confusion_matrix():
    m = classification_metrics(SCORES, LABELS, positive_label=1, threshold=0.5)
    assert m["confusion_matrix"] == [[4, 1], [1, 2]]  # rows true, columns predicted
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 4)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)  # negative class: P = R = 4/5
    # weighted by support (3 positives, 5 negatives), as in the X-ray studies' tables (scikit-learn's "weighted")
    assert m["weighted_precision"] == pytest.approx((3 * 2 / 3 + 5 * 4 / 5) / 8)
    assert m["weighted_recall"] == pytest.approx(m["accuracy"])  # support-weighted recall is accuracy
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 5 * 4 / 5) / 8)
    # ROC-AUC by pair counting: of 15 (pos, neg) pairs, positive 0.2 loses to 0.6, 0.4, 0.3 -> 12/15
    assert m["roc_auc"] == pytest.approx(12 / 15, abs=1e-6)
    # AP: positives at ranks 1, 2, 6 -> (1/1 + 2/2 + 3/6) / 3
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)
    assert set(METRIC_KEYS) <= set(m)


def test_all_negative_predictions_give_defined_values_not_nan():
    m = classification_metrics(SCORES, LABELS, positive_label=1, threshold=0.99)
    assert m["confusion_matrix"] == [[5, 0], [3, 0]]
    assert m["precision"] == 0.0 and m["sensitivity"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 * 5 / 8 / (5 / 8 + 1)) / 2)
    assert not any(math.isnan(m[k]) for k in METRIC_KEYS)


def test_positive_label_zero_is_respected_and_2d_probs_equal_1d_scores():
    flipped = [1 - y for y in LABELS]
    probs = np.stack([SCORES, 1 - np.array(SCORES)], axis=1)  # column 0 = the positive class
    m = classification_metrics(probs, flipped, positive_label=0, threshold=0.5)
    ref = classification_metrics(SCORES, LABELS, positive_label=1, threshold=0.5)
    for k in METRIC_KEYS:
        assert m[k] == pytest.approx(ref[k], abs=1e-6), k
    assert m["confusion_matrix"] == [[2, 1], [1, 4]]


def test_multiclass_is_one_vs_rest_on_positive_with_per_class_values():
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1]])
    labels = [2, 0, 1, 2, 0]
    m = classification_metrics(probs, labels, positive_label=2, threshold=0.5)
    # predictions: 2, 0, 1, 0 (0.4 < 0.5, best other class 0), 1
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m["sensitivity"] == pytest.approx(0.5) and m["precision"] == pytest.approx(1.0)
    assert m["per_class"][1] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_choose_threshold_max_f1_and_target_sensitivity():
    # candidates (score >= t): 0.9 -> F1 .5, 0.7 -> .8, 0.6 -> 4/6, 0.4 -> 4/7, 0.3 -> .5, 0.2 -> 6/10 ...
    assert choose_threshold(SCORES, LABELS, 1, "max_f1") == pytest.approx(0.7)
    # sensitivity >= 0.9 needs all three positives: the highest such threshold is 0.2
    assert choose_threshold(SCORES, LABELS, 1, "target_sensitivity", 0.9) == pytest.approx(0.2)
    assert choose_threshold(SCORES, LABELS, 1, "target_sensitivity", 0.6) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="valid"):
        choose_threshold(SCORES, LABELS, 1, "youden")
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold(SCORES, [0] * 8, 1)
