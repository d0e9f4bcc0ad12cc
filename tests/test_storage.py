"""The pieces of cluster storage without a cluster: the store (local and S3), the data bundle, GAN leases."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from s3_server import list_keys, s3_server


def test_store_round_trips_files_and_folders_through_s3(tmp_path):
    from sweeps.storage import Store

    with s3_server() as endpoint:
        a = Store("s3://sweeps/x/run", endpoint, scratch=str(tmp_path / "a"))
        b = Store("s3://sweeps/x/run", endpoint, scratch=str(tmp_path / "b"))  # another node
        (a.local("gans/k/checkpoints")).mkdir(parents=True)
        (a.local("gans/k/checkpoints/e1.pt")).write_bytes(b"\x00" * 5_000_000)  # > one 4 MB chunk
        (a.local("gans/k/history.jsonl")).write_text("{}\n")
        assert a.publish("gans/k") == "s3://sweeps/x/run/gans/k"
        assert not b.exists("gans/k/done.json") and b.read_text("gans/k/done.json") is None
        a.write_text("gans/k/done.json", '{"status": "ok"}')
        assert b.read_text("gans/k/done.json") == '{"status": "ok"}'
        got = b.fetch("gans/k", skip_suffixes=(".pt",))
        assert got == tmp_path / "b" / "gans" / "k" and (got / "history.jsonl").read_text() == "{}\n"
        assert not (got / "checkpoints" / "e1.pt").exists()  # skipped on request
        b.fetch("gans/k/checkpoints")
        assert (got / "checkpoints" / "e1.pt").read_bytes() == b"\x00" * 5_000_000
        b.delete("gans/k/checkpoints/e1.pt")
        assert "sweeps/x/run/gans/k/checkpoints/e1.pt" not in list_keys(endpoint, "sweeps/x")
        assert b.fetch("missing/key") == tmp_path / "b" / "missing" / "key"  # nothing there: nothing copied


def test_local_store_is_the_folder_itself(tmp_path):
    from sweeps.storage import Store

    s = Store(str(tmp_path / "sweep"))
    assert not s.remote and s.local("gans/k") == (tmp_path / "sweep" / "gans" / "k").resolve()
    s.write_text("a/done.json", "x")
    assert s.read_text("a/done.json") == "x" and s.exists("a/done.json")
    assert s.publish("a") == str(s.local("a")) and s.fetch("a") == s.local("a")  # no copies


def test_data_bundle_gives_trials_the_drivers_pixels(tmp_path, monkeypatch):
    """The bundle decodes to exactly what the original manifest decodes to at the sweep's size, folds included."""
    from data_prep import read_manifest
    from data_prep.arrays import decode_rows
    from demo_data import make_demo
    from sweeps.artifacts import localize, publish_for_cluster
    from sweeps.data import trial_data, write_fold_manifests
    from sweeps.storage import Store

    monkeypatch.setenv("GANAUG_SCRATCH", str(tmp_path / "node"))
    manifest = make_demo(tmp_path / "driver" / "data", 40, 12)
    folds = write_fold_manifests(manifest, tmp_path / "driver", 2, 0)
    data = trial_data(manifest, tmp_path / "driver", folds)
    with s3_server() as endpoint:
        store = Store("s3://sweeps/b/run", endpoint, scratch=str(tmp_path / "driver"))
        shared = publish_for_cluster(data, store, 32, 3)
        assert shared.manifest == "data/bundle/manifest.parquet" and shared.storage == "s3://sweeps/b/run"
        node = localize(dataclasses.replace(shared))  # a trial on a node with its own scratch
        assert node.manifest.startswith(str(tmp_path / "node" / "ganaug_scratch"))
        for orig, local in [(manifest, node.manifest), *zip(folds, [f.manifest for f in node.folds])]:
            a, b = read_manifest(orig).df, read_manifest(local).df
            assert list(a["image_id"]) == list(b["image_id"]) and list(a["split"]) == list(b["split"])
            np.testing.assert_array_equal(decode_rows(a, 32, 3), decode_rows(b, 32, 3))


def test_gan_leases_one_holder_at_a_time_and_a_silent_holder_loses_it():
    from sweeps.leases import _Leases

    leases = _Leases()
    assert leases.acquire("k", "trial-a", ttl=0.2)
    assert not leases.acquire("k", "trial-b", ttl=0.2)  # held
    assert leases.acquire("k", "trial-a", ttl=0.2)  # the same trial's retry takes it back at once
    assert leases.renew("k", "trial-a") and not leases.renew("k", "trial-b")
    time.sleep(0.3)  # trial-a's node died: no renewal within the ttl
    assert leases.acquire("k", "trial-b", ttl=0.2)
    assert not leases.renew("k", "trial-a")
    leases.release("k", "trial-a")  # a stale holder cannot release another's lease
    assert not leases.acquire("k", "trial-c", ttl=10)
    leases.release("k", "trial-b")
    assert leases.acquire("k", "trial-c", ttl=10)
    assert leases.counts() == {"k": 3}


@pytest.mark.parametrize("uri,remote", [("s3://b/p", True), ("gs://b/p", True), ("/tmp/x", False),
                                        ("file:///tmp/x", False), ("results", False)])
def test_what_counts_as_remote(uri, remote):
    from sweeps.storage import is_remote

    assert is_remote(uri) is remote
