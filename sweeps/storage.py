"""Where a sweep's artifacts live: under its storage path (<storage_path>/<name>/), a local folder or an object
store (s3://, gs://, anything pyarrow.fs opens), read and written through pyarrow.fs.

Every artifact has a key relative to the sweep's folder ("data/bundle/manifest.parquet", "gans/<key>/done.json",
"classifiers/<trial>/metrics.json", "results.parquet", "report/report.html"). With local storage the key's
local path IS the artifact (nothing is copied: the single-machine default keeps its speed). With remote
storage each node works in a scratch folder of its own (`scratch_root`: <GANAUG_SCRATCH or the system temp
dir>/ganaug_scratch/<node id>/<sweep name>) and moves artifacts between it and the store with `fetch` and
`publish`; no node ever opens a path on another node's disk.

The S3 endpoint (MinIO, Ceph, a test server) comes from `endpoint` (--s3-endpoint / YAML s3_endpoint) or the
AWS_ENDPOINT_URL environment variable, which pyarrow reads itself.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def filesystem(uri: str, endpoint: str | None = None):
    """(pyarrow FileSystem, path inside it) for a local path or URI; an S3 endpoint override when given."""
    import pyarrow.fs as pafs

    if uri.startswith("s3://") and endpoint:
        rest = uri[len("s3://"):]
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region), rest.rstrip("/")
    if not is_remote(uri):
        return pafs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).expanduser().resolve())
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


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

    @property
    def remote(self) -> bool:
        return is_remote(self.root)

    def uri(self, key: str = "") -> str:
        return f"{self.root.rstrip('/')}/{key}".rstrip("/") if key else self.root.rstrip("/")

    def _fs(self):
        return filesystem(self.root, self.endpoint)

    def local(self, key: str = "") -> Path:
        """The local path of `key`: the artifact itself (local storage) or its place in this node's scratch."""
        base = Path(self.root).expanduser().resolve() if not self.remote else Path(self.scratch or scratch_root(self))
        return base / key if key else base

    # ---- remote <-> scratch (no-ops for local storage)
    def exists(self, key: str) -> bool:
        import pyarrow.fs as pafs

        if not self.remote:
            return self.local(key).exists()
        fs, base = self._fs()
        return fs.get_file_info(f"{base}/{key}").type != pafs.FileType.NotFound

    def fetch(self, key: str, skip_suffixes: tuple[str, ...] = (), skip_folders: tuple[str, ...] = ()) -> Path:
        """Copy `key` (a file or a folder, recursively) from the store into scratch; -> its local path. Files
        already in scratch with the same size are not copied again, nor files ending in skip_suffixes or inside
        a folder named in skip_folders. Missing keys copy nothing."""
        import pyarrow.fs as pafs

        dest = self.local(key)
        if not self.remote:
            return dest
        fs, base = self._fs()
        info = fs.get_file_info(f"{base}/{key}")
        if info.type == pafs.FileType.NotFound:
            return dest
        infos = [info] if info.type == pafs.FileType.File else [
            i for i in fs.get_file_info(pafs.FileSelector(f"{base}/{key}", recursive=True))
            if i.type == pafs.FileType.File]
        for i in infos:
            rel = i.path[len(base) + 1:]
            target = self.local(rel)
            if rel.endswith(skip_suffixes) or set(rel.split("/")[:-1]) & set(skip_folders) or (
                    target.exists() and target.stat().st_size == i.size):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            pafs.copy_files(i.path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            tmp.replace(target)
        return dest

    def publish(self, key: str) -> str:
        """Copy scratch's `key` (a file or a folder) to the store; -> its URI. Local storage: nothing to do."""
        import pyarrow.fs as pafs

        src = self.local(key)
        if not self.remote:
            return str(src)
        fs, base = self._fs()
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for f in files:
            if f.name.endswith((".part", ".lock")):  # a fetch in progress, a node-local lock
                continue
            rel = f.relative_to(self.local()).as_posix()
            pafs.copy_files(str(f), f"{base}/{rel}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        return self.uri(key)

    def delete(self, key: str) -> None:
        import pyarrow.fs as pafs

        if not self.remote:
            p = self.local(key)
            if p.is_file():
                p.unlink()
            return
        fs, base = self._fs()
        if fs.get_file_info(f"{base}/{key}").type == pafs.FileType.File:
            fs.delete_file(f"{base}/{key}")

    def read_text(self, key: str) -> str | None:
        """The text of `key` in the store (None when missing), read directly (not through scratch)."""
        if not self.remote:
            p = self.local(key)
            return p.read_text() if p.exists() else None
        if not self.exists(key):
            return None
        fs, base = self._fs()
        with fs.open_input_stream(f"{base}/{key}") as f:
            return f.read().decode()

    def write_text(self, key: str, text: str) -> None:
        """Write `key` in the store (local: atomically, through a temporary file)."""
        if not self.remote:
            p = self.local(key)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(p)
            return
        fs, base = self._fs()
        with fs.open_output_stream(f"{base}/{key}") as out:
            out.write(text.encode())


def scratch_root(store: Store) -> Path:
    """This node's scratch folder for the sweep: never shared, never another node's disk."""
    base = Path(os.environ.get("GANAUG_SCRATCH") or tempfile.gettempdir()) / "ganaug_scratch"
    return (base / node_id() / Path(store.root.rstrip("/")).name).resolve()
