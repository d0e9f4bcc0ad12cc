"""The pieces of cluster storage without a cluster: the store (local and S3), the data bundle, GAN leases."""
from __future__ import annotations

import dataclasses

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


class Clock:
    """A fake monotonic clock for the lease rules: time moves only when the test says so."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_gan_leases_one_holder_at_a_time_and_a_silent_holder_loses_it(monkeypatch):
    from sweeps import leases

    clock = Clock()
    monkeypatch.setattr(leases.time, "monotonic", clock)  # the rules run on the monotonic clock, nothing else
    svc = leases._Leases(ttl_s=10, restarted=False)
    a = svc.acquire("k", "trial-a")
    assert a and a["ttl_s"] == 10 and not svc.acquire("k", "trial-b")  # held
    a2 = svc.acquire("k", "trial-a")  # the same trial's retry takes it back at once, as a new attempt ...
    assert a2 and a2["attempt"] != a["attempt"]
    assert not svc.renew("k", "trial-a", a["attempt"])  # ... which fences the old attempt off
    assert svc.renew("k", "trial-a", a2["attempt"]) and not svc.renew("k", "trial-b", a2["attempt"])
    clock.t += 11  # trial-a's node died: no renewal within the ttl
    b = svc.acquire("k", "trial-b")
    assert b and not svc.renew("k", "trial-a", a2["attempt"])
    svc.release("k", "trial-a", a2["attempt"])  # a stale holder cannot release another's lease
    assert not svc.acquire("k", "trial-c")
    svc.release("k", "trial-b", b["attempt"])
    assert svc.acquire("k", "trial-c")
    assert svc.counts() == {"k": 3}


@pytest.mark.parametrize("uri,remote", [("s3://b/p", True), ("gs://b/p", True), ("/tmp/x", False),
                                        ("file:///tmp/x", False), ("results", False)])
def test_what_counts_as_remote(uri, remote):
    from sweeps.storage import is_remote

    assert is_remote(uri) is remote


# ---------------------------------------------------------------- issue 23: isolation, freshness, disk, weights

def _inverted_copy(src_dir, dst_dir):
    """The same demo set with every pixel inverted: same shapes, same .npz size, other pixels."""
    import shutil

    shutil.copytree(src_dir, dst_dir)
    with np.load(dst_dir / "demo.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = 255 - arrays["images"]
    np.savez(dst_dir / "demo.npz", **arrays)
    return dst_dir / "manifest.parquet"


def test_two_same_name_sweeps_under_different_prefixes_read_only_their_own_pixels(tmp_path, monkeypatch):
    """s3://b/skin/augment_ratio and s3://b/xray/augment_ratio on one node: same sweep name, data bundles of the
    same shape and size (uncompressed), other pixels. Each sweep's trials read exactly its own driver's pixels."""
    from data_prep import read_manifest
    from data_prep.arrays import decode_rows
    from demo_data import make_demo
    from sweeps.artifacts import localize, publish_for_cluster
    from sweeps.data import trial_data
    from sweeps.storage import Store

    monkeypatch.setenv("GANAUG_SCRATCH", str(tmp_path / "node"))
    skin = make_demo(tmp_path / "skin_driver" / "data", 30, 10)
    xray = _inverted_copy(skin.parent, tmp_path / "xray_driver" / "data")
    with s3_server() as endpoint:
        seen = {}
        for name, manifest in (("skin", skin), ("xray", xray)):
            store = Store(f"s3://sweeps/{name}/augment_ratio", endpoint, scratch=str(manifest.parent.parent))
            shared = publish_for_cluster(trial_data(manifest, manifest.parent.parent), store, 32, 3, run_id="r1")
            node = localize(shared)  # a trial of this sweep on the shared node
            seen[name] = decode_rows(read_manifest(node.manifest).df, 32, 3)
            np.testing.assert_array_equal(seen[name], decode_rows(read_manifest(manifest).df, 32, 3))
        sizes = {p.stat().st_size for p in (tmp_path / "node").rglob("images.npz")}
    assert len(sizes) == 1  # the two bundles are the same size: size could never tell them apart
    assert not np.array_equal(seen["skin"], seen["xray"])


def test_a_changed_file_of_the_same_size_is_fetched_again(tmp_path):
    """Freshness is the store's ETag, never the size: a checkpoint replaced by one of equal size reaches the node
    that fetched the old one; an unchanged one is not downloaded again."""
    from sweeps.storage import Store

    with s3_server() as endpoint:
        a = Store("s3://sweeps/f/run", endpoint, scratch=str(tmp_path / "a"))
        b = Store("s3://sweeps/f/run", endpoint, scratch=str(tmp_path / "b"))
        a.local("classifiers/t1/checkpoints").mkdir(parents=True)
        ckpt = a.local("classifiers/t1/checkpoints/last.pt")
        ckpt.write_bytes(b"epoch-1" * 100)
        a.publish("classifiers/t1")
        assert b.fetch("classifiers/t1") == tmp_path / "b" / "classifiers" / "t1"
        got = tmp_path / "b" / "classifiers" / "t1" / "checkpoints" / "last.pt"
        assert got.read_bytes() == b"epoch-1" * 100
        stamp = got.stat().st_mtime_ns
        b.fetch("classifiers/t1")
        assert got.stat().st_mtime_ns == stamp  # fresh: not downloaded again
        ckpt.write_bytes(b"epoch-2" * 100)  # same size, other bytes (the next epoch, written elsewhere)
        a.publish("classifiers/t1/checkpoints/last.pt")
        b.fetch("classifiers/t1")
        assert got.read_bytes() == b"epoch-2" * 100
        a.fetch("classifiers/t1")  # the publisher's own copy is fresh: published files are recorded
        assert ckpt.read_bytes() == b"epoch-2" * 100


def test_scratch_is_keyed_by_the_full_store_root_and_the_run_id(tmp_path, monkeypatch):
    from sweeps.storage import Store

    monkeypatch.setenv("GANAUG_SCRATCH", str(tmp_path))
    roots = {Store("s3://b/skin/augment_ratio", run_id="r1").local(), Store("s3://b/xray/augment_ratio",
                                                                           run_id="r1").local(),
             Store("s3://b/skin/augment_ratio", run_id="r2").local()}
    assert len(roots) == 3 and all(r.parent == tmp_path.resolve() / "ganaug_scratch" / "local" for r in roots)
    assert all(r.name.startswith("augment_ratio-") for r in roots)


@pytest.mark.parametrize("key", ["../other/results.parquet", "gans/../../x", "/etc/passwd", "a?x=1",
                                 "s3://elsewhere/k"])
def test_store_keys_that_leave_the_sweep_are_refused(key):
    from sweeps.storage import Store

    with pytest.raises(ValueError, match="refused|relative"):
        Store("s3://b/p/s").local(key)
    with pytest.raises(ValueError, match="refused|relative"):
        Store("s3://b/p/s").uri(key)


def test_uris_with_a_query_string_never_build_a_client():
    from sweeps.storage import Store, filesystem

    for uri in ("s3://x?endpoint_override=evil.example:80&scheme=http", "s3://b/p/../../q", "gs://b/p#frag"):
        with pytest.raises(ValueError, match="refused"):
            filesystem(uri)
        with pytest.raises(ValueError, match="refused"):
            Store(uri)


def test_a_fetch_that_would_fill_the_disk_is_refused_with_the_sizes(tmp_path, monkeypatch):
    from sweeps import storage
    from sweeps.storage import DiskSpaceError, Store

    with s3_server() as endpoint:
        a = Store("s3://sweeps/d/run", endpoint, scratch=str(tmp_path / "a"))
        a.local("data/bundle").mkdir(parents=True)
        a.local("data/bundle/images.npz").write_bytes(b"\0" * 3_000_000)
        a.publish("data/bundle")
        b = Store("s3://sweeps/d/run", endpoint, scratch=str(tmp_path / "b"))
        free = __import__("shutil").disk_usage(tmp_path).free
        monkeypatch.setattr(storage, "MIN_FREE_BYTES", free - 1_000_000)  # 1 MB left to use: 3 MB do not fit
        with pytest.raises(DiskSpaceError, match=r"needs 3\.0 MB .* GANAUG_SCRATCH"):
            b.fetch("data/bundle")
        assert not (tmp_path / "b" / "data" / "bundle" / "images.npz").exists()


def test_gan_folders_and_other_sweeps_scratch_are_evicted_by_age(tmp_path, monkeypatch):
    import os

    from sweeps.storage import Store, evict_stale, touch_used

    monkeypatch.setenv("GANAUG_SCRATCH", str(tmp_path))
    store = Store("s3://b/p/s", run_id="r2")
    own = store.local()
    old_run, new_run = own / "gans" / "k1" / "a-old", own / "gans" / "k2" / "a-new"
    other_sweep = own.parent / "s-0123456789ab-r1"
    for d in (old_run, new_run, other_sweep):
        touch_used(d)
    day_ago = __import__("time").time() - 25 * 3600
    for d in (old_run, other_sweep):
        os.utime(d / ".used", (day_ago, day_ago))
    gone = evict_stale(store, 24 * 3600)
    assert set(gone) == {old_run, other_sweep}
    assert new_run.is_dir() and not old_run.exists() and not other_sweep.exists()
    assert evict_stale(Store("s3://b/p/s", scratch=str(own)), 1) == []  # a driver's work dir is never evicted


def test_a_published_classifier_run_leaves_no_scratch(tmp_path):
    from sweeps.artifacts import publish_run
    from sweeps.storage import Store

    with s3_server() as endpoint:
        s = Store("s3://sweeps/c/run", endpoint, scratch=str(tmp_path / "node"))
        s.local("classifiers/t1/checkpoints").mkdir(parents=True)
        s.local("classifiers/t1/metrics.json").write_text("{}")
        s.local("classifiers/t1/checkpoints/best.pt").write_bytes(b"w")
        assert publish_run(s, "classifiers/t1")
        assert not s.local("classifiers/t1").exists()
        assert sorted(o.key for o in s.list("classifiers/t1")) == ["classifiers/t1/checkpoints/best.pt",
                                                                   "classifiers/t1/metrics.json"]


def test_weight_files_travel_through_the_store_to_every_node(tmp_path, monkeypatch):
    """--clf-weights/--vgg-weights/--inception-weights: checked on the driver, published, fetched by each node;
    the driver's file may be gone by then."""
    from sweeps.artifacts import localize_weights, publish_weights
    from sweeps.config import SweepConfig
    from sweeps.storage import Store

    weights = tmp_path / "driver" / "resnet18.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"state dict bytes")
    cfg = SweepConfig(clf_weights=str(weights), vgg_weights=str(weights)).with_absolute_paths()
    with s3_server() as endpoint:
        driver = Store("s3://sweeps/w/run", endpoint, scratch=str(tmp_path / "driver_scratch"))
        shared = publish_weights(cfg, driver)
        assert shared.clf_weights.startswith("s3://sweeps/w/run/weights/") and shared.clf_weights.endswith("/resnet18.pt")
        assert shared.vgg_weights == shared.clf_weights and shared.inception_weights is None
        weights.unlink()
        node = Store("s3://sweeps/w/run", endpoint, run_id="r1")
        monkeypatch.setenv("GANAUG_SCRATCH", str(tmp_path / "node"))
        local = localize_weights(shared, node)
    assert local.clf_weights.startswith(str(tmp_path / "node"))
    assert open(local.clf_weights, "rb").read() == b"state dict bytes"


def test_data_from_s3_uses_the_sweeps_endpoint(tmp_path, monkeypatch):
    """--data s3://... with --s3-endpoint (no AWS_ENDPOINT_URL exported): the copy goes to that endpoint."""
    import pyarrow.fs as pafs

    from demo_data import write_three_class_folder
    from sweeps.config import SweepConfig
    from sweeps.data import prepare_data

    src = write_three_class_folder(tmp_path / "pets")
    with s3_server() as endpoint:
        fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")
        pafs.copy_files(str(src), "sweeps/datasets/pets", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        cfg = SweepConfig(data="s3://sweeps/datasets/pets", s3_endpoint=endpoint, image_size=16)
        manifest = prepare_data(cfg, tmp_path / "work")
    from data_prep import read_manifest

    assert len(read_manifest(manifest).df) == 24 + 12 + 9
