"""A sweep owns its storage: one driver at a time, and a sweep is never overwritten by a new one of its name.

    home = claim_sweep(cfg, work, store)   # ConfigError (exit 2) when refused; home.run_id
    ...                                    # save_state(store, state, path) as the phase changes
    release_claims()                       # at the end (also at exit)

- Without --resume, a store that already holds a sweep (sweep_state.json or result rows) is refused, naming
  it: a second run of the same command, on a new head or with another --work-dir, never
  publishes over the first one's rows. Local storage: the work dir's sweep_state.json says so, as before.
- The driver holds a lease for its whole run. Remote storage: the object driver.lease, created only if absent
  (S3 `If-None-Match`) and renewed every lease_heartbeat_s only if unchanged since this driver wrote it
  (`If-Match`). A second driver finding it watches it: renewed within lease_ttl_s + one heartbeat -> refused
  (the first driver lives); silent -> taken over, again conditionally, so of two drivers racing for a dead
  one's lease only one wins. A driver whose renewal finds another's lease stops writing to the store
  (sweeps.storage.LOST_CLAIMS). Stores without preconditions (gs://) compare contents instead (a race is
  possible there). Local storage: an exclusive flock on <work>/.driver.lock, released when the process ends.
- The run id (claim.json, written once): each node's scratch folder is named by it and the store's digest.
- --resume on any machine: the state and the rows come from the store and are merged with the local ones
  (a row is replaced only by a newer one, the state only by a later phase), so a new head loses nothing and
  an older stored copy never replaces newer local rows. State files are written atomically.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import ConfigError
from sweeps.storage import LOST_CLAIMS, Store

CLAIM, LEASE, STATE = "claim.json", "driver.lease", "sweep_state.json"
PHASES = ("search", "controls", "confirm", "exchange", "done")
_HELD: list = []  # this process's leases (released by release_claims, or at exit)
_UNPUBLISHED: set[str] = set()  # state files whose last publish failed (republished by release_claims)


def _json(text: str | None) -> dict:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def _warn(text: str) -> None:
    import sys

    print(f"warning: {text}", file=sys.stderr, flush=True)


def describe(store: Store) -> str:
    """What sweep the store holds, in words ("" = none)."""
    from analysis.load import PARTS

    claim, state = _json(store.read_text(CLAIM)), _json(store.read_text(STATE))
    rows = bool(store.list("results.parquet") or store.list(PARTS))
    if not (state or rows):  # nothing, or only the claim of a start that failed before its first state write
        return ""
    name = claim.get("name") or Path(store.root.rstrip("/")).name
    run = (f"run {claim['run_id']} started {claim.get('created_at', '?')} on {claim.get('host', '?')}, "
           if claim.get("run_id") else "")
    return f"a sweep named {name!r} ({run}phase {state.get('phase', '?')}, {'with' if rows else 'no'} result rows)"


@dataclass
class Home:
    """A claimed sweep: where it lives, its run id, the lease its driver holds."""
    store: Store
    work: Path
    run_id: str
    lease: object


def claim_sweep(cfg, work: Path, store: Store, say=print) -> Home:
    """Refuse (ConfigError) a held store without --resume or a live driver; take the driver lease; on --resume
    merge the store's state and rows into the work dir."""
    if store.remote:
        held = describe(store)
        if held and not cfg.resume:
            raise ConfigError(f"{store.uri()} already holds {held}; pass --resume to continue it or --name to "
                              "start another (nothing was written)")
    elif (work / STATE).exists() and not cfg.resume:
        raise ConfigError(f"{work} already holds a sweep named {cfg.name!r}; pass --resume to continue it or "
                          f"--name to start another")
    work.mkdir(parents=True, exist_ok=True)
    lease = DriverLease(store, cfg.lease_ttl_s, cfg.lease_heartbeat_s, say) if store.remote else LocalLock(work)
    lease.acquire()
    _HELD.append(lease)
    run_id = ""
    if store.remote:
        run_id = _run_id(store, cfg.name)
        if cfg.resume:
            merge_from_store(store, work, say)
    return Home(store, work, run_id, lease)


def _run_id(store: Store, name: str) -> str:
    claim = _json(store.read_text(CLAIM))
    if claim.get("run_id"):
        return str(claim["run_id"])
    rid = uuid.uuid4().hex[:8]
    body = {"run_id": rid, "name": name, "root": store.uri(), "host": socket.gethostname(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if store.write_text(CLAIM, json.dumps(body, indent=2), if_absent=True):
        return rid
    return str(_json(store.read_text(CLAIM)).get("run_id") or rid)


class LocalLock:
    """Local storage: an exclusive flock on <work>/.driver.lock for the driver's life."""

    def __init__(self, work: Path):
        self.path = work / ".driver.lock"
        self.fh = None

    def acquire(self) -> None:
        import fcntl

        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            fh.close()
            raise ConfigError(f"another driver is running the sweep in {self.path.parent} ({who}); wait for it "
                              "to end (or stop it) before running this one") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        self.fh = fh

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # closing drops the flock
            self.fh = None


class DriverLease:
    """Remote storage: the driver.lease object, created or taken over conditionally and renewed from a thread."""

    def __init__(self, store: Store, ttl_s: float, heartbeat_s: float, say=print):
        self.store, self.ttl_s, self.heartbeat_s, self.say = store, float(ttl_s), float(heartbeat_s), say
        self.owner = uuid.uuid4().hex[:12]
        self.beats, self.tag = 0, None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _body(self) -> str:
        self.beats += 1
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "renewed_at": time.time(), "beat": self.beats, "ttl_s": self.ttl_s})

    def acquire(self) -> None:
        text, tag = self.store.read_versioned(LEASE)
        if text is None:
            self.tag = self.store.write_text(LEASE, self._body(), if_absent=True)
            if self.tag is None:  # another driver created it this instant
                text, tag = self.store.read_versioned(LEASE)
        if self.tag is None:
            other = _json(text)
            who = (f"driver pid {other.get('pid', '?')} on {other.get('host', '?')} (lease "
                   f"{self.store.uri(LEASE)})")
            if not self._gone(other, tag):
                raise ConfigError(f"another driver is running this sweep: {who} renewed its lease within "
                                  f"{self.ttl_s:g} s; wait for it to end (or stop it) before running this one")
            self.tag = self.store.write_text(LEASE, self._body(), if_match=tag) if tag else \
                self.store.write_text(LEASE, self._body(), if_absent=True)
            if self.tag is None:
                raise ConfigError(f"another driver took this sweep over while this one waited ({who})")
            self.say(f"took over the sweep's driver lease from {who}: it was silent for {self.ttl_s:g} s", flush=True)
        self.thread = threading.Thread(target=self._renew, daemon=True)
        self.thread.start()

    def _gone(self, other: dict, tag: str | None) -> bool:
        """Watch a lease another driver holds for one TTL and a heartbeat: False if it was renewed meanwhile."""
        age = time.time() - float(other.get("renewed_at") or 0)
        if age > 2 * self.ttl_s + self.heartbeat_s:  # silent long ago (clocks may differ by up to a TTL)
            return True
        wait = self.ttl_s + self.heartbeat_s
        self.say(f"the store names a running driver (renewed {max(age, 0):.0f} s ago): watching its lease for up "
                 f"to {wait:.0f} s to see whether it lives", flush=True)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            time.sleep(min(self.heartbeat_s / 2, max(0.0, end - time.monotonic())))
            if self.store.read_versioned(LEASE)[1] != tag:
                return False
        return True

    def renew_once(self) -> bool:
        """One renewal -> False when the lease is another driver's now (this one then writes nothing more)."""
        try:
            tag = self.store.write_text(LEASE, self._body(), if_match=self.tag)
        except Exception as exc:  # the store is unreachable: try again at the next beat
            _warn(f"driver lease not renewed ({type(exc).__name__}: {exc})")
            return True
        if tag is None:
            LOST_CLAIMS.add(self.store.root.rstrip("/"))
            _warn(f"another driver took {self.store.uri()} over (its lease changed under this one): this driver "
                  "writes nothing more to the store; its results stay in its work dir")
            return False
        self.tag = tag
        return True

    def _renew(self) -> None:
        while not self.stop.wait(self.heartbeat_s) and self.renew_once():
            pass

    def release(self) -> None:
        if self.stop.is_set():  # released already (or never renewed: a test's dead driver)
            return
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=self.heartbeat_s + 5)
        if self.store.root.rstrip("/") in LOST_CLAIMS:
            return
        try:
            if _json(self.store.read_text(LEASE)).get("owner") == self.owner:
                self.store.delete(LEASE)
        except Exception as exc:
            _warn(f"driver lease not removed ({exc}); the next driver waits {self.ttl_s:g} s for it to lapse")


def release_claims() -> None:
    """Republish a state file whose publish failed, then release this process's driver leases."""
    while _HELD:
        lease = _HELD.pop()
        store = getattr(lease, "store", None)
        if store is not None and store.uri() in _UNPUBLISHED:
            try:
                store.publish(STATE)
                _UNPUBLISHED.discard(store.uri())
            except Exception as exc:
                _warn(f"{store.uri(STATE)} still not published ({exc})")
        lease.release()


atexit.register(release_claims)


def save_state(store: Store, state: dict, path: Path) -> None:
    """sweep_state.json written atomically on the driver's disk, then published (remote); a failed publish is
    logged and repeated at the end of the sweep."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, default=float))
    tmp.replace(path)
    if store.remote:
        try:
            store.publish(path.name)
            _UNPUBLISHED.discard(store.uri())
        except Exception as exc:
            _UNPUBLISHED.add(store.uri())
            _warn(f"{store.uri(STATE)} not published yet ({exc}); retried at the end of the sweep")


def merge_from_store(store: Store, work: Path, say=print) -> None:
    """--resume: the store's sweep_state.json and rows merged into the work dir; a later phase and a newer row
    win, the local copy on a tie (never replaced by an older stored one)."""
    import pandas as pd

    from analysis.load import PARTS, part_files, read_table, row_keys
    from sweeps.results import _write_atomic

    stored = Store(store.root, store.endpoint, scratch=str(work / ".stored"))  # never over the local copies
    remote_state = _json(store.read_text(STATE))
    local_state = _json((work / STATE).read_text()) if (work / STATE).exists() else {}
    rank = lambda s: PHASES.index(s["phase"]) if s.get("phase") in PHASES else -1  # noqa: E731
    if remote_state and rank(remote_state) > rank(local_state):
        save_state(Store(str(work)), remote_state, work / STATE)
    stored.fetch("results.parquet")
    stored.fetch(PARTS)
    theirs = read_table(stored.local("results.parquet"))
    ours = read_table(work / "results.parquet")
    if theirs.empty:
        return
    both = pd.concat([theirs.assign(_mine=0), ours.assign(_mine=1)] if not ours.empty else [theirs.assign(_mine=0)],
                     ignore_index=True)
    both["_key"] = row_keys(both).to_numpy()
    both["_t"] = both["finished_at"].fillna("").astype(str) if "finished_at" in both else ""
    both = both.sort_values(["_key", "_t", "_mine"], kind="mergesort").drop_duplicates("_key", keep="last")
    merged = both.drop(columns=["_key", "_t", "_mine"]).reset_index(drop=True)
    _write_atomic(merged, work / "results.parquet")
    for p in part_files(work / PARTS):
        p.unlink()
    shutil.rmtree(work / ".stored", ignore_errors=True)
    say(f"resume: {len(merged)} result row(s) ({len(theirs)} in the store, {len(ours)} in {work})", flush=True)
