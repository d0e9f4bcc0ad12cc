"""What a Ray cluster can grow to, and how many of a sweep's trials fit it at once.

    from sweeps.capacity import Capacity
    cap = Capacity.from_autoscaler_config(yaml.safe_load(open("cluster.yaml")))  # offline: no Ray needed
    cap.max_trials(cfg), cap.unschedulable(cfg)     # trials at once at the largest size; why none could ever run

Counting the resources present at start-up undercounts an autoscaling cluster: with 0 GPU workers up it says
"1 trial", the autoscaler adds one GPU node for it, and the sweep runs its trials one by one. So on a cluster
(`--address`) the sweep reads what the autoscaler may launch (`read_cluster_capacity`, in this order):
  1. ~/ray_bootstrap_config.yaml on the head: `ray up` writes the prepared cluster config there (node types with
     resources filled in from the instance type, their max_workers, the global max_workers) and the head's
     autoscaler runs from it (`ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml`, cluster.yaml;
     Tune's own "is this a cluster" check looks for the same file). Read on the head by a tiny task when the
     driver runs elsewhere;
  2. the cluster config in the GCS (ray._private.state.state.get_cluster_config(): node groups with max counts
     and cluster-wide maxima), which platforms running the autoscaler outside the head publish; Ray Train V2
     checks worker groups against it too;
  3. else the nodes present now (a fixed cluster: nothing will be added).
Placement modelled: a single-process trial is one bundle {CPU, GPU} on one node (Tune's placement group); a
--workers-per-trial N trial is the Tune trial's own 0.25-CPU bundle plus the TorchTrainer's placement group of N
worker bundles, whose strategy (ScalingConfig's default, PACK) packs them when it can but lets each worker sit
on its own node, so only a worker, not the whole trial, must fit one node.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DDP_TRIAL_CPU = 0.25  # what a --workers-per-trial N > 1 trial's own (coordinating) process reserves
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` leaves the autoscaler's config on the head
HEAD_RESOURCE = "node:__internal_head__"  # the resource only the head node has (ray._common.constants)
UNBOUNDED_NODES = 64  # a node group without a maximum (max_count -1) counts as this many nodes
EPS = 1e-9


@dataclass(frozen=True)
class NodeGroup:
    name: str
    resources: Mapping[str, float]  # what one node of the group offers ("CPU", "GPU", ...)
    max_count: int  # nodes of this group the cluster can hold at once
    fixed: bool = False  # always there (the head, nodes of a fixed cluster): not counted against max_added


@dataclass(frozen=True)
class Capacity:
    groups: tuple[NodeGroup, ...]
    source: str  # where this shape came from (printed with the concurrency it gives)
    max_added: int | None = None  # nodes the autoscaler may add across all non-fixed groups (None: no cap)
    max_resources: Mapping[str, float] = field(default_factory=dict)  # cluster-wide caps per resource
    autoscaling: bool = False  # True: the groups are what an autoscaler may grow to, not what exists now

    # ------------------------------------------------------------------ building
    @classmethod
    def from_nodes(cls, nodes: list[Mapping[str, float]], source: str = "the nodes present now") -> "Capacity":
        """A fixed set of nodes (resource dicts, e.g. from ray.nodes() or this machine)."""
        return cls(tuple(NodeGroup(f"node {i + 1}" if len(nodes) > 1 else "node", _numbers(n), 1, fixed=True)
                         for i, n in enumerate(nodes)), source)

    @classmethod
    def from_autoscaler_config(cls, conf: Mapping[str, Any],
                               source: str = f"the autoscaler's config ({BOOTSTRAP_CONFIG})") -> "Capacity":
        """A Ray cluster-launcher config (cluster.yaml, or the head's prepared ~/ray_bootstrap_config.yaml): the
        head node, plus up to max_workers nodes of each type, at most the global max_workers in all."""
        types = conf.get("available_node_types") if isinstance(conf, Mapping) else None
        if not isinstance(types, Mapping) or not types:
            raise ValueError("the autoscaler config has no available_node_types")
        head, total = conf.get("head_node_type"), conf.get("max_workers")
        groups = []
        for name, t in types.items():
            if not isinstance(t, Mapping) or not isinstance(t.get("resources"), Mapping):
                raise ValueError(f"node type {name!r} of the autoscaler config has no resources (Ray fills them "
                                 "in from the instance type on `ray up`; give resources: {CPU: .., GPU: ..})")
            res = _numbers(t["resources"])
            if name == head:
                groups.append(NodeGroup(f"{name} (head)", res, 1, fixed=True))
            n = int(t.get("max_workers", total if total is not None else 0))
            if n != 0:
                groups.append(NodeGroup(name, res, UNBOUNDED_NODES if n < 0 else n))
        return cls(tuple(groups), source, None if total is None else int(total), autoscaling=True)

    @classmethod
    def from_cluster_config(cls, node_groups: list[Mapping[str, Any]], max_resources: Mapping[str, float],
                            head: Mapping[str, float] | None,
                            source: str = "the cluster config in the GCS") -> "Capacity":
        """The GCS's ClusterConfig as dicts ({"name", "resources", "max_count"}; max_count -1 = no maximum),
        plus the head node as it is now."""
        groups = [NodeGroup("head", _numbers(head), 1, fixed=True)] if head else []
        for g in node_groups:
            n = int(g.get("max_count", 0))
            if n != 0:
                groups.append(NodeGroup(str(g.get("name") or "group"), _numbers(g.get("resources", {})),
                                        UNBOUNDED_NODES if n < 0 else n))
        return cls(tuple(groups), source, max_resources=_numbers(max_resources), autoscaling=True)

    # ------------------------------------------------------------------ questions
    def max_trials(self, cfg) -> int:
        """Trials of cfg that can run at once when the cluster is at its largest (for this trial's shape)."""
        worker, n, coord = trial_bundles(cfg)
        if n == 1:
            nodes = self._largest_cluster(lambda r: (_count(r, worker), 0.0))
            t = sum(_count(x, worker) for x in nodes)
        else:
            nodes = self._largest_cluster(lambda r: (_count(r, worker), r.get("CPU", 0.0)))
            t = _ddp_trials(nodes, worker, n, coord)
        whole = whole_trial(cfg)
        for k, cap in self.max_resources.items():
            if whole.get(k, 0.0) > 0 and cap > 0:
                t = min(t, math.floor(cap / whole[k] + EPS))
        return t

    def unschedulable(self, cfg) -> str | None:
        """Why no trial of cfg could ever start here (a message naming what it asks and what the nodes offer),
        or None when at least one can."""
        worker, n, _ = trial_bundles(cfg)
        if self.max_trials(cfg) >= 1:
            return None
        asks = (f"cpus_per_trial={cfg.cpus_per_trial:g}, gpus_per_trial={cfg.gpus_per_trial:g}, "
                f"workers_per_trial={cfg.workers_per_trial}")
        fix = ("Lower --cpus-per-trial / --gpus-per-trial (0 = CPU) or --workers-per-trial, or "
               + ("add a node type that has them to the cluster config (cluster.yaml)" if self.autoscaling else
                  "run on a machine or cluster (--address auto) that has them"))
        reachable = [g for g in self.groups if g.max_count > 0 and (g.fixed or self.max_added != 0)]
        if not any(_count(g.resources, worker) >= 1 for g in reachable):
            what = "a trial worker needs" if n > 1 else "a trial needs"
            return (f"{what} {_fmt(worker)} on one node ({asks}) but {self._largest_text(reachable)}: no trial could "
                    f"ever start. {fix}")
        return (f"a trial needs {n} workers of {_fmt(worker)} (each on any node) plus {DDP_TRIAL_CPU:g} CPU for its "
                f"own process, {_fmt(whole_trial(cfg))} in all ({asks}), but {self.where()} can never hold that at "
                f"once ({self.summary()}): no trial could ever start. {fix}")

    def where(self) -> str:
        return "the cluster at its largest" if self.autoscaling else "these nodes"

    def summary(self) -> str:
        """One line: each group's node resources and how many of it there can be."""
        parts = [f"{g.name}: {_fmt_node(g.resources)}" + ("" if g.fixed and g.max_count == 1 else f" x{g.max_count}")
                 for g in self.groups]
        if self.max_added is not None:
            parts.append(f"at most {self.max_added} worker node(s) in all")
        return "; ".join(parts) or "no nodes"

    # ------------------------------------------------------------------ internals
    def _largest_text(self, groups: list[NodeGroup]) -> str:
        if not groups:
            return f"{self.source} offers no node at all"
        big = max(groups, key=lambda g: (g.resources.get("GPU", 0.0), g.resources.get("CPU", 0.0)))
        kind = "node type" if self.autoscaling else "node"
        return (f"the largest {kind} ({big.name}) offers only {_fmt_node(big.resources)} "
                f"[{self.summary()}; from {self.source}]")

    def _largest_cluster(self, value) -> list[Mapping[str, float]]:
        """The nodes of the cluster at its largest: every fixed node, then the most valuable groups' nodes up
        to each group's maximum and max_added in all."""
        nodes = [g.resources for g in self.groups if g.fixed for _ in range(min(g.max_count, UNBOUNDED_NODES))]
        budget = self.max_added if self.max_added is not None else math.inf
        for g in sorted((g for g in self.groups if not g.fixed), key=lambda g: value(g.resources), reverse=True):
            take = int(min(g.max_count, budget))
            nodes += [g.resources] * take
            budget -= take
        return nodes


def trial_bundles(cfg) -> tuple[dict[str, float], int, dict[str, float] | None]:
    """(one worker's bundle, workers, the coordinating bundle or None): a single-process trial is one worker."""
    worker = {"CPU": float(cfg.cpus_per_trial), "GPU": float(cfg.gpus_per_trial)}
    n = int(cfg.workers_per_trial)
    return worker, n, ({"CPU": DDP_TRIAL_CPU} if n > 1 else None)


def whole_trial(cfg) -> dict[str, float]:
    """All a trial holds at once, over every node it uses."""
    worker, n, coord = trial_bundles(cfg)
    total = {k: n * v for k, v in worker.items()}
    for k, v in (coord or {}).items():
        total[k] = total.get(k, 0.0) + v
    return total


def choose_concurrency(cfg, cap: Capacity) -> tuple[int, str]:
    """(trials at once, where that number came from): --max-concurrent if given, else what `cap` can hold at
    its largest (at least 1: a sweep that cannot fit is refused before this, by unschedulable)."""
    if cfg.max_concurrent:
        return int(cfg.max_concurrent), "--max-concurrent"
    n = max(1, cap.max_trials(cfg))
    return n, f"{cap.source}, which {'can grow to' if cap.autoscaling else 'has'} {cap.summary()}"


def _numbers(res: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (res or {}).items() if isinstance(v, (int, float))}


def _fmt(res: Mapping[str, float]) -> str:
    """"CPU 8, GPU 1"; a request's GPU 0 is left out, a node's is said."""
    return ", ".join(f"{k} {res.get(k, 0.0):g}" for k in ("CPU", "GPU") if k == "CPU" or res.get(k, 0.0) > 0)


def _fmt_node(res: Mapping[str, float]) -> str:
    return f"CPU {res.get('CPU', 0.0):g}, GPU {res.get('GPU', 0.0):g}"


def _count(node: Mapping[str, float], need: Mapping[str, float]) -> int:
    """How many bundles `need` fit on a node with `node` resources."""
    return min((math.floor((node.get(k, 0.0) + EPS) / v) for k, v in need.items() if v > 0), default=0)


def _minus(node: Mapping[str, float], need: Mapping[str, float], k: int) -> dict[str, float]:
    return {r: node.get(r, 0.0) - k * need.get(r, 0.0) for r in set(node) | set(need)}


def _ddp_fits(nodes: list[Mapping[str, float]], worker, n: int, coord, t: int) -> bool:
    """Can t trials (t * n worker bundles and t coordinating bundles) be placed on `nodes`? Start from as many
    workers as each node holds, then give up spare worker places where that frees the most coordinator room."""
    w = [_count(x, worker) for x in nodes]
    spare = sum(w) - t * n
    if spare < 0:
        return False
    room = [_count(_minus(x, worker, k), coord) for x, k in zip(nodes, w)]
    while sum(room) < t and spare > 0:
        gain, i = max(((_count(_minus(x, worker, w[j] - 1), coord) - room[j], j)
                       for j, x in enumerate(nodes) if w[j] > 0), default=(0, -1))
        if gain <= 0:
            break
        w[i], room[i], spare = w[i] - 1, room[i] + gain, spare - 1
    return sum(room) >= t


def _ddp_trials(nodes: list[Mapping[str, float]], worker, n: int, coord) -> int:
    """The most DDP trials that fit `nodes` at once (binary search: if t fit, fewer fit too)."""
    lo, hi = 0, sum(_count(x, worker) for x in nodes) // n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _ddp_fits(nodes, worker, n, coord, mid) else (lo, mid - 1)
    return lo


# ---------------------------------------------------------------------- reading a live cluster (Ray connected)

def load_config_text(text: str) -> dict:
    """The bootstrap config: JSON written by `ray up` (a YAML file by name); YAML accepted too."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml

        return yaml.safe_load(text)


def _read_text(path: str) -> str | None:
    p = Path(path).expanduser()
    return p.read_text() if p.is_file() else None


def head_bootstrap_text(timeout_s: float = 60.0) -> str | None:
    """~/ray_bootstrap_config.yaml of the head node: read here when this driver runs on the head (ray submit,
    ray exec, Ray Jobs), else by a zero-CPU task pinned to the head."""
    import ray

    heads = [n for n in ray.nodes() if n.get("Alive") and HEAD_RESOURCE in n.get("Resources", {})]
    if not heads or heads[0].get("NodeID") == _driver_node_id():
        return _read_text(BOOTSTRAP_CONFIG)
    def read_on_head(path: str) -> str | None:  # nested: pickled by value, so the head needs no checkout of ours
        import os

        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return f.read()

    task = ray.remote(num_cpus=0, resources={HEAD_RESOURCE: 0.001}, max_retries=0)(read_on_head)
    return ray.get(task.remote(BOOTSTRAP_CONFIG), timeout=timeout_s)


def _driver_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def gcs_cluster_config() -> tuple[list[dict], dict] | None:
    """The GCS's ClusterConfig as (node groups, max resources), or None when nobody published one."""
    from ray._private.state import state

    conf = state.get_cluster_config()
    if conf is None or not conf.node_group_configs:
        return None
    groups = [{"name": g.name, "resources": dict(g.resources), "max_count": g.max_count}
              for g in conf.node_group_configs]
    return groups, dict(conf.max_resources)


def alive_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def read_cluster_capacity(say=print) -> Capacity:
    """What the connected cluster can grow to: the head's autoscaler config, else the GCS's cluster config,
    else the nodes present now. A source that cannot be read or parsed is skipped with a note through `say`."""
    try:
        text = head_bootstrap_text()
        if text:
            return Capacity.from_autoscaler_config(load_config_text(text),
                                                   source=f"the autoscaler's config on the head ({BOOTSTRAP_CONFIG})")
    except Exception as exc:  # noqa: BLE001 - a broken source is skipped, and said
        say(f"note: could not use {BOOTSTRAP_CONFIG} on the head ({type(exc).__name__}: {exc})")
    try:
        gcs = gcs_cluster_config()
        if gcs:
            # the head exists whatever the groups say; should a group list it too, it counts once more, which
            # can only raise the concurrency by the head's share, never make an impossible trial look possible
            head = next((n for n in alive_nodes() if HEAD_RESOURCE in n), None)
            return Capacity.from_cluster_config(gcs[0], gcs[1], head)
    except Exception as exc:  # noqa: BLE001
        say(f"note: could not read the GCS cluster config ({type(exc).__name__}: {exc})")
    return Capacity.from_nodes(alive_nodes(), source="the nodes present now (no autoscaler config found: a fixed "
                                                     "cluster)")
