"""Concurrency from what the cluster can grow to, and trials no node type can ever hold refused up front
(sweeps/capacity.py, sweeps/plan.py): pure functions on autoscaler-config dicts, the live readers on a local Ray,
and the command exiting 2 at once instead of waiting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps.capacity import Capacity, choose_concurrency
from sweeps.config import SweepConfig

ROOT = Path(__file__).resolve().parents[1]


def autoscaler_config(worker: dict, max_workers: int, head: dict | None = None, total: int | None = None) -> dict:
    """A cluster-launcher config as ~/ray_bootstrap_config.yaml holds it: a head type and one worker type."""
    conf = {"head_node_type": "head",
            "available_node_types": {"head": {"resources": head or {"CPU": 4}, "min_workers": 0, "max_workers": 0},
                                     "worker": {"resources": worker, "min_workers": 0, "max_workers": max_workers}}}
    if total is not None:
        conf["max_workers"] = total
    return conf


def test_cpu_only_cluster_refuses_a_gpu_trial_naming_what_it_asks_and_what_the_largest_node_offers():
    cap = Capacity.from_autoscaler_config(autoscaler_config({"CPU": 16}, 10))
    why = cap.unschedulable(SweepConfig(gpus_per_trial=1))
    assert why is not None and "no trial could ever start" in why
    assert "needs CPU 1, GPU 1 on one node" in why
    assert "largest node type (worker) offers only CPU 16, GPU 0" in why
    assert cap.max_trials(SweepConfig(gpus_per_trial=1)) == 0
    # the same cluster takes CPU trials: the head's 4 CPUs and 10 workers of 16
    assert cap.unschedulable(SweepConfig(cpus_per_trial=2)) is None
    assert cap.max_trials(SweepConfig(cpus_per_trial=2)) == 2 + 10 * 8
    # a trial bigger than every node type is refused too, even on CPUs alone
    assert "offers only CPU 16" in cap.unschedulable(SweepConfig(cpus_per_trial=32))


def test_concurrency_counts_the_gpu_workers_the_autoscaler_may_add_not_the_ones_up_now():
    conf = autoscaler_config({"CPU": 8, "GPU": 1}, 4)  # no GPU worker is up yet: only the head runs
    cap = Capacity.from_autoscaler_config(conf)
    now = Capacity.from_nodes([{"CPU": 4.0, "GPU": 0.0}])
    one_gpu = SweepConfig(gpus_per_trial=1)
    assert choose_concurrency(one_gpu, cap)[0] == 4
    assert cap.max_trials(SweepConfig(gpus_per_trial=0.25)) == 16  # 4 fractional trials per GPU
    assert now.unschedulable(one_gpu) is not None  # a fixed cluster of just this head could never run it
    # the global max_workers caps the worker types' own maxima
    assert Capacity.from_autoscaler_config({**conf, "max_workers": 2}).max_trials(one_gpu) == 2
    # --max-concurrent wins, and the source says so; otherwise the source names the autoscaler's config
    n, source = choose_concurrency(SweepConfig(gpus_per_trial=1, max_concurrent=3), cap)
    assert (n, source) == (3, "--max-concurrent")
    assert "autoscaler's config" in choose_concurrency(one_gpu, cap)[1] and "x4" in cap.summary()
    # the shipped cluster.yaml is such a cluster: 4 one-GPU workers behind a CPU head
    shipped = Capacity.from_autoscaler_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    assert shipped.max_trials(one_gpu) == 4 and shipped.max_trials(SweepConfig(gpus_per_trial=0.25)) == 16


def test_ddp_workers_each_need_a_node_not_the_whole_trial():
    """2 workers x 1 GPU: no node has 2 GPUs, but PACK lets each worker take its own 1-GPU node."""
    ddp = SweepConfig(workers_per_trial=2, gpus_per_trial=1, cpus_per_trial=2)
    two = Capacity.from_autoscaler_config(autoscaler_config({"CPU": 8, "GPU": 1}, 2))
    assert two.unschedulable(ddp) is None and two.max_trials(ddp) == 1
    assert Capacity.from_autoscaler_config(autoscaler_config({"CPU": 8, "GPU": 1}, 5)).max_trials(ddp) == 2
    one = Capacity.from_autoscaler_config(autoscaler_config({"CPU": 8, "GPU": 1}, 1))
    why = one.unschedulable(ddp)
    assert why is not None and "2 workers of CPU 2, GPU 1" in why and "CPU 4.25, GPU 2 in all" in why
    # a worker too big for every node type is named as the worker's need
    assert "a trial worker needs CPU 16, GPU 1" in two.unschedulable(
        SweepConfig(workers_per_trial=2, gpus_per_trial=1, cpus_per_trial=16))


def test_ddp_packing_leaves_room_for_the_trials_own_process():
    """Each trial also holds 0.25 CPU for itself: 2 workers x 1 CPU fit two 2-CPU nodes once (one node gives up
    a worker place to it), never one 2-CPU node; four such nodes hold 3 trials (6 workers + 3 x 0.25 CPU)."""
    ddp = SweepConfig(workers_per_trial=2, cpus_per_trial=1)
    node = {"CPU": 2.0, "GPU": 0.0}
    assert Capacity.from_nodes([node]).max_trials(ddp) == 0
    assert Capacity.from_nodes([node, node]).max_trials(ddp) == 1
    assert Capacity.from_nodes([node] * 4).max_trials(ddp) == 3
    assert Capacity.from_nodes([{"CPU": 2.25}]).max_trials(ddp) == 1


def test_gcs_cluster_config_groups_and_cluster_wide_maxima():
    groups = [{"name": "gpu", "resources": {"CPU": 8, "GPU": 1}, "max_count": 6},
              {"name": "cpu", "resources": {"CPU": 4}, "max_count": -1}]
    cap = Capacity.from_cluster_config(groups, {"GPU": 3}, head={"CPU": 2.0})
    assert cap.max_trials(SweepConfig(gpus_per_trial=1)) == 3  # 6 GPU nodes, but at most 3 GPUs in all
    assert cap.max_trials(SweepConfig(cpus_per_trial=4)) > 6  # the unbounded CPU group counts many nodes


@pytest.fixture
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


def test_probe_reads_the_heads_bootstrap_config_here_or_through_a_task_on_the_head(local_ray, tmp_path,
                                                                                   monkeypatch):
    from sweeps import capacity
    from sweeps.plan import probe

    cfg = SweepConfig(address="auto", gpus_per_trial=1)
    monkeypatch.setattr(capacity, "BOOTSTRAP_CONFIG", str(tmp_path / "ray_bootstrap_config.yaml"))
    fixed = probe(cfg)  # no autoscaler config anywhere: the nodes present now, a fixed cluster
    assert not fixed.autoscaling and "present now" in fixed.source and fixed.unschedulable(cfg) is not None
    (tmp_path / "ray_bootstrap_config.yaml").write_text(json.dumps(autoscaler_config({"CPU": 8, "GPU": 1}, 3)))
    grown = probe(cfg)
    assert grown.autoscaling and "ray_bootstrap_config" in grown.source and grown.max_trials(cfg) == 3
    # a driver that is not on the head reads the file there, through a zero-CPU task pinned to the head
    monkeypatch.setattr(capacity, "_driver_node_id", lambda: "not-the-head")
    assert probe(cfg).max_trials(cfg) == 3
    # a config Ray could not have written (no resources) is skipped with a note, not trusted
    (tmp_path / "ray_bootstrap_config.yaml").write_text(json.dumps({"available_node_types": {"w": {}}}))
    notes = []
    assert not capacity.read_cluster_capacity(say=notes.append).autoscaling
    assert "has no resources" in notes[0]


def test_a_gpu_smoke_sweep_on_a_cpu_machine_exits_2_at_once_with_the_reason(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "CUDA_VISIBLE_DEVICES": ""}
    t = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "sweeps" / "augment_ratio.py"), "--smoke-test",
                        "--gpus-per-trial", "1", "--storage-path", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=180)
    took = time.time() - t
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "no trial could ever start" in p.stderr and "GPU 1" in p.stderr and "GPU 0" in p.stderr
    assert "Started a local Ray" not in p.stdout + p.stderr  # refused before Ray (and Tune) started
    assert not any(tmp_path.iterdir())  # nothing prepared either
    print(f"refused in {took:.1f} s")
