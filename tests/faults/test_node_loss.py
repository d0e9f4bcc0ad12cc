"""Fault 3: a node is lost mid-trial on a local multi-node Ray (ray.cluster_utils.Cluster).

The head has no CPUs, so the trial (the real sweeps.trial.trainable, baseline arm) lands on worker node A.
Once it has checkpointed a classifier epoch, node A is removed and node B joins. Tune's FailureConfig
(max_failures=1, the sweep's default) retries the trial on B; the trial's work dir is shared (as on a cluster
with --work-dir on a shared file system), so the retry resumes from the classifier's last.pt instead of
epoch 0, and the trial ends "ok" in results.parquet exactly once.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from faults_helpers import BASELINE, tiny_settings

pytestmark = pytest.mark.slow

CLF_EPOCHS = 40  # long enough (seconds) for the node to be removed mid-training


def test_trial_on_a_lost_node_is_retried_elsewhere_and_resumes(fault_manifest, tmp_path, monkeypatch):
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from sweeps.results import ResultsCallback, ResultsTable
    from sweeps.trial import trainable

    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    settings = tiny_settings(fault_manifest, tmp_path / "work", clf_epochs=CLF_EPOCHS)
    table = ResultsTable(tmp_path / "work" / "results.parquet", "node_loss", phase="confirm")

    class EpochLog(tune.Callback):
        def __init__(self):
            self.epochs: list[int] = []
            self.recovered = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("phase") == "classifier":
                self.epochs.append(int(result["clf_epoch"]))

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.recovered += 1

    log = EpochLog()
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    node_a = cluster.add_node(num_cpus=1)
    removed, outcome = {}, {}
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        fn = tune.with_resources(tune.with_parameters(trainable, **settings), {"cpu": 1})
        tuner = tune.Tuner(fn, param_space={"trial": tune.grid_search([BASELINE])},
                           tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(name="node_loss", storage_path=str(tmp_path / "storage"),
                                                     callbacks=[ResultsCallback(table), log], verbose=0,
                                                     failure_config=tune.FailureConfig(max_failures=1)))
        # the sweep driver runs in a thread; this (main) thread plays the cluster, since Ray adds nodes only
        # from the main thread
        driver = threading.Thread(target=lambda: outcome.update(grid=tuner.fit()), daemon=True)
        driver.start()
        deadline = time.time() + 300
        while driver.is_alive() and time.time() < deadline and not removed:
            last = list((tmp_path / "work" / "classifiers").glob("*/checkpoints/last.pt"))
            if last:
                # remove first: starting node B takes seconds, in which a fast trial could finish on A
                cluster.remove_node(node_a, allow_graceful=False)  # node A and the trial's process die
                # the epoch the retry must resume after (last.pt is replaced atomically; its writer is dead now)
                removed["ckpt_epoch"] = int(torch.load(last[0], map_location="cpu", weights_only=True)["epoch"])
                removed["reported"] = len(log.epochs)  # results the driver had seen by then (it lags the trial)
                cluster.add_node(num_cpus=1)  # node B: where the retry can go (as an autoscaler would add it)
            time.sleep(0.05)
        driver.join(timeout=300)
        grid = outcome["grid"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed, "node A was never removed (the trial never checkpointed?)"
    assert log.recovered == 1, f"the trial was not retried after its node was lost (epochs seen: {log.epochs})"
    assert not grid.errors
    # resumed, not restarted: the retry's first epoch is the one after the checkpoint A left behind
    ckpt_epoch = removed["ckpt_epoch"]
    assert 1 <= ckpt_epoch < CLF_EPOCHS, removed
    assert log.epochs.count(1) <= 1, f"the retry trained from epoch 0: {log.epochs}"
    assert ckpt_epoch + 1 in log.epochs and all(e > ckpt_epoch for e in log.epochs[log.epochs.index(ckpt_epoch + 1):]), \
        f"epochs after the retry do not continue from checkpoint epoch {ckpt_epoch}: {log.epochs}"
    assert log.epochs[-1] == CLF_EPOCHS and set(range(ckpt_epoch + 1, CLF_EPOCHS + 1)) <= set(log.epochs)
    assert len(log.epochs) <= CLF_EPOCHS + 2, log.epochs
    df = pd.read_parquet(tmp_path / "work" / "results.parquet")
    clf = df[df["stage"] == "classifier"]
    assert len(clf) == 1 and clf.iloc[0]["status"] == "ok", clf[["status", "error"]]
    assert 0 <= clf.iloc[0]["test_f1"] <= 1
    assert Path(clf.iloc[0]["clf_run_dir"], "checkpoints", "best.pt").is_file()
