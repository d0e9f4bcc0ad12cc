"""Where a sweep's artifacts live: under its storage path (<storage_path>/<name>/), a local folder or an object
store (s3://, gs://, anything pyarrow.fs opens), read and written through sweeps.objects (retries, timeouts).

Every artifact has a key relative to the sweep's folder ("data/bundle/manifest.parquet", "gans/<key>/done.json",
"classifiers/<trial>/metrics.json", "results.parquet", "report/report.html"). With local storage the key's
local path IS the artifact (nothing is copied: the single-machine default keeps its speed). With remote
storage each node works in a scratch folder of its own and moves artifacts between it and the store with
`fetch` and `publish`; no node ever opens a path on another node's disk.

Scratch (`scratch_root`): <GANAUG_SCRATCH, default ~/.cache/ganaug (not the temp dir Ray fills)>/ganaug_scratch/
<node id>/<sweep name>-<digest of the full store root>-<run id>: two sweeps of one name under different
prefixes, or a sweep deleted and started again (a new run id), never share a file. A scratch copy is fresh
when the store's ETag is the one it was fetched (or published) with and the local file is untouched since;
a size is never taken as proof (two images.npz of one shape have one size). Stores without ETags (gs://)
re-fetch every time. Keys with a query string or a '..' segment are refused (analysis.uris).

Disk: `ensure_free` refuses a write that would leave less than MIN_FREE_BYTES free, with the sizes and the
place in the message; `evict_stale` removes other sweeps' scratch and GAN run folders unused for a while.

The S3 endpoint (MinIO, Ceph, a test server) comes from `endpoint` (--s3-endpoint / YAML s3_endpoint) or the
AWS_ENDPOINT_URL environment variable.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from analysis.uris import check_key, check_uri
from sweeps.objects import Obj, StoreError, content_tag, filesystem, objects  # noqa: F401 (filesystem: re-exported)

SCRATCH_ENV = "GANAUG_SCRATCH"
MIN_FREE_BYTES = 256 * 2**20  # free disk a node keeps after any write of ours (Ray's logs and spilled objects)
LOST_CLAIMS: set[str] = set()  # store roots whose driver claim this process lost (sweeps.claim): writes refused
SCRATCH_ONLY = (".part", ".lock", ".used")  # never published: a fetch in progress, a node lock, a use stamp
RECORDS = ".fetched"  # under a scratch root: the ETag each scratch file was fetched or published with


class DiskSpaceError(OSError):
    """Not enough free disk for a write: says how much it needs, how much is free, and where."""


class ClaimLost(StoreError):
    """This driver's claim on the sweep was taken over (sweeps.claim): it writes nothing more to the store."""


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def digest(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def node_id() -> str:
    """This node's Ray id (short), or "local" outside Ray: scratch folders are per node."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        pass
    return "local"


@dataclass(frozen=True)
class Store:
    """A sweep's folder in its storage: `root` is "<storage_path>/<name>" (a local path or a URI)."""
    root: str
    endpoint: str | None = None
    scratch: str = ""  # remote stores: this node's scratch folder ("" = scratch_root())
    run_id: str = ""  # the sweep's run id (sweeps.claim), part of the default scratch folder's name

    def __post_init__(self) -> None:
        if self.remote:
            check_uri(self.root, "storage URI")

    @property
    def remote(self) -> bool:
        return is_remote(self.root)

    def uri(self, key: str = "") -> str:
        return f"{self.root.rstrip('/')}/{check_key(key)}".rstrip("/") if key else self.root.rstrip("/")

    def local(self, key: str = "") -> Path:
        """The local path of `key`: the artifact itself (local storage) or its place in this node's scratch."""
        base = Path(self.root).expanduser().resolve() if not self.remote else Path(self.scratch or scratch_root(self))
        return base / check_key(key) if key else base

    def _objects(self):
        return objects(self.root.rstrip("/"), self.endpoint)

    def _writable(self) -> None:
        if self.root.rstrip("/") in LOST_CLAIMS:
            raise ClaimLost(f"{self.root}: another driver took this sweep over; this one writes nothing more to it")

    # ---- remote <-> scratch (no-ops for local storage)
    def exists(self, key: str) -> bool:
        if not self.remote:
            return self.local(key).exists()
        return bool(self._objects().list(key))

    def list(self, key: str = "") -> list[Obj]:
        """Every file under `key` (or `key` itself), with its size and ETag."""
        if self.remote:
            return self._objects().list(key)
        base = self.local(key)
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        return [Obj(p.relative_to(self.local()).as_posix(), p.stat().st_size, None) for p in files]

    def fetch(self, key: str, skip_suffixes: tuple[str, ...] = (), skip_folders: tuple[str, ...] = ()) -> Path:
        """Copy `key` (a file or a folder, recursively) from the store into scratch; -> its local path. A file
        whose scratch copy is fresh (same ETag, untouched) is not copied again, nor files ending in
        skip_suffixes or inside a folder named in skip_folders. Missing keys copy nothing."""
        dest = self.local(key)
        if not self.remote:
            return dest
        ob = self._objects()
        todo = []
        for o in ob.list(key):
            check_key(o.key, f"key listed by {self.root}")
            if o.key.endswith(skip_suffixes) or set(o.key.split("/")[:-1]) & set(skip_folders) or self._fresh(o):
                continue
            todo.append(o)
        if todo:
            ensure_free(dest, sum(o.size for o in todo), f"fetching {self.uri(key)}")
        for o in todo:
            target = self.local(o.key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.part")  # writers apart
            ob.download(o.key, tmp)
            tmp.replace(target)
            self._record(o)
        return dest

    def publish(self, key: str, record: bool = True) -> str:
        """Copy scratch's `key` (a file or a folder) to the store; -> its URI. Local storage: nothing to do.
        record=False: skip noting the new ETags (one listing) for files this node never fetches back."""
        src = self.local(key)
        if not self.remote:
            return str(src)
        self._writable()
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else []
        files = [f for f in files if not f.name.endswith(SCRATCH_ONLY)]
        ob = self._objects()
        for f in files:
            ob.upload(f, f.relative_to(self.local()).as_posix())
        if files and record:  # one listing: the ETags of what was just written, so this node never fetches it back
            mine = {f.relative_to(self.local()).as_posix(): f.stat().st_size for f in files}
            for o in ob.list(key):
                if mine.get(o.key) == o.size:
                    self._record(o)
        return self.uri(key)

    def put_file(self, src: Path, key: str) -> str:
        """Upload a file from anywhere on this machine to `key` (remote), or copy it there (local)."""
        if not self.remote:
            self.local(key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, self.local(key))
            return str(self.local(key))
        self._writable()
        self._objects().upload(Path(src), check_key(key))
        return self.uri(key)

    def delete(self, key: str) -> None:
        """Delete the file `key` (a folder: delete_tree)."""
        if not self.remote:
            p = self.local(key)
            if p.is_file():
                p.unlink()
            return
        self._writable()
        self._objects().delete(check_key(key))

    def delete_tree(self, key: str) -> None:
        """Delete every file under `key` (in the store; with local storage the folder)."""
        if not self.remote:
            shutil.rmtree(self.local(key), ignore_errors=True)
            return
        self._writable()
        ob = self._objects()
        ob.delete_many([o.key for o in ob.list(key)])

    def delete_keys(self, keys: list[str]) -> None:
        """Delete these files (S3: a request per 1,000)."""
        if not self.remote:
            for k in keys:
                self.delete(k)
            return
        self._writable()
        self._objects().delete_many([check_key(k) for k in keys])

    def drop_local(self, key: str) -> None:
        """Remote stores: remove this node's scratch copy of `key` (it is in the store)."""
        if self.remote:
            for p in (self.local(key), self.local() / RECORDS / key, self._record_path(key)):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def read_text(self, key: str) -> str | None:
        """The text of `key` in the store (None when missing), read directly (not through scratch)."""
        return self.read_versioned(key)[0]

    def read_versioned(self, key: str) -> tuple[str | None, str | None]:
        """(text, version tag) of `key`; the tag is what write_text(if_match=...) compares with."""
        if not self.remote:
            p = self.local(key)
            if not p.exists():
                return None, None
            data = p.read_bytes()
            return data.decode(), content_tag(data)
        got = self._objects().read(check_key(key))
        return (None, None) if got is None else (got[0].decode(), got[1])

    def write_text(self, key: str, text: str, if_absent: bool = False, if_match: str | None = None) -> str | None:
        """Write `key` (local: atomically, through a temporary file) -> the new version's tag, or None when a
        precondition failed: if_absent (the key exists already) or if_match (it is no longer that version)."""
        if not self.remote:
            p = self.local(key)
            p.parent.mkdir(parents=True, exist_ok=True)
            if if_match is not None and self.read_versioned(key)[1] != if_match:
                return None
            tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            if if_absent:  # link() refuses an existing name: the first writer wins
                try:
                    os.link(tmp, p)
                except FileExistsError:
                    return None
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                tmp.replace(p)
            return content_tag(text.encode())
        self._writable()
        return self._objects().write(check_key(key), text.encode(), if_absent=if_absent, if_match=if_match)

    # ---- freshness records of scratch copies
    def _record_path(self, key: str) -> Path:
        return self.local() / RECORDS / f"{key}.json"

    def _fresh(self, o: Obj) -> bool:
        target, rec = self.local(o.key), self._record_path(o.key)
        if o.etag is None or not target.is_file() or not rec.is_file():
            return False
        try:
            r = json.loads(rec.read_text())
        except (OSError, ValueError):
            return False
        st = target.stat()
        return r.get("etag") == o.etag and r.get("size") == st.st_size == o.size and r.get("mtime_ns") == st.st_mtime_ns

    def _record(self, o: Obj) -> None:
        if o.etag is None:
            return
        st = self.local(o.key).stat()
        rec = self._record_path(o.key)
        rec.parent.mkdir(parents=True, exist_ok=True)
        tmp = rec.with_name(f"{rec.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"etag": o.etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        tmp.replace(rec)


def scratch_base() -> Path:
    """This node's folder of sweep scratch folders: $GANAUG_SCRATCH/ganaug_scratch/<node id>, by default under
    ~/.cache/ganaug (the system temp dir is Ray's, and may be a small tmpfs or cleaned under a running sweep)."""
    env = os.environ.get(SCRATCH_ENV)
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ganaug"
    return (base / "ganaug_scratch" / node_id()).resolve()


def scratch_root(store: Store) -> Path:
    """This node's scratch folder for the sweep: never shared with another sweep, never another node's disk."""
    root = store.root.rstrip("/")
    return scratch_base() / (f"{Path(root).name}-{digest(root)}" + (f"-{store.run_id}" if store.run_id else ""))


def ensure_free(path: str | Path, need_bytes: int, what: str) -> None:
    """Refuse (DiskSpaceError) a write of need_bytes under `path` that would leave less than MIN_FREE_BYTES."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free
    if free - need_bytes < MIN_FREE_BYTES:
        raise DiskSpaceError(f"not enough free disk for {what}: it needs {need_bytes / 1e6:.1f} MB and "
                             f"{MIN_FREE_BYTES / 1e6:.0f} MB must stay free, but {p} has {free / 1e6:.1f} MB free; "
                             f"free space there or set {SCRATCH_ENV} to a folder on a larger disk")


def touch_used(folder: Path) -> None:
    """Stamp `folder` as used now (evict_stale removes folders whose stamp is old)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".used").touch()


def _age_s(folder: Path) -> float:
    stamp = folder / ".used"
    return time.time() - (stamp if stamp.exists() else folder).stat().st_mtime


def evict_stale(store: Store, max_age_s: float) -> list[Path]:
    """Remote stores, default scratch: remove this node's scratch folders of other sweeps and this sweep's GAN
    run folders (gans/<key>/a-<attempt>) unused for max_age_s (they are in their stores); -> what went."""
    if not store.remote or store.scratch or max_age_s <= 0:
        return []
    own = store.local()
    old = [d for d in (own.parent.iterdir() if own.parent.is_dir() else []) if d.is_dir() and d != own]
    old += list(own.glob("gans/*/a-*"))
    gone = []
    for d in old:
        try:
            if d.is_dir() and _age_s(d) > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d)
        except FileNotFoundError:  # another process of this node removed it first
            pass
    return gone


def sweep_store(cfg, work: Path) -> "Store":
    """The sweep's folder in its storage; with remote storage this driver's scratch is its work dir."""
    return Store(cfg.sweep_dir, cfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL") or None, scratch=str(work))


def tune_storage(cfg) -> tuple[str, object]:
    """(storage_path, storage_filesystem) for Tune of a SweepConfig: a local folder, or the URI with an S3 endpoint
    override."""
    if "://" not in cfg.storage_path:  # a local folder (file:// URIs go to Tune as they are)
        return str(Path(cfg.storage_path).resolve()), None
    endpoint = cfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if cfg.storage_path.startswith("s3://") and endpoint:
        fs, path = filesystem(cfg.storage_path, endpoint)
        return path, fs
    return cfg.storage_path, None
