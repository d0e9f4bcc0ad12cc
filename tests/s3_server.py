"""An S3 server on 127.0.0.1 for the cluster tests (moto's ThreadedMotoServer), with the environment a sweep
and its Ray workers need to reach it: credentials, region, AWS_ENDPOINT_URL, no EC2 metadata lookups."""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def s3_server(bucket: str = "sweeps"):
    """-> the endpoint URL; the bucket exists; os.environ holds what pyarrow and boto need (restored after)."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", allow_bucket_creation=True).create_dir(bucket)
        yield endpoint
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def list_keys(endpoint: str, prefix: str) -> list[str]:
    """Every object key under bucket/prefix."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)
