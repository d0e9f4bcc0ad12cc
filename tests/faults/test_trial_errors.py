"""Fault 4: divergence and errors inside trials. A GAN that goes NaN, an exception, an out-of-memory error:
each trial ends "failed" with its reason in results.parquet and in the report, and the sweep carries on
(the healthy trial finishes, Tune's fit returns, nothing is lost).

The trials are the real `sweeps.trial.trainable` under a real Tune run with the sweep's ResultsCallback and
FailureConfig (the same wiring as sweeps/augment_ratio.py run_phase). The NaN is real (a learning rate of
1e30 makes the losses non-finite); the exception and the OOM come from the test-only `test_fault` config key.
"""
from __future__ import annotations

import os

import pandas as pd
import pytest

from faults_helpers import BASELINE, GAN, inject_fault, tiny_settings

pytestmark = pytest.mark.slow


def test_failed_trials_are_recorded_with_reason_and_the_sweep_continues(fault_manifest, tmp_path, monkeypatch):
    import ray
    from ray import tune

    from analysis.report import build_report
    from sweeps.results import ResultsCallback, ResultsTable
    from sweeps.trial import trainable

    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "2")
    configs = [
        {**BASELINE, "seed": 0},                                           # healthy
        {**BASELINE, "seed": 1, "test_fault": "exception"},                # a bug / bad input inside a trial
        {**BASELINE, "seed": 2, "test_fault": "oom"},                      # torch.cuda.OutOfMemoryError
        {**GAN, "gan_lr_g": 1e30, "gan_lr_d": 1e30},                       # the GAN diverges to NaN
    ]
    settings = tiny_settings(fault_manifest, tmp_path / "work")
    import faults_helpers
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(faults_helpers)  # trial workers cannot import tests/ by name
    table = ResultsTable(tmp_path / "work" / "results.parquet", "faults", phase="confirm")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fn = tune.with_resources(tune.with_parameters(trainable, before=inject_fault, **settings), {"cpu": 1})
        tuner = tune.Tuner(fn, param_space={"trial": tune.grid_search(configs)},
                           tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=2),
                           run_config=tune.RunConfig(name="faults", storage_path=str(tmp_path / "storage"),
                                                     callbacks=[ResultsCallback(table)], verbose=0,
                                                     failure_config=tune.FailureConfig(max_failures=1)))
        grid = tuner.fit()  # must return: failed trials do not stop the sweep
    finally:
        ray.shutdown()
    assert len(grid) == 4 and len(grid.errors) == 2

    df = pd.read_parquet(tmp_path / "work" / "results.parquet")
    clf = df[df["stage"] == "classifier"].set_index("seed", drop=False)
    assert clf["trial_id"].is_unique and len(clf) == 4  # every trial recorded once, none lost
    ok = clf[clf["arm"] == "baseline"].loc[0]
    assert ok["status"] == "ok" and 0 <= ok["test_f1"] <= 1
    exc = clf.loc[1]
    assert exc["status"] == "failed" and "RuntimeError" in exc["error"] and "injected test fault" in exc["error"]
    oom = clf.loc[2]
    assert oom["status"] == "failed" and "OutOfMemoryError" in oom["error"], oom["error"]
    nan = clf[clf["arm"] == "gan"].iloc[0]
    assert nan["status"] == "failed" and "non-finite loss (NaN/inf)" in nan["error"], nan["error"]
    gan_rows = df[df["stage"] == "gan"]
    assert len(gan_rows) == 1 and gan_rows.iloc[0]["status"] == "failed"
    assert "GAN diverged" in gan_rows.iloc[0]["error"]

    md = build_report(tmp_path / "work" / "results.parquet", tmp_path / "report").read_text()
    assert "injected test fault" in md and "OutOfMemoryError" in md and "non-finite loss" in md
    failed_csv = pd.read_csv(tmp_path / "report" / "failed_trials.csv")
    assert len(failed_csv) >= 3
    assert os.path.exists(tmp_path / "report" / "report.html")


def test_injection_point_runs_first_and_product_configs_carry_no_fault(tmp_path):
    """run_trial's `before` callable sees the trial's config before anything trains or is written; without it (as
    the sweep runs) a config with a stray test_fault key trains normally: product code knows no such key."""
    from sweeps.trial import run_trial

    settings = tiny_settings(tmp_path / "nowhere" / "manifest.parquet", tmp_path / "work")
    with pytest.raises(RuntimeError, match="injected test fault"):
        run_trial({**BASELINE, "test_fault": "exception"}, settings["sweep"], settings["data"], "t0",
                  report=lambda row: None, before=inject_fault)
    assert not (tmp_path / "work").exists()
    with pytest.raises(ValueError, match="unknown test_fault 'segfault'"):
        inject_fault({**BASELINE, "test_fault": "segfault"})
