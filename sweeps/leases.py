"""One training lease per GAN key across the cluster, and a fence: "train each GAN config once, reuse it".

Local storage keeps a file lock in the sweep's folder (one machine, or a shared POSIX file system); the lock
dies with its process, so it never needs a fence. Remote storage (no shared file system; flock does not work
on object stores) uses a named, detached Ray actor pinned to the driver's node:

- `acquire(key, holder)` grants the key to one holder at a time, as a fresh attempt id (random, so ids never
  repeat, even across restarts of the service). The holder's files go to gans/<key>/a-<attempt>/ and
  done.json names the attempt (sweeps.gan_runs), so the files of a holder that was fenced off never mix with
  the next one's. A retry of the same trial (same holder id) takes the key back at once, as a new attempt.
- The holder renews every heartbeat. `renew` answers False once the key went to another attempt; a lease
  not renewed for one TTL (its node died) is granted to the next asker.
- The holder's side (`Holding`) counts its lease valid until the send time of its last successful renewal +
  TTL - one heartbeat, on its own monotonic clock: it stops (`check` raises LeaseLost) before the service could
  grant the key again, and before publishing anything once a renewal answered False.
- A restarted service (max_restarts=-1; its memory is empty) grants nothing for one TTL: a holder from before
  the restart renews within that time and is adopted with its attempt, so no key is ever granted twice.
- Every clock is monotonic: a wall-clock step (NTP) neither expires nor prolongs a lease.
The TTL and the heartbeat are sweep settings (lease_ttl_s, lease_heartbeat_s), so tests run them in seconds.
Completion is recorded in the store (gans/<key>/done.json), not in the actor.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
import uuid
from pathlib import Path

LEASE_TTL_S = 30.0  # a holder silent this long is taken for dead
HEARTBEAT_S = 5.0  # renewal period of a holder (at most a quarter of the TTL is used)
POLL_S = 1.0  # a waiter asks again this often
NAMESPACE = "ganaug"


class LeaseLost(RuntimeError):
    """A GAN lease this process held went to another attempt, or could not be renewed in time."""


def _reconstructed() -> bool:
    """True inside a Ray actor that was restarted after a crash (its memory is empty)."""
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:
        return False


class _Leases:
    def __init__(self, ttl_s: float = LEASE_TTL_S, restarted: bool | None = None):
        self.ttl = float(ttl_s)
        restarted = _reconstructed() if restarted is None else restarted
        self.quiet_until = time.monotonic() + (self.ttl if restarted else 0.0)  # grant nothing before it
        self.held: dict[str, tuple[str, str, float]] = {}  # key -> (holder, attempt, last renewal)
        self.granted: dict[str, int] = {}  # key -> leases granted (a test counts retrainings)

    def acquire(self, key: str, holder: str) -> dict | None:
        """-> {"attempt", "ttl_s"} when `holder` may train `key` now, else None."""
        now = time.monotonic()
        h = self.held.get(key)
        if h is None and now < self.quiet_until:  # restarted: a holder from before may still be training
            return None
        if h is None or h[0] == holder or now - h[2] > self.ttl:
            attempt = uuid.uuid4().hex[:12]
            self.held[key] = (holder, attempt, now)
            self.granted[key] = self.granted.get(key, 0) + (h is None or h[0] != holder)
            return {"attempt": attempt, "ttl_s": self.ttl}
        return None

    def renew(self, key: str, holder: str, attempt: str) -> bool:
        now = time.monotonic()
        h = self.held.get(key)
        if h is None and now < self.quiet_until:  # a holder from before the restart: adopted, same attempt
            self.held[key] = (holder, attempt, now)
            self.granted[key] = self.granted.get(key, 0) + 1
            return True
        if h is None or h[:2] != (holder, attempt):
            return False
        self.held[key] = (holder, attempt, now)
        return True

    def release(self, key: str, holder: str, attempt: str = "") -> None:
        h = self.held.get(key)
        if h is not None and h[0] == holder and (not attempt or h[1] == attempt):
            del self.held[key]

    def counts(self) -> dict[str, int]:
        return dict(self.granted)


class Holding:
    """The holder's side of a grant: `valid()` while renewed in time; `check(doing)` raises LeaseLost when not.
    renew=None: a lock that cannot be taken over (local storage): always valid."""

    def __init__(self, key: str, holder: str, attempt: str, ttl_s: float = math.inf,
                 heartbeat_s: float = HEARTBEAT_S, renew=None, sent_at: float | None = None):
        self.key, self.holder, self.attempt = key, holder, attempt
        self.ttl_s, self.heartbeat_s, self.renew = ttl_s, heartbeat_s, renew
        self.deadline = math.inf if renew is None else (time.monotonic() if sent_at is None else sent_at) + ttl_s
        self.lost = threading.Event()
        self.reason = ""

    def beat(self) -> None:
        """One renewal: extends the deadline, or marks the lease lost when the service says it is not ours."""
        if self.renew is None:
            return
        sent = time.monotonic()
        try:
            ok = self.renew()
        except Exception as exc:  # the service restarting, a timeout: the deadline is not extended
            self.reason = f"renewal failed ({type(exc).__name__})"
            return
        if ok:
            self.deadline = sent + self.ttl_s
        else:
            self.reason = "the lease service gave the key to another attempt"
            self.lost.set()

    def valid(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self.deadline - self.heartbeat_s

    def check(self, doing: str) -> None:
        if not self.valid():
            why = self.reason or f"not renewed within {self.ttl_s:g} s"
            raise LeaseLost(f"GAN {self.key}: the lease of attempt {self.attempt} is lost ({why}); {doing} stopped")


def actor_name(store_root: str) -> str:
    return "gan-leases-" + hashlib.sha256(store_root.encode()).hexdigest()[:12]


def start_leases(store_root: str, ttl_s: float = LEASE_TTL_S):
    """Driver: the sweep's lease actor (created on this node, or the running one of a resumed sweep)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    cls = ray.remote(num_cpus=0, max_restarts=-1)(_Leases)
    return cls.options(name=actor_name(store_root), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                       scheduling_strategy=here).remote(ttl_s)


def stop_leases(store_root: str) -> None:
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(actor_name(store_root), namespace=NAMESPACE))


def _grant(actor, key: str, holder: str) -> tuple[dict, float]:
    """Wait for the key's lease -> (grant, monotonic time the granting request was sent)."""
    import ray

    while True:
        sent = time.monotonic()
        try:
            grant = ray.get(actor.acquire.remote(key, holder))
        except Exception:  # the service is restarting: ask again
            grant = None
        if grant is not None:
            return grant, sent
        time.sleep(POLL_S)


@contextlib.contextmanager
def gan_lease(store, key: str, holder: str, lock_file: Path, heartbeat_s: float = HEARTBEAT_S):
    """Hold the key's lease for the body -> a Holding: a file lock (local storage) or a grant of the sweep's
    lease actor (remote), renewed from a thread until the body ends."""
    if not store.remote:
        from sweeps.artifacts import node_lock

        with node_lock(lock_file):
            yield Holding(key, holder, "")
        return
    import ray

    actor = ray.get_actor(actor_name(store.root), namespace=NAMESPACE)
    grant, sent = _grant(actor, key, holder)
    ttl, attempt = float(grant["ttl_s"]), str(grant["attempt"])
    beat_s = min(heartbeat_s, ttl / 4)
    holding = Holding(key, holder, attempt, ttl, beat_s, sent_at=sent,
                      renew=lambda: ray.get(actor.renew.remote(key, holder, attempt), timeout=beat_s))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(beat_s) and not holding.lost.is_set():
            holding.beat()

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        yield holding
    finally:
        stop.set()
        t.join(timeout=beat_s + 1)
        if not holding.lost.is_set():
            with contextlib.suppress(Exception):
                ray.get(actor.release.remote(key, holder, attempt), timeout=10)
