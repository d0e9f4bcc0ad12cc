"""Fault 8: what a cluster's shared pieces do wrong under Tune, with nothing shared but an S3 store (issue 23).

- The GAN lease service (a detached Ray actor, max_restarts=-1) is killed while a trial trains a GAN that a
  second trial waits for. A restarted service grants nothing for one TTL and adopts the holder that renews,
  so the GAN is trained once: one "gan" row, one set of checkpoints, done.json naming that attempt.
- A results publish fails (the store was unreachable for all its retries) at a trial's end. The callback
  keeps the row and publishes it at the next trial end; Tune never sees the error: every trial ran once and
  every row is ok (Ray 2.60 marks a finished trial errored when a callback raises in on_trial_complete).
One local 2-CPU Ray and one S3 server for both; lease TTL 3 s so the restart is survived in seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from faults_helpers import GAN, tiny_settings
from s3_server import list_keys, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def s3_ray(tmp_path_factory):
    """(S3 endpoint, scratch root): the server starts first, so Ray's workers inherit its credentials."""
    import ray

    scratch = tmp_path_factory.mktemp("scratch")
    env = {"GANAUG_SCRATCH": str(scratch), "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    old = {k: os.environ.get(k) for k in env}
    with s3_server() as endpoint:
        os.environ.update(env)
        if ray.is_initialized():
            ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield endpoint, scratch
        finally:
            ray.shutdown()
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _run_in_thread(tuner) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(grid=tuner.fit()), daemon=True)
    t.start()
    return t, out


def test_lease_service_killed_mid_gan_trains_each_gan_once(s3_ray, fault_manifest, tmp_path):
    import ray
    from ray import tune

    from sweeps.artifacts import publish_for_cluster
    from sweeps.leases import start_leases, stop_leases
    from sweeps.results import ResultsCallback, ResultsTable
    from sweeps.storage import Store
    from sweeps.trial import trainable

    endpoint, _ = s3_ray
    driver = tmp_path / "driver"
    shutil.copytree(fault_manifest.parent, driver / "data")
    settings = tiny_settings(driver / "data" / "manifest.parquet", driver, gan_epochs=40, clf_epochs=1,
                             lease_ttl_s=3.0, lease_heartbeat_s=0.25)
    store = Store("s3://sweeps/lease_kill", endpoint, scratch=str(driver))
    settings["data"] = publish_for_cluster(settings["data"], store, 32, 3, run_id="r1")
    table = ResultsTable(tmp_path / "results.parquet", "lease_kill", phase="confirm", store=store)
    actor = start_leases(store.root, 3.0)
    configs = [GAN, {**GAN, "synthetic_ratio": 0.5}]  # one GAN key, two trials wanting it at the same time
    fn = tune.with_resources(tune.with_parameters(trainable, **settings), {"cpu": 1})
    tuner = tune.Tuner(fn, param_space={"trial": tune.grid_search(configs)},
                       tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=2),
                       run_config=tune.RunConfig(name="lease_kill", storage_path=str(tmp_path / "tune"), verbose=0,
                                                 callbacks=[ResultsCallback(table)]))
    thread, out = _run_in_thread(tuner)
    killed, deadline = False, time.time() + 240
    try:
        while thread.is_alive() and time.time() < deadline:
            if not killed and [k for k in list_keys(endpoint, "sweeps/lease_kill/gans") if k.endswith(".pt")]:
                ray.kill(actor, no_restart=False)  # mid-GAN: its first checkpoint is in the store
                killed = True
            time.sleep(0.05)
        thread.join(timeout=max(1.0, deadline - time.time()))
    finally:
        stop_leases(store.root)
    keys = list_keys(endpoint, "sweeps/lease_kill/gans")
    assert killed and not thread.is_alive() and not out["grid"].errors
    df = pd.read_parquet(tmp_path / "results.parquet")
    clf, gan = df[df["stage"] == "classifier"], df[df["stage"] == "gan"]
    assert len(clf) == 2 and (clf["status"] == "ok").all(), clf[["status", "error"]]
    assert len(gan) == 1 and clf["gan_trained_here"].astype(bool).sum() == 1
    gan_key = gan.iloc[0]["gan_key"]
    done = json.loads(Store(store.root, endpoint, scratch=str(tmp_path / "r")).read_text(f"gans/{gan_key}/done.json"))
    with_checkpoints = {k.split("/")[4] for k in keys if "/checkpoints/" in k}
    assert with_checkpoints == {done["run"].split("/")[-1]}, keys  # one set of checkpoints: the winner's
    assert set(clf["gan_run_dir"]) == {store.uri(done["run"])}


def _ok_trial(config):
    from ray import tune

    config = config["trial"]
    with open(config["log"], "a") as f:
        f.write(f"{config['seed']}\n")
    tune.report({"phase": "final", "status": "ok", "error": "", "val_f1": 0.5, "test_f1": 0.5})


def test_a_failed_results_publish_fails_no_trial_and_loses_no_row(s3_ray, tmp_path, monkeypatch):
    import ray
    from ray import tune

    from analysis.load import read_table
    from faults_helpers import BASELINE
    from sweeps.results import ResultsCallback, ResultsTable
    from sweeps.storage import Store, StoreError

    endpoint, _ = s3_ray
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))  # workers cannot import tests/ by name
    store = Store("s3://sweeps/flaky_results", endpoint, scratch=str(tmp_path / "driver"))
    real, failed = Store.publish, []

    def flaky(self, key, **kw):  # the first results publish fails after all its retries
        if key.startswith("results") and not failed:
            failed.append(key)
            raise StoreError(f"upload {key}: failed 5 times (injected: connection reset by peer)")
        return real(self, key, **kw)

    monkeypatch.setattr(Store, "publish", flaky)
    table = ResultsTable(store.local("results.parquet"), "flaky", phase="confirm", store=store)
    log = tmp_path / "runs.log"
    configs = [{**BASELINE, "seed": s, "log": str(log)} for s in range(4)]
    tuner = tune.Tuner(tune.with_resources(_ok_trial, {"cpu": 1}), param_space={"trial": tune.grid_search(configs)},
                       tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=2),
                       run_config=tune.RunConfig(name="flaky", storage_path=str(tmp_path / "tune"), verbose=0,
                                                 callbacks=[ResultsCallback(table)],
                                                 failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()
    assert failed and not grid.errors
    assert sorted(log.read_text().split()) == ["0", "1", "2", "3"]  # every trial ran once
    reader = Store(store.root, endpoint, scratch=str(tmp_path / "reader"))
    reader.fetch("results.parquet")
    reader.fetch("results.parts")
    df = read_table(reader.local("results.parquet"))
    assert sorted(df["seed"]) == [0, 1, 2, 3] and (df["status"] == "ok").all() and df["trial_id"].is_unique
    assert not list((tmp_path / "driver").glob("results.parts/*.parquet"))  # flushed at the end of the run
    assert Path(store.local("results.parquet")).is_file()
