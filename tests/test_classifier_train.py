"""Classifier loop and entry points on the tiny demo set (CPU): exactly-once eval, thresholds, smoke runs."""
import json

import numpy as np
import pytest
import torch

import data_prep
from data_prep.manifest import read_manifest, write_manifest
from trainables.classifier.__main__ import main
from trainables.classifier.loop import evaluate_best, merge_predictions, tensor_batches
from trainables.classifier.run import run_classifier_local
from trainables.metrics.classification import classification_metrics

SMALL = {"model": "small_cnn", "image_size": 32, "batch_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    data_prep.prepare(data_prep.PrepConfig(source="demo", demo_num_majority=120, demo_num_minority=40,
                                           demo_image_size=32), d, progress=False)
    return d / "manifest.parquet"


def test_merge_predictions_counts_each_image_once_across_two_simulated_ranks():
    n = 7  # odd: a DistributedSampler pads rank 1 with a repeat of row 0
    probs = np.random.default_rng(0).random((n, 2))
    labels = np.array([0, 1, 0, 0, 1, 0, 1])
    rank0 = np.array([0, 2, 4, 6])
    rank1 = np.array([1, 3, 5, 0])  # padded duplicate of index 0
    parts = [(i, probs[i], labels[i]) for i in (rank0, rank1)]
    idx, p, y = merge_predictions(parts, expected_n=n)
    assert idx.tolist() == list(range(n)) and np.array_equal(p, probs) and np.array_equal(y, labels)
    assert classification_metrics(p, y, 1, 0.5)["n"] == n
    with pytest.raises(RuntimeError, match="covered 6 of 7"):
        merge_predictions([(rank0, probs[rank0], labels[rank0]), (rank1[:2], probs[rank1[:2]], labels[rank1[:2]])], n)


def test_threshold_from_val_is_applied_unchanged_to_test():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x_va, y_va = torch.randn(10, 4), torch.tensor([0, 1] * 5)
    x_te, y_te = torch.randn(9, 4), torch.tensor([0, 1, 0, 0, 1, 0, 0, 1, 0])
    outcome = {"model": model, "best": {"model": model.state_dict(), "threshold": 0.4321, "epoch": 1}}
    batches = lambda x, y: (lambda: tensor_batches(x, y, 4, with_index=True))  # noqa: E731
    out = evaluate_best(outcome, {"val": (batches(x_va, y_va), 10), "test": (batches(x_te, y_te), 9)},
                        num_classes=2, positive_label=1, device=torch.device("cpu"))
    assert out["val"]["threshold"] == out["test"]["threshold"] == 0.4321
    with torch.no_grad():
        probs = torch.softmax(model(x_te), 1).numpy()
    assert out["test"]["confusion_matrix"] == classification_metrics(probs, y_te.numpy(), 1, 0.4321)["confusion_matrix"]


def test_smoke_run_beats_chance_on_real_test(manifest_path, tmp_path):
    rows = []
    out = run_classifier_local(manifest_path, tmp_path / "run", {**SMALL, "num_epochs": 6}, report=rows.append)
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert {"train_loss", "images_per_s", "val_f1", "val_threshold"} <= set(rows[0])
    assert out["test"]["balanced_accuracy"] > 0.5
    assert out["val"]["n"] == 24 and out["test"]["n"] == 24
    # the test threshold is the best epoch's val threshold, not re-tuned on test
    assert out["test"]["threshold"] == out["threshold"] == rows[out["best_epoch"] - 1]["val_threshold"]
    assert out["val"]["f1"] == pytest.approx(max(r["val_f1"] for r in rows))
    run = tmp_path / "run"
    for name in ("metrics.json", "config.json", "history.jsonl", "confusion_matrix.png", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["f1"] == pytest.approx(out["test"]["f1"]) and saved["best_epoch"] == out["best_epoch"]


def test_cli_smoke_with_synthetic_oversampling_and_augment(manifest_path, tmp_path, capsys):
    from tests.test_classifier_data import make_synthetic

    syn = make_synthetic(tmp_path / "syn", 30, label=1)
    rc = main(["--manifest", str(manifest_path), "--out", str(tmp_path / "cli"), "--smoke-test", "--epochs", "1",
               "--synthetic", str(syn), "--synthetic-ratio", "1", "--imbalance-fix", "oversample",
               "--augment", "standard"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch 1/1" in text and "balanced_accuracy" in text
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m["n_synthetic"] == 28 and {"val", "test", "threshold", "best_epoch"} <= set(m)


def test_cli_folds_report_mean_and_std(manifest_path, tmp_path):
    out = run_classifier_local(manifest_path, tmp_path / "cv", {**SMALL, "num_epochs": 1, "num_folds": 2})
    assert out["num_folds"] == 2 and len(out["folds"]) == 2
    assert out["val"]["f1"] == pytest.approx(np.mean([f["val"]["f1"] for f in out["folds"]]))
    assert out["test_std"]["f1"] == pytest.approx(np.std([f["test"]["f1"] for f in out["folds"]]))
    assert (tmp_path / "cv" / "fold_1" / "metrics.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--synthetic-ratio", "11", "--synthetic", "x"], "synthetic_ratio must be in [0, 10]"),
    (["--synthetic-ratio", "1"], "needs --synthetic DIR"),
    (["--model", "vgg"], "unknown model 'vgg'"),
    (["--weights", "/nonexistent/w.pt"], "weights file not found"),
])
def test_cli_bad_input_messages(manifest_path, tmp_path, capsys, argv, message):
    rc = main(["--manifest", str(manifest_path), "--out", str(tmp_path / "bad"), "--smoke-test", *argv])
    assert rc == 2 and message in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_ray_ddp_two_workers_counts_odd_sized_val_and_test_once(manifest_path, tmp_path):
    ray = pytest.importorskip("ray")
    from trainables.classifier.ray_train import run_classifier_ray

    m = read_manifest(manifest_path)  # drop one majority image from val and test: 23 each (odd)
    drop = [m.df.index[(m.df["split"] == s) & (m.df["label"] != m.positive_label)][0] for s in ("val", "test")]
    m.df = m.df.drop(index=drop).reset_index(drop=True)
    odd = write_manifest(m, tmp_path / "odd" / "manifest.parquet")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        # epoch_size 200: ceil(200 / (16 x 2)) = 7 batches per worker and epoch, over 4-batch shards of the 112
        # train images: every epoch passes over its shard again and stops mid-pass, in step on both workers
        out = run_classifier_ray(odd, tmp_path / "ddp", {**SMALL, "num_epochs": 2, "epoch_size": 200}, num_workers=2)
    finally:
        ray.shutdown()
    assert out["steps"] == 2 * 7 and [h["steps"] for h in out["history"]] == [7, 14] and out["epoch_size"] == 200
    for split in ("val", "test"):
        assert out[split]["n"] == 23 and int(np.sum(out[split]["confusion_matrix"])) == 23
    assert len(out["history"]) == 2 and out["test"]["threshold"] == out["threshold"]
    assert out["history"][0]["images_per_s"] > 0
    assert (tmp_path / "ddp" / "metrics.json").is_file() and (tmp_path / "ddp" / "checkpoints" / "best.pt").is_file()
    # the ranks' test scores, merged: each of the 23 test images once, and the AUC they give is the run's
    import pandas as pd
    from torchmetrics.functional.classification import binary_auroc

    scores = pd.read_csv(tmp_path / "ddp" / "test_scores.csv")
    assert sorted(scores["row"]) == list(range(23))
    auc = binary_auroc(torch.tensor(scores["score"].to_numpy()),
                       torch.tensor((scores["label"] == m.positive_label).to_numpy().astype(int))).item()
    assert auc == pytest.approx(out["test"]["roc_auc"], abs=1e-4)
