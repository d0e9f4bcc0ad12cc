"""Fault 5 (disk) and the bookkeeping half of fault 2 (driver death).

Disk: a GAN run keeps at most keep_checkpoints checkpoint files, a classifier run best.pt + last.pt, whatever
the number of epochs, so a sweep's disk use grows with its trial count, not its epochs; the number the
sweep driver prints ("disk used by this sweep: X MB") is the folder's size.

Driver death itself (SIGKILL of the driver's process group mid-sweep, then --resume) is proven end to end
by tests/test_sweep.py::test_smoke_sweep_end_to_end_then_resume_after_killed_driver; here, cheaply, the
pieces it relies on: the parquet and its parts are replaced atomically (a kill mid-write leaves the previous
file), a resumed table never duplicates a trial, and `reconcile` adds finished trials the callback never wrote.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pandas as pd

from faults_helpers import BASELINE


def test_gan_keeps_at_most_keep_checkpoints(fault_manifest, tmp_path):
    from trainables.gan.train import run_gan_local

    cfg = {"image_size": 32, "ngf": 8, "ndf": 8, "batch_size": 8, "num_epochs": 5, "checkpoint_every": 1,
           "sample_every": 5, "keep_checkpoints": 2, "device": "cpu"}
    out = run_gan_local(fault_manifest, tmp_path / "gan", cfg, report=lambda m: None)
    kept = sorted(p.name for p in (tmp_path / "gan" / "checkpoints").iterdir())
    assert kept == ["checkpoint_000004.pt", "checkpoint_000005.pt"] and out["status"] == "finished"


def test_classifier_keeps_best_and_last_only(fault_manifest, tmp_path):
    from trainables.classifier.run import run_classifier_local

    run_classifier_local(fault_manifest, tmp_path / "clf", {"model": "small_cnn", "num_epochs": 4, "image_size": 32,
                                                            "device": "cpu"})
    assert sorted(p.name for p in (tmp_path / "clf" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_disk_use_matches_the_folder_size(tmp_path):
    from sweeps.augment_ratio import disk_use

    sizes = {"a.bin": 1_000_000, "sub/b.bin": 2_500_000, "sub/deeper/c.bin": 123}
    for rel, n in sizes.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\0" * n)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path) for f in fs)
    assert disk_use(tmp_path) == total == sum(sizes.values())
    assert f"{disk_use(tmp_path) / 1e6:.1f} MB" == "3.5 MB"  # what the driver prints


def _row(trial_id: str, **kw) -> dict:
    return {**BASELINE, "trial_id": trial_id, "config_id": "c", "status": "ok", "error": "", "val_f1": 0.5,
            "test_f1": 0.5, "phase": "final", **kw}


def test_results_table_survives_a_kill_mid_write_and_never_duplicates(tmp_path):
    from analysis.load import read_table
    from sweeps.results import ResultsTable

    path = tmp_path / "results.parquet"
    t = ResultsTable(path, "s", phase="search")
    for i in range(1, 7):  # t6: a part beside results.parquet (rewritten once parts hold a quarter of its rows)
        t.add(_row(f"t{i}"), "classifier")
    assert len(pd.read_parquet(path)) == 5 and len(list((tmp_path / "results.parts").glob("*.json"))) == 1
    (tmp_path / ".results.999.tmp.parquet").write_bytes(b"half a parquet file")  # a driver killed mid-write
    (tmp_path / "results.parts" / ".00000000000000000009.999.tmp").write_bytes(b"[{half a part")
    resumed = ResultsTable(path, "s", phase="confirm")
    ids = [f"t{i}" for i in range(1, 7)]
    assert sorted(resumed.frame()["trial_id"]) == ids
    resumed.add(_row("t2", val_f1=0.7), "classifier")  # a trial reported again after --resume
    resumed.add(_row("t7"), "classifier")
    df = read_table(path)  # the table: results.parquet and the parts written since its last rewrite
    assert sorted(df["trial_id"]) == ids + ["t7"] and df["trial_id"].is_unique
    assert df.set_index("trial_id").loc["t1", "sweep_phase"] == "search"
    assert df.set_index("trial_id").loc["t2", "val_f1"] == 0.7
    resumed.write()
    assert sorted(pd.read_parquet(path)["trial_id"]) == ids + ["t7"]


def test_reconcile_adds_finished_trials_the_callback_missed(tmp_path):
    from sweeps.results import ResultsTable, reconcile

    t = ResultsTable(tmp_path / "results.parquet", "s")
    t.add(_row("t1"), "classifier")
    grid = [SimpleNamespace(metrics={**_row("t1"), "config": {"trial": BASELINE}}, error=None),
            SimpleNamespace(metrics={**_row("t2"), "config": {"trial": BASELINE}}, error=None),  # missed write
            SimpleNamespace(metrics={**_row("t3", phase="classifier"), "config": {}}, error=None),
            SimpleNamespace(metrics={**_row("t4", phase="classifier"), "config": {}},
                            error=RuntimeError("boom\nMemoryError: out of memory"))]
    assert reconcile(t, grid) == 3
    assert reconcile(t, grid) == 0  # idempotent: a second --resume adds nothing
    df = pd.read_parquet(tmp_path / "results.parquet").set_index("trial_id")
    assert list(df.index).count("t1") == 1
    assert df.loc["t2", "status"] == "ok" and df.loc["t3", "status"] == "stopped"
    assert df.loc["t4", "status"] == "failed" and "MemoryError" in df.loc["t4", "error"]
