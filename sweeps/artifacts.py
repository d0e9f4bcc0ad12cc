"""How a sweep's data and artifacts reach trials on any node (see sweeps.storage for where they live).

Local storage (the default): trials read the driver's manifest and write under the sweep's folder, as one
machine (or an NFS mount) shares it; every function here is then a no-op or a plain path.

Remote storage (s3://, gs://): nothing is shared but the store.
- Data: the driver decodes every real image of the split once, at the sweep's image size and channels, into
  one uint8 array (`data/bundle/images.npz`, uncompressed) with a manifest whose rows point into it
  (`data/bundle/manifest.parquet`), and publishes both. Decoding again at the same size is the identity, so
  trials see the same pixels the driver's manifest gives. Each node fetches the bundle once into its scratch.
- Quality reference: built once by the driver (domain network + real features), published under
  quality_cache/, fetched by each node.
- GANs: trained in scratch under a cluster-wide lease (sweeps.leases); checkpoints are published as they are
  written, so a trial retried on another node resumes; the run (synthetic set included) is published before
  its done.json, which is written last: a GAN key with done.json in the store is complete.
- Classifier runs: checkpoints published every epoch (a retry elsewhere resumes), the whole run at the end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
from pathlib import Path

from sweeps.storage import Store

BUNDLE = "data/bundle"


def store_of(data) -> Store:
    """The store a trial's TrialData names; without one, the work dir as a local store (paths unchanged)."""
    return Store(data.storage, data.s3_endpoint) if data.storage else Store(data.work_dir)


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
    data/bundle/ as manifest.parquet, fold_1.parquet, ... -> bytes of the array."""
    import numpy as np

    from data_prep import read_manifest
    from data_prep.arrays import decode_rows
    from data_prep.errors import DataError
    from data_prep.manifest import Manifest, write_manifest

    out = store.local(BUNDLE)
    out.mkdir(parents=True, exist_ok=True)
    main = read_manifest(manifests[0])
    images = decode_rows(main.df, image_size, channels)
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
    store.publish(BUNDLE)
    return int(images.nbytes)


def bundle_name(i: int) -> str:
    return "manifest.parquet" if i == 0 else f"fold_{i - 1}.parquet"


def publish_for_cluster(data, store: Store, image_size: int, channels: int):
    """Driver, remote storage: publish the data bundle and the quality reference; -> the TrialData trials get
    (manifests as keys in the store, localized on each node)."""
    import time

    t = time.time()
    nbytes = publish_data(store, [Path(data.manifest), *(Path(f.manifest) for f in data.folds)], image_size, channels)
    store.publish("quality_cache")
    print(f"data published to {store.uri(BUNDLE)}: {nbytes / 1e6:.1f} MB of uint8 images "
          f"({image_size} px, {channels} ch) in {time.time() - t:.0f} s; each node fetches it once", flush=True)
    keyed = {"storage": store.root, "s3_endpoint": store.endpoint, "work_dir": ""}
    folds = tuple(dataclasses.replace(f, manifest=f"{BUNDLE}/{bundle_name(i + 1)}", **keyed)
                  for i, f in enumerate(data.folds))
    return dataclasses.replace(data, manifest=f"{BUNDLE}/manifest.parquet", folds=folds, **keyed)


def localize(data):
    """A trial's TrialData with node-local paths: remote storage fetches the data bundle and the quality
    reference into this node's scratch once (under a node lock); local storage returns `data` unchanged."""
    if not data.storage or not Store(data.storage).remote:
        return data
    store = store_of(data)
    with node_lock(store.local("data/.fetch.lock")):
        store.fetch(BUNDLE)
        store.fetch("quality_cache")
    work = str(store.local())
    folds = tuple(dataclasses.replace(f, manifest=str(store.local(f.manifest)), work_dir=work) for f in data.folds)
    return dataclasses.replace(data, manifest=str(store.local(data.manifest)), folds=folds, work_dir=work)


def artifact_uri(data, local_path: str | Path) -> str:
    """Where a scratch artifact lives for readers on other machines: its store URI (remote), else the path."""
    store = store_of(data)
    if not store.remote:
        return str(local_path)
    return store.uri(Path(local_path).resolve().relative_to(store.local()).as_posix())


class CheckpointSync:
    """Publishes a run folder's checkpoints when they change (called after every reported epoch)."""

    def __init__(self, store: Store, key: str, sub: str = "checkpoints"):
        self.store, self.key, self.sub = store, key, sub
        self.seen: dict[str, float] = {}

    def __call__(self) -> None:
        if not self.store.remote:
            return
        folder = self.store.local(f"{self.key}/{self.sub}")
        now = {p.name: p.stat().st_mtime for p in folder.glob("*.pt")} if folder.is_dir() else {}
        if now != self.seen:
            for name in now:
                if self.seen.get(name) != now[name]:
                    self.store.publish(f"{self.key}/{self.sub}/{name}")
            for gone in set(self.seen) - set(now):  # the run keeps its last few: so does the store
                self.store.delete(f"{self.key}/{self.sub}/{gone}")
            self.seen = now
