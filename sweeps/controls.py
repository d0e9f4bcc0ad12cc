"""Tuned controls and the confirm phase's arms: the controls search, its pick C, and every confirm trial.

Controls search (Tune phase "controls"; rows: sweep_phase "controls", arm "control"): OptunaSearch over
ControlSpace, multi-objective on real-val F1 and sensitivity like the GAN search, with exactly cfg.num_samples
trials, as many as the GAN search (the same search effort on validation; cheap: no GAN), every trial at the
search's seed 0. ControlSpace draws the imbalance fix among the classical fixes in cfg.controls ("none" only
with augmentation, which is then on: without either it would be the baseline), the augmentation
(cfg.augment_policy, only if "augment" is in cfg.controls), the knob of each chosen fix / augmentation in its
range (trainables.arms.CONTROL_KNOBS) and the classifier LR (clf_lr_range, log-uniform).

pick_control: the best control C on REAL VALIDATION only: the Pareto set on (val F1, val sensitivity) ranked by
val F1 then sensitivity, as pick_best ranks the GAN configs. The sweep saves it in sweep_state.json before any
confirm trial runs, so neither C's test numbers nor a second look at the confirm rows can choose it.

Confirm phase (confirm_configs), each arm x clf_lr_grid x the confirm seeds [x folds]:
  baseline     no fix, no augmentation, ratio 0 (when "baseline" is in cfg.controls)
  control      C's fix, augmentation and knobs, ratio 0
  gan          each of the top-k GAN configs as searched (its stacked fix / augmentation included), confirm_rank r
  control+gan  C's fix, augmentation and knobs + the rank-1 GAN config and ratio (the incremental arm), rank 1
gan and control+gan of one seed share one GAN (gan_key holds no classifier setting): trained once per seed.
With no classical fix allowed (cfg.controls = ("baseline",)) there is no controls search, no control and no
control+gan arm. Every arm trains the same optimizer steps (the trial sets epoch_size, sweeps/trial.py).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from sweeps.space import (KNOB_KEYS, OBJECTIVES, SEARCH_SEED, _canonical, confirm_seeds, fold_configs, knob_values,
                          repeat_configs, stackable)
from trainables.arms import (CONTROL_ARM, CONTROL_ARMS, CONTROL_KNOBS, EXTERNAL_ARM, KNOB_DEFAULTS, STACKED_ARM,
                             knob_acts)

PHASE = "controls"  # the Tune phase and the rows' sweep_phase
# the trial values of a run without a GAN (the same keys and values the per-fix controls had: their ids stand)
NO_GAN = {"gan_loss": "", "gan_lr_g": None, "gan_lr_d": None, "gan_arch": "", "gan_augment": "", "n_critic": 0,
          "synthetic_mix": ""}
# what sweep_state.json keeps of C: its settings, its search trial and its validation numbers
CONTROL_STATE_KEYS = ("imbalance_fix", "augment", *KNOB_KEYS, "clf_lr", "config_id", "trial_id", "val_f1",
                      "val_sensitivity")


def has_controls(sweep) -> bool:
    """Whether sweep.controls allows any classical fix or augmentation (else: no controls search, no C)."""
    fixes, augments = stackable(sweep)
    return bool(fixes or augments)


class ControlSpace:
    """Define-by-run space of the controls search (a class: Tune pickles the searcher for --resume)."""

    def __init__(self, sweep):
        fixes, self.augments = stackable(sweep)
        self.fixes = fixes + (["none"] if self.augments else [])  # "none" only as augmentation alone
        self.clf_lr_range = tuple(sweep.clf_lr_range)

    def __call__(self, trial) -> dict[str, Any]:
        consts: dict[str, Any] = {**NO_GAN, "arm": CONTROL_ARM, "seed": SEARCH_SEED, "synthetic_ratio": 0.0}
        fix = _choose(trial, "imbalance_fix", self.fixes, consts)
        # no fix: the augmentation is the control (off, it would be the baseline)
        augment = _choose(trial, "augment", self.augments if fix == "none" else ["none", *self.augments], consts)
        for name, knob in CONTROL_KNOBS.items():
            if knob_acts(name, fix, augment):
                trial.suggest_float(name, knob.low, knob.high)
        trial.suggest_float("clf_lr", *self.clf_lr_range, log=True)
        return consts


def _choose(trial, name: str, choices: list, consts: dict):
    """A categorical dimension, or a constant (into consts) when there is one choice."""
    if len(choices) == 1:
        consts[name] = choices[0]
        return choices[0]
    return trial.suggest_categorical(name, choices)


def tune_config(cfg, max_concurrent: int, reuse_actors: bool, time_budget_s: float | None):
    """The controls search's TuneConfig: cfg.num_samples trials (the GAN search's count), no scheduler (no GAN)."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space=ControlSpace(cfg), metric=list(OBJECTIVES), mode=["max", "max"], seed=cfg.split_seed)
    return tune.TuneConfig(search_alg=searcher, num_samples=cfg.num_samples, max_concurrent_trials=max_concurrent,
                           reuse_actors=reuse_actors, time_budget_s=time_budget_s)


def pick_control(df, sweep) -> dict[str, Any] | None:
    """The best control C of the controls search, on REAL VALIDATION only (Pareto set on val F1 / sensitivity,
    ranked by val F1 then sensitivity); None when sweep.controls allows no classical fix or no control trial
    finished with validation metrics."""
    from analysis import pareto_front

    if not has_controls(sweep) or not {"val_f1", "val_sensitivity", "sweep_phase"} <= set(df.columns):
        return None
    ok = df[(df["stage"] == "classifier") & (df["arm"] == CONTROL_ARM) & (df["sweep_phase"] == PHASE)
            & (df["status"] == "ok")].dropna(subset=["val_f1", "val_sensitivity"])
    if ok.empty:
        return None
    front = pareto_front(ok, [("val_f1", "max"), ("val_sensitivity", "max")])
    ranked = ok.assign(on_front=ok.index.isin(front.index)).sort_values(
        ["on_front", "val_f1", "val_sensitivity"], ascending=False, kind="stable")
    best = ranked.iloc[0].to_dict()
    return {**{k: _canonical(best.get(k)) for k in CONTROL_STATE_KEYS}, **knob_values(best)}


def control_settings(control: Mapping[str, Any]) -> dict[str, Any]:
    """C's classifier settings: its fix, augmentation and the knobs it set off their defaults."""
    knobs = {k: v for k, v in knob_values(control).items() if v != KNOB_DEFAULTS[k]}
    return {"imbalance_fix": control["imbalance_fix"], "augment": control["augment"], **knobs}


def _no_gan_configs(arm: str, settings: Mapping[str, Any], seeds, clf_lrs) -> list[dict[str, Any]]:
    return [{"arm": arm, "seed": seed, **NO_GAN, "clf_lr": float(lr), "synthetic_ratio": 0.0, **settings}
            for lr in clf_lrs for seed in seeds]


def confirm_configs(sweep, best: list[Mapping[str, Any]], control: Mapping[str, Any] | None = None,
                    externals: list[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Every confirm trial: baseline, control (C), the top-k GAN configs, control+gan (C + the rank-1 GAN) and each
    external set on C (`externals`: sweeps.external.arms(state), each x its usable ratios; confirm_rank = its place),
    each x sweep.clf_lr_grid x confirm_seeds(num_seeds) [x folds 0..K-1 with sweep.folds = K]."""
    seeds, lrs = confirm_seeds(sweep.num_seeds), sweep.clf_lr_grid
    configs = _no_gan_configs("baseline", CONTROL_ARMS["baseline"], seeds, lrs) if "baseline" in sweep.controls else []
    if control:
        configs += _no_gan_configs(CONTROL_ARM, control_settings(control), seeds, lrs)
    configs += repeat_configs(best, seeds, lrs)
    if control and best:  # the same seeds' GANs as rank 1's (same gan_key), C's classifier settings
        configs += [{**c, "arm": STACKED_ARM, **control_settings(control)} for c in repeat_configs(best[:1], seeds, lrs)]
    if externals:  # stacked on C as the GAN is (else on the baseline's settings), x each ratio the set can serve
        on = control_settings(control) if control else {k: v for k, v in CONTROL_ARMS["baseline"].items()
                                                         if k != "synthetic_ratio"}
        configs += [{"arm": EXTERNAL_ARM, "external": rec["name"], "confirm_rank": rank, "seed": seed, **NO_GAN,
                     "clf_lr": float(lr), **on, "synthetic_ratio": float(ratio)}
                    for rank, rec in enumerate(externals, start=1) for ratio in rec["ratios"] for lr in lrs
                    for seed in seeds]
    return fold_configs(configs, getattr(sweep, "folds", 0))


def confirm_arms(sweep, top_k: int, control: bool, externals=None) -> list[str]:
    """The confirm phase's arms, in order, as the console and the dry run name them. externals: the external sets
    that are arms (None: every --external set, as planned before their audit)."""
    from sweeps.config import parse_external

    arms = ["baseline"] if "baseline" in sweep.controls else []
    arms += ["control (C)"] if control else []
    arms += [f"gan (top {top_k})" if top_k > 1 else "gan"] if top_k else []
    arms += ["control+gan (C + rank-1 GAN)"] if control and top_k else []
    names = list(parse_external(sweep.external)) if externals is None else [e["name"] for e in externals]
    return arms + [f"external {n}{' on C' if control else ''}" for n in names]


def confirm_line(cfg, configs: list, top_k: int, control: bool, n_train_real: int, externals=()) -> str:
    """What the confirm phase is about to run, in one console line: its trials, arms, LRs, seeds and step budget."""
    seeds = confirm_seeds(cfg.num_seeds)
    steps = cfg.clf_epochs * math.ceil(n_train_real / cfg.clf_batch_size)
    folds = f" x {cfg.folds} CV folds" if cfg.folds else ""
    budget = (f"{cfg.clf_epochs} epochs of its fold's real training images" if cfg.folds else
              f"{cfg.clf_epochs} epochs of {n_train_real} images (the real training set) = {steps} optimizer steps")
    none = ("[confirm] no search GAN configuration finished with validation metrics (all failed or stopped): the "
            "confirm phase runs the controls only, and the verdict will say the GAN cannot be assessed\n")
    ext = (f"; each external set also x its synthetic ratios (chosen on val with the LR)" if externals else "")
    return (none if not top_k and cfg.train_gan else "") + (
        f"[confirm] {len(configs)} trials: arms {confirm_arms(cfg, top_k, control, list(externals))}{ext} x classifier LRs "
        f"[{', '.join(f'{lr:g}' for lr in cfg.clf_lr_grid)}] x seeds {seeds[0]}-{seeds[-1]} (fresh: the search ran "
        f"seed {SEARCH_SEED}){folds}; " + (f"one GAN per seed{' and fold' if cfg.folds else ''}, shared by gan and "
                                           "control+gan; " if top_k else "")
        + f"every classifier trains {budget}, whatever its synthetic images")


def search_line(cfg) -> str:
    """What the controls search is about to do, in one console line."""
    space = ControlSpace(cfg)
    knobs = [f"{n} {k.low:g}-{k.high:g}" for n, k in CONTROL_KNOBS.items()
             if k.acts_with in (*space.fixes, "augment" if space.augments else "")]
    lo, hi = cfg.clf_lr_range
    return (f"[{PHASE}] {cfg.num_samples} trial(s), as many as the GAN search (no GAN, seed {SEARCH_SEED}): "
            f"OptunaSearch on val F1 and sensitivity over imbalance fix {space.fixes}, augmentation "
            f"{['none', *space.augments] if space.augments else ['none']}, their knobs ({', '.join(knobs)}) and "
            f"classifier LR {lo:g}-{hi:g}")


def describe(control: Mapping[str, Any] | None, sweep) -> str:
    """The console line after the controls search: C, or why there is none."""
    if not has_controls(sweep):
        return (f"[{PHASE}] no classical fix allowed (controls = {list(sweep.controls)}): no controls search, and "
                f"the confirm phase runs no 'control' or 'control+gan' arm")
    if not control:
        return (f"[{PHASE}] no control trial finished with validation metrics: the confirm phase runs no 'control' "
                f"or 'control+gan' arm")
    knobs, fix = knob_values(control), control["imbalance_fix"]
    parts = {"class_weight": [f"class weights (power {knobs['class_weight_power']:.2f})"],
             "oversample": [f"oversampling (minority share {knobs['oversample_share']:.2f})"
                            if knobs["oversample_share"] else "oversampling (balanced)"]}.get(fix, [])
    if control["augment"] != "none":
        parts.append(f"{control['augment']} augmentation (strength {knobs['augment_strength']:.2f})")
    val = ", ".join(f"{name} {float(control[k]):.3f}" for k, name in zip(OBJECTIVES, ("F1", "sensitivity"))
                    if control.get(k) is not None and math.isfinite(float(control[k])))
    return (f"[{PHASE}] best control C on validation: {' + '.join(parts)}, LR {float(control['clf_lr']):.2g} "
            f"(val {val}); fixed in sweep_state.json before the confirm phase")
