"""A Ray `worker_process_setup_hook` for the cluster tests: every worker process fails (and logs) any open of a
path under GANAUG_FORBIDDEN_DIR, the sweep driver's work dir. File modes cannot show this when tests run as
root; an audit hook sees every open the process makes (Python's open, os.open, numpy, pyarrow's Python calls)."""
from __future__ import annotations

HOOK = "cluster_audit.forbid_driver_dir"


def with_audit(runtime_env: dict | None) -> dict:
    """Ray's RAY_RUNTIME_ENV_HOOK (set in the sweep driver's environment): the job's runtime env gains the
    audit hook as its worker_process_setup_hook; product code knows nothing of it."""
    return {**(runtime_env or {}), "worker_process_setup_hook": HOOK}

import os
import sys


def forbid_driver_dir() -> None:
    root = os.environ.get("GANAUG_FORBIDDEN_DIR")
    if not root:
        return
    root = os.path.abspath(root)
    log = os.environ.get("GANAUG_FORBIDDEN_LOG")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if log else None

    def hook(event: str, args) -> None:
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if path == root or path.startswith(root + os.sep):
            if fd is not None:
                os.write(fd, f"pid {os.getpid()}: {path}\n".encode())
            raise PermissionError(f"a Ray worker opened the sweep driver's work dir: {path}")

    sys.addaudithook(hook)
