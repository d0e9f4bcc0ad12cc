"""The GAN cache in a sweep's store: each GAN key is trained once and reused by every trial that needs it, and
two holders of a key's lease never mix their files.

    info, run, trained = ensure_trained(store, key, holder, train, heartbeat_s)
    # train(run_dir, lease) -> the record of a finished (or diverged) GAN; run: the run folder's key

Local storage: the run folder is gans/<key>/ under a file lock (one machine: no other holder can exist).
Remote storage: every grant of the key's lease (sweeps.leases) is an attempt with a fresh id, and trains in its
own folder, gans/<key>/a-<attempt>/, starting from the newest checkpoint any earlier attempt of this key
published (a trial cut short on a lost node resumes; checkpoints of another key or another sweep are never
seen: the folder is the key's and the store the sweep's). Its checkpoints are published while it holds the
lease (CheckpointSync checks the fence each epoch), the whole folder when it is done, and then
gans/<key>/done.json, written only if absent, naming the attempt and its folder: the first complete attempt
wins, and only its files count. Earlier attempts' folders are then deleted, so one set of checkpoints is left
per key. A holder whose lease is lost stops before publishing and asks for the lease again (at most
MAX_LEASE_LOSSES times): by then the key is usually done, and it reuses the winner's run.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

from sweeps.artifacts import node_lock, warn
from sweeps.leases import HEARTBEAT_S, Holding, LeaseLost, gan_lease
from sweeps.storage import Store, StoreError, touch_used

DONE = "done.json"
MAX_LEASE_LOSSES = 3
CHECKPOINT = re.compile(r"^checkpoint_(\d{6})\.pt$")  # trainables.gan.run_files names checkpoints so


def run_key(store: Store, key: str, attempt: str) -> str:
    return f"gans/{key}/a-{attempt}" if store.remote and attempt else f"gans/{key}"


def ensure_trained(store: Store, key: str, holder: str, train: Callable[[Path, Holding], dict],
                   heartbeat_s: float = HEARTBEAT_S) -> tuple[dict, str, bool]:
    """The done record of GAN `key`, training it under its lease if no attempt completed it yet ->
    (record, key of its run folder, trained by this call). A reused GAN's run is fetched into this node's
    scratch (checkpoints left out), outside the lease."""
    for _ in range(MAX_LEASE_LOSSES):
        try:
            with gan_lease(store, key, holder, store.local(f"gans/{key}.lock"), heartbeat_s) as lease:
                done = store.read_text(f"gans/{key}/{DONE}")
                if done is None:
                    run = run_key(store, key, lease.attempt)
                    seed_checkpoints(store, key, run)
                    record, won = complete(store, key, run, lease, train(store.local(run), lease))
                    if won:
                        return record, run, True
                    done = json.dumps(record)
            return reuse(store, key, json.loads(done))
        except LeaseLost as exc:
            warn(f"{exc}; asking for the lease again")
    raise LeaseLost(f"GAN {key}: the lease was lost {MAX_LEASE_LOSSES} times; is the lease service restarting "
                    f"over and over, or the lease TTL shorter than a store write?")


def complete(store: Store, key: str, run: str, lease: Holding, info: dict) -> tuple[dict, bool]:
    """Publish the attempt's folder, then done.json (only if absent) -> (the record that counts, ours won)."""
    record = {**info, "attempt": lease.attempt, "run": run}
    lease.check("publishing the GAN run")
    store.publish(run)
    lease.check("writing done.json")
    if not store.write_text(f"gans/{key}/{DONE}", json.dumps(record, default=float), if_absent=True):
        text = store.read_text(f"gans/{key}/{DONE}")  # an attempt fenced off late completed first: it counts
        return json.loads(text or "{}"), False
    drop_other_attempts(store, key, run)
    return record, True


def reuse(store: Store, key: str, done: dict) -> tuple[dict, str, bool]:
    """A completed GAN: its run folder (the one done.json names) into this node's scratch, .pt files left out."""
    run = str(done.get("run") or f"gans/{key}")  # records from before attempt folders: the key's folder
    if run != f"gans/{key}" and not run.startswith(f"gans/{key}/a-"):
        raise StoreError(f"gans/{key}/{DONE} names the run folder {run!r}, not one of this key's")
    if done.get("status") == "ok" and store.remote:
        with node_lock(store.local(f"gans/{key}.fetch.lock")):
            store.fetch(run, skip_suffixes=(".pt",))
            touch_used(store.local(run))
    return done, run, False


def seed_checkpoints(store: Store, key: str, run: str) -> None:
    """Remote: the newest checkpoint any earlier attempt of this key published, into this attempt's folder."""
    if not store.remote:
        return
    best: tuple[int, str] | None = None
    for o in store.list(f"gans/{key}"):
        parts = o.key.split("/")  # gans, <key>, a-<attempt>, checkpoints, checkpoint_000010.pt
        m = CHECKPOINT.match(parts[-1]) if len(parts) == 5 and parts[3] == "checkpoints" else None
        if m and parts[2].startswith("a-") and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), o.key)
    if best is None:
        return
    src = store.fetch(best[1])
    dest = store.local(f"{run}/checkpoints/{Path(best[1]).name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    print(f"GAN {key}: attempt {run.rsplit('-', 1)[-1]} resumes from epoch {best[0]} ({store.uri(best[1])})",
          flush=True)


def drop_other_attempts(store: Store, key: str, run: str) -> None:
    """After done.json: every other attempt's files of this key, in the store and in this node's scratch."""
    if not store.remote:
        return
    mine = run.split("/")[-1]
    try:
        store.delete_keys([o.key for o in store.list(f"gans/{key}")
                           if len(o.key.split("/")) > 3 and o.key.split("/")[2].startswith("a-")
                           and o.key.split("/")[2] != mine])
    except (StoreError, OSError) as exc:  # done.json names the winner: leftovers are only disk
        warn(f"GAN {key}: earlier attempts' files not all deleted ({exc})")
    for d in store.local(f"gans/{key}").glob("a-*"):
        if d.name != mine and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
