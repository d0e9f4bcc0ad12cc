"""The sweep on a multi-node Ray with nothing shared but an S3 store (issue: a real cluster).

A local ray.cluster_utils.Cluster (a head with no CPUs, two 1-CPU worker nodes, small object stores) and an
S3 server on 127.0.0.1 (moto). Every Ray worker runs an audit hook that fails any open under the driver's work
dir, so a trial that reads a driver path fails loudly. `--smoke-test` runs end to end: results.parquet and the
report land in the bucket, and each GAN config is trained exactly once across the nodes, although the sweep's
head is lost mid-sweep (SIGKILL of its driver, its disk and the data source deleted) and the sweep is resumed
from the store alone on a new head.
"""
from __future__ import annotations

import os
import re
import shutil
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


def _stored_rows(endpoint: str, scratch: Path) -> pd.DataFrame:
    """The sweep's rows as the store holds them (results.parquet + results.parts/), read from a fresh scratch."""
    from analysis.load import read_table
    from sweeps.storage import Store

    store = Store("s3://sweeps/runs/smoke_test", endpoint, scratch=str(scratch))
    store.fetch("results.parquet")
    store.fetch("results.parts")
    return read_table(store.local("results.parquet"))


def _results_objects(endpoint: str) -> dict[str, str]:
    from sweeps.storage import Store

    objs = Store("s3://sweeps/runs/smoke_test", endpoint).list("")
    return {o.key: o.etag for o in objs if o.key.startswith(("results", "sweep_state", "claim"))}


def test_smoke_sweep_on_two_nodes_with_s3_storage_only_survives_losing_its_head(cluster, tmp_path):
    """A --smoke-test sweep on 2 worker nodes + S3: its driver (the head's process) is SIGKILLed mid-sweep; the
    same command without --resume is refused (exit 2, naming the stored sweep, rows intact); the data source
    and the old head's disk are gone; --resume from a fresh work dir finishes from the store alone, losing and
    repeating no row. No worker ever opens a driver path."""
    import signal
    import time

    from demo_data import make_demo

    endpoint, address = cluster
    driver = tmp_path / "driver"  # every head's work dir below it: the audit forbids workers to open any of it
    _audit_works(address, driver)
    (tmp_path / "forbidden.log").unlink(missing_ok=True)
    source = make_demo(tmp_path / "source", 100, 24).parent / "demo.npz"  # --data: a file on the first head
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
           "RAY_RUNTIME_ENV_HOOK": "cluster_audit.with_audit"}  # Ray's own hook: every worker gets the audit

    def sweep(head: str, *extra: str, **kw):
        return subprocess.Popen([sys.executable, str(ROOT / "sweeps" / "augment_ratio.py"), "--smoke-test",
                                 "--address", address, "--storage-path", "s3://sweeps/runs", "--data", str(source),
                                 "--work-dir", str(driver / head), "--lease-ttl-s", "3", "--lease-heartbeat-s",
                                 "0.5", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **kw)

    first = sweep("head1", start_new_session=True)
    deadline = time.time() + 300
    while first.poll() is None and time.time() < deadline:
        if (_stored_rows(endpoint, tmp_path / "peek").get("stage", pd.Series()) == "classifier").sum() >= 4:
            break
        time.sleep(1)
    assert first.poll() is None, "the sweep ended before its head could be lost:\n" + first.communicate()[0][-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the head's driver dies; its disk is gone with it below
    first.wait()
    before, stored = _stored_rows(endpoint, tmp_path / "before"), _results_objects(endpoint)
    before_ids = set(before.loc[before["stage"] == "classifier", "trial_id"])

    again = sweep("head2")  # the same command on a new head, without --resume
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 2, out[-3000:]
    assert "s3://sweeps/runs/smoke_test already holds a sweep named 'smoke_test'" in out and "--resume" in out
    assert _results_objects(endpoint) == stored  # the stored rows and state are untouched

    shutil.rmtree(driver / "head1")
    source.unlink()  # the data source went with the old head
    resumed = sweep("head3", "--resume")
    out = resumed.communicate(timeout=420)[0]
    assert resumed.returncode == 0, out[-5000:]
    assert "resume:" in out and "copying" not in out and "data published" not in out  # the store's split
    assert re.search(r"GAN quality reference: .* cached", out), out[-3000:]  # not rebuilt
    _check_finished_sweep(endpoint, tmp_path, before_ids)


def _check_finished_sweep(endpoint: str, tmp_path: Path, before_ids: set) -> None:
    import pyarrow.fs as pafs

    log = tmp_path / "forbidden.log"  # every worker with the hook creates it; a violation writes a line
    assert log.exists() and log.read_text() == "", log.read_text()
    keys = list_keys(endpoint, "sweeps/runs/smoke_test")
    base = "sweeps/runs/smoke_test/"
    for key in ("results.parquet", "sweep_state.json", "report/report.html", "report/report.md",
                "report/confusion_test.png", "report/roc_pr_test.png", "report/clf_training_curves.png",
                "data/bundle/images.npz", "data/bundle/manifest.parquet"):
        assert base + key in keys, (key, keys[:40])
    assert not [k for k in keys if "/results.parts/" in k or k.endswith("driver.lease")]  # flushed, released
    fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")
    df = pd.read_parquet(base + "results.parquet", filesystem=fs)
    with fs.open_input_stream(base + "report/report.md") as f:  # the driver found every run in the store
        report = f.read().decode()
    assert "Missing run files" not in report and "Not drawn" not in report, report
    clf = df[df["stage"] == "classifier"]
    assert (clf["status"] == "ok").all(), clf[["status", "error"]]
    assert clf["trial_id"].is_unique and before_ids <= set(clf["trial_id"])  # nothing repeated, nothing lost
    # as many trials as an unbroken sweep: 2 search + 2 controls search + 4 arms x 2 LRs x 3 seeds
    assert len(clf) == 2 + 2 + 24
    assert clf["clf_run_dir"].str.startswith("s3://sweeps/runs/smoke_test/classifiers/").all()
    # each GAN config trained exactly once across the nodes and the two heads, and reused by the trials sharing it
    gans = df[df["stage"] == "gan"]
    assert gans["gan_key"].is_unique and len(gans) >= 3
    done = {k.split("/")[-2] for k in keys if k.endswith("/done.json")}
    assert done == set(gans["gan_key"])
    with_gan = clf[clf["arm"].isin(["gan", "control+gan"])]  # a confirm seed's GAN serves both GAN arms
    used = with_gan["gan_key"].value_counts()
    assert set(used.index) <= done and used.max() >= 2, used
    assert (with_gan["gan_trained_here"].astype(bool).groupby(with_gan["gan_key"]).sum() <= 1).all()
    attempts = {(k.split("/")[4], k.split("/")[5]) for k in keys if "/checkpoints/" in k and "/gans/" in k}
    assert len(attempts) == len(done)  # one set of GAN checkpoints per key
    nodes = {p.name for p in (tmp_path / "scratch" / "ganaug_scratch").iterdir()}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s): {nodes}"
