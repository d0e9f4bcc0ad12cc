"""The sweep on a multi-node Ray with nothing shared but an S3 store (issue: a real cluster).

A local ray.cluster_utils.Cluster (a head with no CPUs, two 1-CPU worker nodes, small object stores) and an
S3 server on 127.0.0.1 (moto). Every Ray worker runs an audit hook that fails any open under the driver's work
dir, so a trial that reads a driver path fails loudly. `--smoke-test` runs end to end: results.parquet and the
report land in the bucket, and each GAN config is trained exactly once across the nodes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from s3_server import list_keys, s3_server

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.ray]
MB = 1024 ** 2


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """(S3 endpoint, Ray cluster address); workers inherit the audit settings and S3 credentials."""
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("GANAUG_FORBIDDEN_DIR", str(tmp_path / "driver"))
    monkeypatch.setenv("GANAUG_FORBIDDEN_LOG", str(tmp_path / "forbidden.log"))
    monkeypatch.setenv("GANAUG_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    with s3_server() as endpoint:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                          "object_store_memory": 80 * MB})
        try:
            for _ in range(2):
                c.add_node(num_cpus=1, object_store_memory=80 * MB)
            c.wait_for_nodes()
            yield endpoint, c.address
        finally:
            ray.shutdown()
            c.shutdown()


def _audit_works(address: str, forbidden: Path) -> None:
    """The hook the sweep installs really stops a worker from opening a driver path (else the test proves nothing)."""
    import ray

    forbidden.mkdir(parents=True, exist_ok=True)
    (forbidden / "x.txt").write_text("driver only")
    from cluster_audit import with_audit

    ray.init(address=address, runtime_env=with_audit({"env_vars": {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}}))
    try:
        @ray.remote(num_cpus=1)
        def peek(p):
            return Path(p).read_text()

        with pytest.raises(Exception, match="opened the sweep driver's work dir"):
            ray.get(peek.remote(str(forbidden / "x.txt")))
    finally:
        ray.shutdown()


def test_smoke_sweep_on_two_nodes_with_s3_storage_only(cluster, tmp_path):
    import pyarrow.fs as pafs

    endpoint, address = cluster
    driver = tmp_path / "driver"
    _audit_works(address, driver)
    (tmp_path / "forbidden.log").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
           "RAY_RUNTIME_ENV_HOOK": "cluster_audit.with_audit"}  # Ray's own hook: every worker gets the audit
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "augment_ratio.py"), "--smoke-test",
                           "--address", address, "--storage-path", "s3://sweeps/runs", "--work-dir", str(driver)],
                          env=env, capture_output=True, text=True, timeout=420)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    log = tmp_path / "forbidden.log"  # every worker with the hook creates it; a violation writes a line
    assert log.exists() and log.read_text() == "", log.read_text()
    keys = list_keys(endpoint, "sweeps/runs/smoke_test")
    base = "sweeps/runs/smoke_test/"
    for key in ("results.parquet", "sweep_state.json", "report/report.html", "report/report.md",
                "report/confusion_test.png", "report/roc_pr_test.png", "report/clf_training_curves.png",
                "data/bundle/images.npz", "data/bundle/manifest.parquet"):
        assert base + key in keys, (key, keys[:40])
    fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")
    df = pd.read_parquet(base + "results.parquet", filesystem=fs)
    with fs.open_input_stream(base + "report/report.md") as f:  # the driver found every run in the store
        report = f.read().decode()
    assert "Missing run files" not in report and "Not drawn" not in report, report
    clf = df[df["stage"] == "classifier"]
    assert (clf["status"] == "ok").all(), clf[["status", "error"]]
    assert clf["clf_run_dir"].str.startswith("s3://sweeps/runs/smoke_test/classifiers/").all()
    # each GAN config trained exactly once across the nodes, and reused by the trials that share it
    gans = df[df["stage"] == "gan"]
    assert gans["gan_key"].is_unique and len(gans) >= 3
    done = {k.split("/")[-2] for k in keys if k.endswith("/done.json")}
    assert done == set(gans["gan_key"])
    with_gan = clf[clf["arm"].isin(["gan", "control+gan"])]  # a confirm seed's GAN serves both GAN arms
    used = with_gan["gan_key"].value_counts()
    assert set(used.index) <= done and used.max() >= 2, used
    assert (with_gan["gan_trained_here"].astype(bool).groupby(with_gan["gan_key"]).sum() == 1).all()
    nodes = {p.name for p in (tmp_path / "scratch" / "ganaug_scratch").iterdir()}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s): {nodes}"
