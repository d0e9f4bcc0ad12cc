"""One training lease per GAN key across the cluster: "train each GAN config once, reuse it for every ratio".

Local storage keeps a file lock in the sweep's folder (one machine, or a shared POSIX file system). Remote
storage (no shared file system; flock does not work on object stores) uses a named, detached Ray actor,
pinned to the driver's node and started by the driver: `acquire(key, holder)` grants the key to one holder at
a time; the holder renews it from a heartbeat thread while it trains, and a lease not renewed for LEASE_TTL_S
(its node died) is granted to the next asker. A retry of the same trial (same holder id) takes its own lease
back at once. Completion is recorded in the store (gans/<key>/done.json), not in the actor, so a restarted
actor or a resumed sweep loses nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from pathlib import Path

LEASE_TTL_S = 30.0  # a holder silent this long is taken for dead
HEARTBEAT_S = 5.0
POLL_S = 1.0
NAMESPACE = "ganaug"


class _Leases:
    def __init__(self):
        self.held: dict[str, tuple[str, float]] = {}  # key -> (holder, last renewal)
        self.granted: dict[str, int] = {}  # key -> leases granted (a test counts retrainings)

    def acquire(self, key: str, holder: str, ttl: float) -> bool:
        now = time.time()
        h = self.held.get(key)
        if h is None or h[0] == holder or now - h[1] > ttl:
            self.held[key] = (holder, now)
            self.granted[key] = self.granted.get(key, 0) + (h is None or h[0] != holder)
            return True
        return False

    def renew(self, key: str, holder: str) -> bool:
        if self.held.get(key, ("",))[0] != holder:
            return False
        self.held[key] = (holder, time.time())
        return True

    def release(self, key: str, holder: str) -> None:
        if self.held.get(key, ("",))[0] == holder:
            del self.held[key]

    def counts(self) -> dict[str, int]:
        return dict(self.granted)


def actor_name(store_root: str) -> str:
    return "gan-leases-" + hashlib.sha256(store_root.encode()).hexdigest()[:12]


def start_leases(store_root: str):
    """Driver: the sweep's lease actor (created on this node, or the running one of a resumed sweep)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    cls = ray.remote(num_cpus=0, max_restarts=-1)(_Leases)
    return cls.options(name=actor_name(store_root), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                       scheduling_strategy=here).remote()


def stop_leases(store_root: str) -> None:
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(actor_name(store_root), namespace=NAMESPACE))


@contextlib.contextmanager
def gan_lease(store, key: str, holder: str, lock_file: Path):
    """Hold the key's lease for the body: a file lock (local storage) or the sweep's lease actor (remote)."""
    if not store.remote:
        from sweeps.artifacts import node_lock

        with node_lock(lock_file):
            yield
        return
    import ray

    actor = ray.get_actor(actor_name(store.root), namespace=NAMESPACE)
    while not ray.get(actor.acquire.remote(key, holder, LEASE_TTL_S)):
        time.sleep(POLL_S)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                ray.get(actor.renew.remote(key, holder))

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=1)
        with contextlib.suppress(Exception):
            ray.get(actor.release.remote(key, holder))
