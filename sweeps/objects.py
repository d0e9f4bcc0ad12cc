"""The object-store calls under sweeps.storage: list (with ETags), read, conditional write, delete, transfer,
each retried with backoff and bounded by timeouts, for S3 (boto3) and for any other pyarrow filesystem.

S3 (s3://, MinIO, Ceph: boto3) gives what a sweep needs to be safe on shared storage: listings carry each
object's ETag (freshness of a node's scratch copy), and writes take preconditions (`If-None-Match: *` creates
only, `If-Match: <etag>` replaces only the version read), which AWS S3 and MinIO honour. Other stores (gs://,
hdfs://) go through pyarrow: no ETags (a scratch copy is fetched again every time) and preconditions emulated
by reading first (a race between two writers is possible there; docs/cluster.md says so).

Every call retries transient errors (connection resets, timeouts, 5xx, throttling) RETRY.attempts times with
doubling waits; errors that cannot heal (not found, access denied, a failed precondition) are not retried.
A call that still fails raises StoreError naming the operation and the key.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from analysis.uris import check_uri

T = TypeVar("T")


class StoreError(OSError):
    """A store operation that failed after its retries (or cannot succeed): says which, on what, and why."""


@dataclass(frozen=True)
class Retry:
    attempts: int = 5  # tries of one store call before it fails (transient errors only)
    first_wait_s: float = 0.5  # wait after the first failure, doubled after each further one
    max_wait_s: float = 8.0  # longest wait between two tries
    connect_timeout_s: float = 10.0  # seconds to open a connection to the store
    request_timeout_s: float = 120.0  # seconds one request may stay silent (a 10 MB part on a slow link)


RETRY = Retry()


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (StoreError, FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError,
                        TypeError, PermissionError)):
        return False
    response = getattr(exc, "response", None)  # botocore ClientError: the HTTP status says
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(response.get("Error", {}).get("Code", ""))
        return status is None or status >= 500 or status in (408, 429) or code in ("RequestTimeout", "SlowDown")
    return isinstance(exc, Exception)  # connection errors, timeouts, pyarrow's OSError("AWS Error NETWORK...")


def retrying(what: str, fn: Callable[[], T], retry: Retry | None = None) -> T:
    """fn() with retries of transient errors; -> its value, or StoreError after the last try."""
    retry = retry or RETRY
    wait = retry.first_wait_s
    for attempt in range(1, retry.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not _transient(exc):
                raise
            if attempt == retry.attempts:
                raise StoreError(f"{what}: failed {attempt} times ({type(exc).__name__}: {str(exc)[:300]})") from exc
            time.sleep(wait)
            wait = min(wait * 2, retry.max_wait_s)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Obj:
    key: str  # relative to the store's root
    size: int  # bytes
    etag: str | None  # the store's version tag; None: the store gives none (a scratch copy is never trusted)


def _region() -> str:
    return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"


def filesystem(uri: str, endpoint: str | None = None):
    """(pyarrow FileSystem, path inside it) for a local path or URI, with our timeouts and retries on S3; the
    endpoint (MinIO...) applies to s3:// URIs. A URI with a query string or '..' is refused (analysis.uris)."""
    import pyarrow.fs as pafs

    check_uri(uri, "storage URI")
    if "://" not in uri or uri.startswith("file://"):
        return pafs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).expanduser().resolve())
    if uri.startswith("s3://"):
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
        bucket = uri[len("s3://"):].split("/", 1)[0]
        return _s3fs(endpoint, _region() if endpoint else _bucket_region(bucket)), uri[len("s3://"):].rstrip("/")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


@functools.lru_cache(maxsize=32)
def _bucket_region(bucket: str) -> str:
    """AWS: the bucket's own region (pyarrow does not follow S3's redirects), unless the environment names one."""
    if os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"):
        return _region()
    import pyarrow.fs as pafs

    try:
        return pafs.resolve_s3_region(bucket)
    except Exception:  # no network to ask: the default, and the request itself will say what is wrong
        return _region()


@functools.lru_cache(maxsize=8)
def _s3fs(endpoint: str | None, region: str):
    import pyarrow.fs as pafs

    kw = {"endpoint_override": endpoint} if endpoint else {}
    return pafs.S3FileSystem(region=region, connect_timeout=RETRY.connect_timeout_s,
                             request_timeout=RETRY.request_timeout_s,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3), **kw)


class ArrowObjects:
    """Objects of any pyarrow filesystem under `root` (no ETags; preconditions checked by reading first)."""

    def __init__(self, root: str, endpoint: str | None):
        self.fs, self.base = filesystem(root, endpoint)

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    def list(self, key: str) -> list[Obj]:
        import pyarrow.fs as pafs

        info = retrying(f"stat {key}", lambda: self.fs.get_file_info(self._path(key)))
        if info.type == pafs.FileType.File:
            return [Obj(key, int(info.size), None)]
        if info.type == pafs.FileType.NotFound:
            return []
        sel = pafs.FileSelector(self._path(key), recursive=True, allow_not_found=True)
        infos = retrying(f"list {key}", lambda: self.fs.get_file_info(sel))
        return [Obj(i.path[len(self.base) + 1:], int(i.size), None) for i in infos if i.type == pafs.FileType.File]

    def read(self, key: str) -> tuple[bytes, str | None] | None:
        def go():
            try:
                with self.fs.open_input_stream(self._path(key)) as f:
                    data = f.read()
                return data, content_tag(data)  # the version a later write's if_match compares with
            except FileNotFoundError:
                return None
        return retrying(f"read {key}", go)

    def write(self, key: str, data: bytes, if_absent: bool = False, if_match: str | None = None) -> str | None:
        """-> the new version's tag, or None when the precondition failed."""
        if if_absent and self.list(key):
            return None
        if if_match is not None:  # no ETags here: the version read is its content
            cur = self.read(key)
            if cur is None or content_tag(cur[0]) != if_match:
                return None

        def go():
            with self.fs.open_output_stream(self._path(key)) as out:
                out.write(data)
        retrying(f"write {key}", go)
        return content_tag(data)

    def delete(self, key: str) -> None:
        def go():
            try:
                self.fs.delete_file(self._path(key))
            except FileNotFoundError:
                pass
        retrying(f"delete {key}", go)

    def delete_many(self, keys: list[str]) -> None:
        for k in keys:
            self.delete(k)

    def download(self, key: str, dest: Path) -> None:
        import pyarrow.fs as pafs

        retrying(f"download {key}", lambda: pafs.copy_files(self._path(key), str(dest), source_filesystem=self.fs,
                                                            destination_filesystem=pafs.LocalFileSystem()))

    def upload(self, src: Path, key: str) -> None:
        import pyarrow.fs as pafs

        retrying(f"upload {key}", lambda: pafs.copy_files(str(src), self._path(key), destination_filesystem=self.fs,
                                                          source_filesystem=pafs.LocalFileSystem()))


def content_tag(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


class S3Objects:
    """Objects of an S3 bucket under `root` through boto3: listings with ETags, conditional writes."""

    def __init__(self, root: str, endpoint: str | None):
        rest = root[len("s3://"):].strip("/")
        self.bucket, _, self.prefix = rest.partition("/")
        self.client = _s3_client(endpoint or os.environ.get("AWS_ENDPOINT_URL") or None)

    def _key(self, key: str) -> str:
        return "/".join(p for p in (self.prefix, key) if p)

    def list(self, key: str) -> list[Obj]:
        full = self._key(key)
        cut = len(self.prefix) + 1 if self.prefix else 0

        def go():
            out = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for o in page.get("Contents", []):
                    if o["Key"] == full or o["Key"].startswith(full.rstrip("/") + "/") or not full:
                        out.append(Obj(o["Key"][cut:], int(o["Size"]), o["ETag"]))
            return out
        return retrying(f"list s3://{self.bucket}/{full}", go)

    def read(self, key: str) -> tuple[bytes, str | None] | None:
        def go():
            try:
                r = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except self.client.exceptions.NoSuchKey:
                return None
            return r["Body"].read(), r["ETag"]
        return retrying(f"read s3://{self.bucket}/{self._key(key)}", go)

    def write(self, key: str, data: bytes, if_absent: bool = False, if_match: str | None = None) -> str | None:
        """-> the new version's ETag, or None when the precondition failed."""
        kw = {"IfNoneMatch": "*"} if if_absent else {"IfMatch": if_match} if if_match is not None else {}

        def go():
            try:
                return self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kw)["ETag"]
            except Exception as exc:  # 412: the precondition failed; 409: a concurrent conditional write won
                status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
                if kw and status in (409, 412):
                    return None
                raise
        return retrying(f"write s3://{self.bucket}/{self._key(key)}", go)

    def delete(self, key: str) -> None:
        retrying(f"delete s3://{self.bucket}/{self._key(key)}",
                 lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def delete_many(self, keys: list[str]) -> None:
        """One request per 1,000 keys (DeleteObjects) instead of one per key."""
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": self._key(k)} for k in keys[i:i + 1000]], "Quiet": True}
            r = retrying(f"delete {len(batch['Objects'])} objects in s3://{self.bucket}/{self.prefix}",
                         lambda b=batch: self.client.delete_objects(Bucket=self.bucket, Delete=b))
            if r.get("Errors"):
                e = r["Errors"][0]
                raise StoreError(f"delete s3://{self.bucket}/{e.get('Key')}: {e.get('Code')} {e.get('Message')}")

    def download(self, key: str, dest: Path) -> None:
        retrying(f"download s3://{self.bucket}/{self._key(key)}",
                 lambda: self.client.download_file(self.bucket, self._key(key), str(dest)))

    def upload(self, src: Path, key: str) -> None:
        retrying(f"upload s3://{self.bucket}/{self._key(key)}",
                 lambda: self.client.upload_file(str(src), self.bucket, self._key(key)))


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None):
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=RETRY.connect_timeout_s,
                 read_timeout=RETRY.request_timeout_s)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=_region(), config=cfg)


def objects(root: str, endpoint: str | None):
    """The object calls of a remote store root: S3Objects for s3:// (boto3 installed), else ArrowObjects."""
    check_uri(root, "storage URI")
    if root.startswith("s3://"):
        try:
            import boto3  # noqa: F401
            return S3Objects(root, endpoint)
        except ImportError:
            pass
    return ArrowObjects(root, endpoint)
