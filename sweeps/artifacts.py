"""How a sweep's data and artifacts reach trials on any node (see sweeps.storage for where they live).

Local storage (the default): trials read the driver's manifest and write under the sweep's folder, as one
machine (or an NFS mount) shares it; every function here is then a no-op or a plain path.

Remote storage (s3://, gs://): nothing is shared but the store.
- Data: the driver decodes every real image of the split once, at the sweep's image size and channels, into
  one uint8 array (`data/bundle/images.npz`, uncompressed) with a manifest whose rows point into it
  (`data/bundle/manifest.parquet`, published last: a bundle with its manifest is complete), and publishes
  both. Decoding again at the same size is the identity, so trials see the same pixels the driver's manifest
  gives. Each node fetches the bundle once into its scratch. A resumed sweep takes the split from the store
  (`stored_data`), so a new head needs neither the old head's disk nor the original data source.
- Quality reference: built once by the driver (domain network + real features), published under
  quality_cache/, fetched by each node (and by a resumed driver, which then does not rebuild it).
- Weights (--clf-weights, --vgg-weights, --inception-weights): published by the driver under
  weights/<sha256>/<file name> and fetched by each node (`localize_trial`); a weights URI outside the store is
  fetched by each node from there.
- GANs: sweeps.gan_runs (fenced leases, one attempt folder per grant, done.json written last).
- Classifier runs: checkpoints published every epoch (a retry elsewhere resumes), the whole run at the end,
  after which the node's scratch copy is removed. A store error there is logged, never fatal: the trial
  finished, and a finished trial is never failed or re-run because of the store.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import sys
from pathlib import Path

from sweeps.storage import Store, StoreError, digest, ensure_free, evict_stale, filesystem, touch_used

BUNDLE = "data/bundle"
WEIGHT_FIELDS = ("clf_weights", "vgg_weights", "inception_weights")  # SweepConfig fields naming weight files


def store_of(data) -> Store:
    """The store a trial's TrialData names; without one, the work dir as a local store (paths unchanged)."""
    if not data.storage:
        return Store(data.work_dir)
    return Store(data.storage, data.s3_endpoint, run_id=getattr(data, "run_id", ""))


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def node_lock(path: Path):
    """Exclusive lock between processes of one node (scratch is per node)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish_data(store: Store, manifests: list[Path], image_size: int, channels: int) -> int:
    """Driver, remote storage: the real images of manifests[0] as one uint8 array, and every manifest (the split,
    then any fold manifests: the same images split otherwise) rewritten to point into it, published under
    data/bundle/ as manifest.parquet (last), fold_1.parquet, ... -> bytes of the array."""
    import numpy as np

    from data_prep import read_manifest
    from data_prep.arrays import decode_rows
    from data_prep.errors import DataError
    from data_prep.manifest import Manifest, write_manifest

    out = store.local(BUNDLE)
    out.mkdir(parents=True, exist_ok=True)
    main = read_manifest(manifests[0])
    images = decode_rows(main.df, image_size, channels)
    ensure_free(out, int(images.nbytes), f"the data bundle {out / 'images.npz'}")
    np.savez(out / "images.npz", images=images)
    index = dict(zip(main.df["image_id"], range(len(main.df))))
    for i, path in enumerate(manifests):
        m = main if i == 0 else read_manifest(path)
        missing = sorted(set(m.df["image_id"]) - set(index))
        if missing:
            raise DataError(f"{path}: {len(missing)} image(s) not in {manifests[0]} (e.g. {missing[0]}); "
                            "fold manifests must re-split the sweep's own images")
        df = m.df.copy()
        df["source"], df["source_key"] = str(out / "images.npz"), "images"
        df["source_index"] = [index[x] for x in df["image_id"]]
        write_manifest(Manifest(df=df, meta=dict(m.meta)), out / bundle_name(i))
    store.publish(f"{BUNDLE}/images.npz")
    for i in range(1, len(manifests)):
        store.publish(f"{BUNDLE}/{bundle_name(i)}")
    store.publish(f"{BUNDLE}/{bundle_name(0)}")  # last: with the main manifest in the store, the bundle is whole
    return int(images.nbytes)


def bundle_name(i: int) -> str:
    return "manifest.parquet" if i == 0 else f"fold_{i - 1}.parquet"


def stored_data(store: Store) -> tuple[Path, list[Path]] | None:
    """Driver, remote storage, --resume: the split the store holds (bundle and quality reference fetched into
    the driver's scratch, its work dir) -> (manifest, fold manifests); None when the store holds no whole bundle."""
    if not store.remote or not store.exists(f"{BUNDLE}/manifest.parquet"):
        return None
    store.fetch(BUNDLE)
    store.fetch("quality_cache")
    bundle = store.local(BUNDLE)
    folds = sorted(bundle.glob("fold_*.parquet"), key=lambda p: int(p.stem.split("_")[1]))
    return bundle / "manifest.parquet", folds


def publish_for_cluster(data, store: Store, image_size: int, channels: int, stored: bool = False, run_id: str = ""):
    """Driver, remote storage: publish the data bundle and the quality reference (stored=True: both are in the
    store already); -> the TrialData trials get (manifests as keys in the store, localized on each node)."""
    import time

    if not stored:
        t = time.time()
        nbytes = publish_data(store, [Path(data.manifest), *(Path(f.manifest) for f in data.folds)], image_size,
                              channels)
        store.publish("quality_cache")
        print(f"data published to {store.uri(BUNDLE)}: {nbytes / 1e6:.1f} MB of uint8 images "
              f"({image_size} px, {channels} ch) in {time.time() - t:.0f} s; each node fetches it once", flush=True)
    keyed = {"storage": store.root, "s3_endpoint": store.endpoint, "work_dir": "", "run_id": run_id}
    folds = tuple(dataclasses.replace(f, manifest=f"{BUNDLE}/{bundle_name(i + 1)}", **keyed)
                  for i, f in enumerate(data.folds))
    return dataclasses.replace(data, manifest=f"{BUNDLE}/manifest.parquet", folds=folds, **keyed)


def localize(data, max_age_s: float = 0.0):
    """A trial's TrialData with node-local paths: remote storage fetches the data bundle and the quality
    reference into this node's scratch once (under a node lock), after evicting scratch unused for max_age_s
    (> 0); local storage returns `data` unchanged."""
    if not data.storage or not Store(data.storage).remote:
        return data
    store = store_of(data)
    with node_lock(store.local("data/.fetch.lock")):
        for gone in evict_stale(store, max_age_s):
            print(f"scratch: removed {gone} (unused for over {max_age_s / 3600:g} h; it is in its store)", flush=True)
        touch_used(store.local())
        store.fetch(BUNDLE)
        store.fetch("quality_cache")
    work = str(store.local())
    folds = tuple(dataclasses.replace(f, manifest=str(store.local(f.manifest)), work_dir=work) for f in data.folds)
    return dataclasses.replace(data, manifest=str(store.local(data.manifest)), folds=folds, work_dir=work)


def localize_trial(sweep, data):
    """(sweep, data) of a trial with node-local paths: localize(data), and weight files named by URI fetched
    into this node's scratch (the sweep's settings then name the local copies)."""
    data = localize(data, sweep.scratch_max_age_h * 3600)
    return localize_weights(sweep, store_of(data)), data


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def publish_weights(cfg, store: Store):
    """Driver, remote storage: each local weights file of the sweep published as weights/<sha256>/<name>; -> the
    config naming them by store URI (a node fetches them, localize_weights). Local storage: cfg unchanged."""
    if not store.remote:
        return cfg
    changes = {}
    for name in WEIGHT_FIELDS:
        path = getattr(cfg, name, None)
        if not path or "://" in path:
            continue
        key = f"weights/{file_digest(path)}/{Path(path).name}"
        if not store.exists(key):
            store.put_file(Path(path), key)
        changes[name] = store.uri(key)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def localize_weights(sweep, store: Store):
    """The sweep config with every weights URI replaced by this node's copy: keys of the sweep's store fetched
    (fresh by ETag), other URIs downloaded once per sweep run into weights/external/."""
    changes = {}
    for name in WEIGHT_FIELDS:
        uri = getattr(sweep, name, None)
        if not uri or "://" not in uri:
            continue
        root = store.root.rstrip("/") + "/"
        with node_lock(store.local("weights/.fetch.lock")):
            if uri.startswith(root):
                changes[name] = str(store.fetch(uri[len(root):]))
            else:
                changes[name] = str(_fetch_external(uri, store))
    return dataclasses.replace(sweep, **changes) if changes else sweep


def _fetch_external(uri: str, store: Store) -> Path:
    import pyarrow.fs as pafs

    dest = store.local(f"weights/external/{digest(uri, 16)}/{Path(uri).name}")
    if not dest.is_file():
        fs, path = filesystem(uri, store.endpoint)
        ensure_free(dest.parent, int(fs.get_file_info(path).size or 0), f"weights {uri}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        tmp.replace(dest)
    return dest


def artifact_uri(data, local_path: str | Path) -> str:
    """Where a scratch artifact lives for readers on other machines: its store URI (remote), else the path."""
    store = store_of(data)
    if not store.remote:
        return str(local_path)
    return store.uri(Path(local_path).resolve().relative_to(store.local()).as_posix())


def publish_run(store: Store, key: str) -> bool:
    """A finished run's folder to the store, then its scratch copy removed (remote); -> False when the store
    kept failing (logged: the run finished, its metrics are in its row; the report notes the missing files)."""
    try:
        store.publish(key)
    except (StoreError, OSError) as exc:
        warn(f"{store.uri(key)}: the run finished but its files could not be published ({exc})")
        return False
    store.drop_local(key)
    return True


class CheckpointSync:
    """Publishes a run folder's checkpoints when they change (called after every reported epoch). fence: a
    leases.Holding whose check() stops a holder that lost its lease before it publishes. A store error is
    logged and the checkpoint published at the next call: it never fails the trial."""

    def __init__(self, store: Store, key: str, sub: str = "checkpoints", fence=None):
        self.store, self.key, self.sub, self.fence = store, key, sub, fence
        self.seen: dict[str, float] = {}

    def __call__(self) -> None:
        if not self.store.remote:
            return
        folder = self.store.local(f"{self.key}/{self.sub}")
        if self.fence is not None:  # every epoch: a holder that lost its lease stops training, publishing nothing
            self.fence.check(f"training {self.store.uri(self.key)}")
        touch_used(self.store.local(self.key))
        touch_used(self.store.local())  # the sweep's scratch is in use too (evict_stale spares it)
        now = {p.name: p.stat().st_mtime for p in folder.glob("*.pt")} if folder.is_dir() else {}
        if now == self.seen:
            return
        try:
            for name in now:
                if self.seen.get(name) != now[name]:
                    self.store.publish(f"{self.key}/{self.sub}/{name}")
                    self.seen[name] = now[name]
            for gone in set(self.seen) - set(now):  # the run keeps its last few: so does the store
                self.store.delete(f"{self.key}/{self.sub}/{gone}")
                del self.seen[gone]
        except (StoreError, OSError) as exc:
            warn(f"checkpoint of {self.store.uri(self.key)} not published yet ({exc}); retried after the next epoch")
