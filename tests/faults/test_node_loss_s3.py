"""Fault 3b: a node is lost mid-trial on a multi-node Ray whose nodes share nothing but an S3 store.

As fault 3 (test_node_loss.py), but the work dir is not shared: the driver publishes the data bundle to S3 and
its own copy is deleted before any trial starts; each node works in its own scratch folder. The trial publishes
its classifier checkpoints to S3 every epoch, so the retry on node B fetches last.pt from the store and
resumes after it instead of starting from epoch 0.
"""
from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
import torch

from faults_helpers import run_losing_a_node, tiny_settings
from s3_server import list_keys, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.ray]
CLF_EPOCHS = 40
PREFIX = "sweeps/node_loss"


def _published_epoch(endpoint: str, key: str) -> int:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")
    with fs.open_input_stream(key) as f:
        return int(torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)["epoch"])


def test_trial_on_a_lost_node_resumes_from_checkpoints_in_s3(fault_manifest, tmp_path, monkeypatch):
    from sweeps.artifacts import publish_for_cluster
    from sweeps.results import ResultsTable
    from sweeps.storage import Store

    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    monkeypatch.setenv("GANAUG_SCRATCH", str(tmp_path / "scratch"))
    with s3_server() as endpoint:
        driver = tmp_path / "driver"
        shutil.copytree(fault_manifest.parent, driver / "data")
        settings = tiny_settings(driver / "data" / "manifest.parquet", driver, clf_epochs=CLF_EPOCHS)
        store = Store(f"s3://{PREFIX}", endpoint, scratch=str(driver))
        settings["data"] = publish_for_cluster(settings["data"], store, 32, 3)
        shutil.rmtree(driver)  # nothing a trial could read from the driver's disk
        table = ResultsTable(tmp_path / "results.parquet", "node_loss_s3", phase="confirm")

        def checkpoint_epoch():
            last = [k for k in list_keys(endpoint, f"{PREFIX}/classifiers") if k.endswith("checkpoints/last.pt")]
            return _published_epoch(endpoint, last[0]) if last else None

        grid, ckpt, epochs, recovered = run_losing_a_node(settings, table, str(tmp_path / "tune"), "node_loss_s3",
                                                          checkpoint_epoch, timeout=240)
        keys = list_keys(endpoint, PREFIX)
    assert ckpt is not None, "node A was never removed (no checkpoint reached the store?)"
    assert recovered == 1 and not grid.errors
    assert 1 <= ckpt < CLF_EPOCHS
    # resumed from the store's checkpoint: after it, the epochs continue from ckpt + 1, never from 1 again
    assert epochs.count(1) <= 1, epochs
    assert ckpt + 1 in epochs and epochs[-1] == CLF_EPOCHS, epochs
    assert all(e > ckpt for e in epochs[epochs.index(ckpt + 1):]), epochs
    clf = pd.read_parquet(tmp_path / "results.parquet").query("stage == 'classifier'")
    assert len(clf) == 1 and clf.iloc[0]["status"] == "ok", clf[["status", "error"]]
    run = clf.iloc[0]["clf_run_dir"]
    assert run.startswith(f"s3://{PREFIX}/classifiers/")
    assert f"{run[len('s3://'):]}/checkpoints/best.pt" in keys and f"{run[len('s3://'):]}/metrics.json" in keys
    nodes = list((tmp_path / "scratch" / "ganaug_scratch").iterdir())
    assert len(nodes) == 2, nodes  # the trial ran on A, then on B, each in its own scratch
