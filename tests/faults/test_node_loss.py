"""Fault 3: a node is lost mid-trial on a local multi-node Ray (ray.cluster_utils.Cluster).

The head has no CPUs, so the trial (the real sweeps.trial.trainable, baseline arm) lands on worker node A.
Once it has checkpointed a classifier epoch, node A is removed and node B joins. Tune's FailureConfig
(max_failures=1, the sweep's default) retries the trial on B; the trial's work dir is shared (as on a cluster
with --work-dir on a shared file system), so the retry resumes from the classifier's last.pt instead of
epoch 0, and the trial ends "ok" in results.parquet exactly once.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from faults_helpers import run_losing_a_node, tiny_settings

pytestmark = pytest.mark.slow

CLF_EPOCHS = 40  # long enough (seconds) for the node to be removed mid-training


def test_trial_on_a_lost_node_is_retried_elsewhere_and_resumes(fault_manifest, tmp_path, monkeypatch):
    from sweeps.results import ResultsTable

    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    settings = tiny_settings(fault_manifest, tmp_path / "work", clf_epochs=CLF_EPOCHS)
    table = ResultsTable(tmp_path / "work" / "results.parquet", "node_loss", phase="confirm")

    def checkpoint_epoch():
        last = list((tmp_path / "work" / "classifiers").glob("*/checkpoints/last.pt"))
        return int(torch.load(last[0], map_location="cpu", weights_only=True)["epoch"]) if last else None

    grid, ckpt_epoch, epochs, recovered = run_losing_a_node(settings, table, str(tmp_path / "storage"),
                                                            "node_loss", checkpoint_epoch)
    assert ckpt_epoch is not None, "node A was never removed (the trial never checkpointed?)"
    assert recovered == 1, f"the trial was not retried after its node was lost (epochs seen: {epochs})"
    assert not grid.errors
    # resumed, not restarted: the retry's first epoch is the one after the checkpoint A left behind
    assert 1 <= ckpt_epoch < CLF_EPOCHS, ckpt_epoch
    assert epochs.count(1) <= 1, f"the retry trained from epoch 0: {epochs}"
    assert ckpt_epoch + 1 in epochs and all(e > ckpt_epoch for e in epochs[epochs.index(ckpt_epoch + 1):]), \
        f"epochs after the retry do not continue from checkpoint epoch {ckpt_epoch}: {epochs}"
    assert epochs[-1] == CLF_EPOCHS and set(range(ckpt_epoch + 1, CLF_EPOCHS + 1)) <= set(epochs)
    assert len(epochs) <= CLF_EPOCHS + 2, epochs
    df = pd.read_parquet(tmp_path / "work" / "results.parquet")
    clf = df[df["stage"] == "classifier"]
    assert len(clf) == 1 and clf.iloc[0]["status"] == "ok", clf[["status", "error"]]
    assert 0 <= clf.iloc[0]["test_f1"] <= 1
    assert Path(clf.iloc[0]["clf_run_dir"], "checkpoints", "best.pt").is_file()
