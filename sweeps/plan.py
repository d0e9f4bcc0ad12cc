"""What a sweep will do before it does it: trials per phase, GAN trainings, and whether its trials fit.

    python sweeps/augment_ratio.py --dry-run [--config FILE] [flags]   # prints this plan, starts nothing

A trial that no node can ever hold would wait PENDING forever (Ray's autoscaler only repeats "No available
node types can fulfill resource request"); the sweep refuses such a config up front instead (exit 2).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from data_prep.errors import ConfigError
from sweeps.config import SweepConfig

DDP_TRIAL_CPU = 0.25  # what a --workers-per-trial N > 1 trial's own (coordinating) process reserves


def trial_resources(cfg: SweepConfig) -> dict[str, float]:
    """Resources one trial holds at once: its own process, or N DDP workers plus a coordinating process."""
    n = cfg.workers_per_trial
    if n == 1:
        return {"CPU": cfg.cpus_per_trial, "GPU": cfg.gpus_per_trial}
    return {"CPU": n * cfg.cpus_per_trial + DDP_TRIAL_CPU, "GPU": n * cfg.gpus_per_trial}


def worker_bundle(cfg: SweepConfig) -> dict[str, float]:
    """The largest single piece of a trial that must land on one node (a DDP worker may sit on another node)."""
    return {"CPU": cfg.cpus_per_trial, "GPU": cfg.gpus_per_trial}


def local_node() -> dict[str, float]:
    """What a local Ray started by the sweep will have: this machine's CPUs and visible CUDA GPUs."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # no torch / broken driver: no GPUs
        gpus = 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def unschedulable(cfg: SweepConfig, nodes: list[dict[str, float]]) -> str | None:
    """Why no trial of cfg can ever run on these nodes (resource dicts), or None when one can."""
    need = worker_bundle(cfg) if cfg.workers_per_trial > 1 else trial_resources(cfg)
    if any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items() if v > 0) for node in nodes):
        if cfg.workers_per_trial == 1:
            return None
        total = {k: sum(n.get(k, 0.0) for n in nodes) for k in ("CPU", "GPU")}
        whole = trial_resources(cfg)
        if all(total[k] + 1e-9 >= v for k, v in whole.items() if v > 0):
            return None
        need = whole
    have = "; ".join(", ".join(f"{k} {v:g}" for k, v in sorted(n.items()) if k in ("CPU", "GPU")) for n in nodes)
    want = ", ".join(f"{k} {v:g}" for k, v in need.items() if v > 0)
    return (f"a trial needs {want} (cpus_per_trial={cfg.cpus_per_trial:g}, gpus_per_trial={cfg.gpus_per_trial:g}, "
            f"workers_per_trial={cfg.workers_per_trial}) but the largest node has only [{have or 'nothing'}]: "
            "no trial could ever start. Lower --cpus-per-trial / --gpus-per-trial (0 = CPU), or run on a machine "
            "or cluster (--address auto) that has them")


@dataclass(frozen=True)
class Plan:
    search_trials: int
    search_gan_trainings_max: int  # at most: configs recur across trials and are trained once
    confirm_trials: int
    confirm_gan_trainings: int
    arms: int  # setups the confirm phase compares (controls + top-k GAN configs)
    lrs: int
    seeds: int

    def lines(self) -> list[str]:
        return [f"search : {self.search_trials} trial(s), at most {self.search_gan_trainings_max} GAN training(s) "
                "(a GAN config recurring across trials is trained once)",
                f"confirm: {self.confirm_trials} trial(s) = {self.arms} arm(s) x {self.lrs} classifier LR(s) x "
                f"{self.seeds} seed(s), up to {self.confirm_gan_trainings} GAN training(s) (each confirm seed trains its own; a mix one per loss)"]


def plan(cfg: SweepConfig) -> Plan:
    mix = "mix_losses" in cfg.mix_choices and len(cfg.gan_losses) > 1
    per_trial = len(cfg.gan_losses) if mix else 1  # a mix trains one GAN per loss
    arms = len(cfg.controls) + cfg.top_k
    confirm = arms * len(cfg.clf_lr_grid) * cfg.num_seeds
    return Plan(search_trials=cfg.num_samples, search_gan_trainings_max=cfg.num_samples * per_trial,
                confirm_trials=confirm, confirm_gan_trainings=cfg.top_k * cfg.num_seeds * per_trial, arms=arms,
                lrs=len(cfg.clf_lr_grid), seeds=cfg.num_seeds)


def describe(cfg: SweepConfig, nodes: list[dict[str, float]], where: str) -> str:
    """The dry run's text: resolved settings, the plan, and whether the trials fit `nodes`."""
    settings = [f"  {f.name:<26} {getattr(cfg, f.name)!r}" for f in fields(cfg)]
    p = plan(cfg)
    res = trial_resources(cfg)
    why = unschedulable(cfg, nodes)
    per_node = [min((n.get(k, 0.0) / v for k, v in res.items() if v > 0), default=0.0) for n in nodes]
    fit = (f"fits: {sum(math.floor(x + 1e-9) for x in per_node)} trial(s) at once on {where}" if why is None
           else f"DOES NOT FIT: {why}")
    return "\n".join(["resolved settings:", *settings, "", "plan:", *("  " + ln for ln in p.lines()),
                      f"  each trial holds {', '.join(f'{k} {v:g}' for k, v in res.items() if v > 0)}; {fit}"])


def check_fits(cfg: SweepConfig, nodes: list[dict[str, float]]) -> None:
    why = unschedulable(cfg, nodes)
    if why:
        raise ConfigError(why)
