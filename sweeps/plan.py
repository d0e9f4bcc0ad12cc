"""What a sweep will do before it does it: trials per phase, GAN trainings, and whether its trials fit.

    python sweeps/augment_ratio.py --dry-run [--config FILE] [flags]   # prints this plan, starts nothing

A trial that no node can ever hold would wait PENDING forever (Ray's autoscaler only repeats "No available
node types can fulfill resource request"); the sweep refuses such a config up front instead (exit 2). Where
trials run (`probe`): this machine for a local Ray; with --address, what the cluster can grow to
(sweeps/capacity.py: the autoscaler's node types and maxima, else the nodes present now).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from data_prep.errors import ConfigError
from sweeps.capacity import DDP_TRIAL_CPU, Capacity, choose_concurrency, read_cluster_capacity, whole_trial  # noqa: F401
from sweeps.config import SweepConfig


def trial_resources(cfg: SweepConfig) -> dict[str, float]:
    """Resources one trial holds at once: its own process, or N DDP workers plus a coordinating process."""
    return whole_trial(cfg)


def local_node() -> dict[str, float]:
    """What a local Ray started by the sweep will have: this machine's CPUs and visible CUDA GPUs."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # no torch / broken driver: no GPUs
        gpus = 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def probe(cfg: SweepConfig, say=print) -> Capacity:
    """Where this sweep's trials will run. No --address: this machine (the Ray this process runs, if one is
    up). --address: what the cluster can grow to; connects for the look-up when Ray is not up yet (and
    disconnects, so the sweep's own ray.init can set its runtime environment)."""
    import ray

    if not cfg.address:
        if ray.is_initialized():
            return Capacity.from_nodes([dict(ray.cluster_resources())], source="this machine's Ray")
        return Capacity.from_nodes([local_node()], source="this machine (a local Ray)")
    if ray.is_initialized():
        return read_cluster_capacity(say)
    try:
        ray.init(address=cfg.address, log_to_driver=False)
    except ConnectionError as exc:  # "auto" with no Ray running here
        raise ConfigError(f"--address {cfg.address}: no Ray cluster to join ({exc}); start one (ray up cluster.yaml, "
                          "or ray start --head) or leave --address out to run on a local Ray") from exc
    try:
        return read_cluster_capacity(say)
    finally:
        ray.shutdown()


def _capacity(where: Capacity | list[dict[str, float]]) -> Capacity:
    return where if isinstance(where, Capacity) else Capacity.from_nodes(where)


def unschedulable(cfg: SweepConfig, where: Capacity | list[dict[str, float]]) -> str | None:
    """Why no trial of cfg can ever run there (a Capacity, or node resource dicts), or None when one can."""
    return _capacity(where).unschedulable(cfg)


@dataclass(frozen=True)
class Plan:
    search_trials: int
    search_gan_trainings_max: int  # at most: configs recur across trials and are trained once
    confirm_trials: int
    confirm_gan_trainings: int
    arms: int  # setups the confirm phase compares (baseline, C, top-k GAN configs, C + the rank-1 GAN)
    lrs: int
    seeds: int
    folds: int = 0  # K-fold CV in the confirm phase (0 = the fixed split)
    control_trials: int = 0  # the controls search: as many trials as the GAN search, none without a classical fix
    arm_names: tuple[str, ...] = ()  # the confirm phase's arms, in order

    def lines(self) -> list[str]:
        folds = f" x {self.folds} fold(s)" if self.folds else ""
        each = "each confirm seed and fold" if self.folds else "each confirm seed"
        controls = (f"controls: {self.control_trials} trial(s), as many as the search, no GAN (fix, augmentation, "
                    "knobs, classifier LR) -> the best control C, fixed before the confirm phase"
                    if self.control_trials else "controls: none (no classical fix in --controls): no control and no "
                    "control+gan arm")
        return [f"search : {self.search_trials} trial(s), at most {self.search_gan_trainings_max} GAN training(s) "
                "(a GAN config recurring across trials is trained once)", controls,
                f"confirm: {self.confirm_trials} trial(s) = {self.arms} arm(s) {list(self.arm_names)} x {self.lrs} "
                f"classifier LR(s) x {self.seeds} seed(s){folds}, up to {self.confirm_gan_trainings} GAN training(s) "
                f"({each} trains its own{', shared by gan and control+gan' if self.control_trials else ''}; a mix "
                "one per loss); every classifier the same optimizer steps, clf_epochs x ceil(real training images "
                "/ clf_batch_size)"]


def plan(cfg: SweepConfig) -> Plan:
    from sweeps.controls import confirm_arms, has_controls

    mix = "mix_losses" in cfg.mix_choices and len(cfg.gan_losses) > 1
    per_trial = len(cfg.gan_losses) if mix else 1  # a mix trains one GAN per loss
    from sweeps.config import parse_external

    top_k = cfg.top_k if cfg.train_gan else 0
    names = confirm_arms(cfg, top_k, has_controls(cfg))
    n_ext = len(parse_external(cfg.external))
    # top-k GAN configs count one setup each, C + the rank-1 GAN one more (it needs a GAN config); an external set
    # one arm, run at each synthetic ratio it is large enough for (at most all of them: known after its audit)
    arms = len(names) + (top_k - 1 if top_k > 1 else 0)
    folds = max(1, cfg.folds)  # every confirm trial runs once per fold, and each fold trains its own GAN
    confirm = (arms - n_ext + n_ext * len(cfg.synthetic_ratios)) * len(cfg.clf_lr_grid) * cfg.num_seeds * folds
    searched = cfg.num_samples if cfg.train_gan else 0
    return Plan(search_trials=searched, search_gan_trainings_max=searched * per_trial,
                confirm_trials=confirm, confirm_gan_trainings=top_k * cfg.num_seeds * folds * per_trial,
                arms=arms, lrs=len(cfg.clf_lr_grid), seeds=cfg.num_seeds, folds=cfg.folds,
                control_trials=cfg.num_samples if has_controls(cfg) else 0, arm_names=tuple(names))


def describe(cfg: SweepConfig, where: Capacity | list[dict[str, float]]) -> str:
    """The dry run's text: resolved settings, the plan, and whether the trials fit `where`."""
    cap = _capacity(where)
    settings = [f"  {f.name:<26} {getattr(cfg, f.name)!r}" for f in fields(cfg)]
    p = plan(cfg)
    res = trial_resources(cfg)
    why = cap.unschedulable(cfg)
    if why is None:
        n, source = choose_concurrency(cfg, cap)
        fit = (f"fits: {cap.max_trials(cfg)} trial(s) at once on {cap.where()}; the sweep runs {n} at once, "
               f"from {source}")
    else:
        fit = f"DOES NOT FIT: {why}"
    return "\n".join(["resolved settings:", *settings, "", "plan:", *("  " + ln for ln in p.lines()),
                      f"  each trial holds {', '.join(f'{k} {v:g}' for k, v in res.items() if v > 0)}; {fit}"])


def dry_run(cfg: SweepConfig) -> int:
    """--dry-run: print the plan and whether it fits; -> 2 if no trial could ever be scheduled, else 0."""
    where = probe(cfg)  # this machine, or what the cluster at --address can grow to
    print(describe(cfg, where))
    return 2 if where.unschedulable(cfg) else 0


def check_fits(cfg: SweepConfig, where: Capacity | list[dict[str, float]]) -> None:
    why = unschedulable(cfg, where)
    if why:
        raise ConfigError(why)
