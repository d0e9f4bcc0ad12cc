"""Search space, controls and seed repeats; the hashes that say which rows share a config or a GAN.

Search phase: OptunaSearch (multi-objective: real-val F1 and sensitivity of the minority class) over
GAN loss, G and D learning rates, DiffAugment, n_critic (wgan-gp only), synthetic ratio and the
classifier learning rate. GAN learning rates are categorical on purpose: a GAN config then recurs
across trials, and the GAN cache (trial.py) trains it once and serves every ratio that asks for it.

Confirm phase: the controls (baseline = ratio 0, class_weight, oversample, standard augmentation) and
the top-k GAN configs by real-val F1, each with `num_seeds` seeds.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

# arm -> the classifier settings that define it (the GAN arm gets its ratio from the search)
CONTROL_ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"synthetic_ratio": 0.0, "imbalance_fix": "none", "augment": "none"},
    "class_weight": {"synthetic_ratio": 0.0, "imbalance_fix": "class_weight", "augment": "none"},
    "oversample": {"synthetic_ratio": 0.0, "imbalance_fix": "oversample", "augment": "none"},
    "augment": {"synthetic_ratio": 0.0, "imbalance_fix": "none", "augment": "standard"},
}
GAN_KEYS = ("gan_loss", "gan_lr_g", "gan_lr_d", "diffaugment", "n_critic", "seed")
TRIAL_KEYS = GAN_KEYS + ("arm", "synthetic_ratio", "clf_lr", "imbalance_fix", "augment")
OBJECTIVES = ("val_f1", "val_sensitivity")  # both maximised, on REAL validation images only


def _hash(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def gan_key(config: Mapping[str, Any]) -> str:
    """Identity of a trained GAN: loss, lrs, DiffAugment, n_critic, seed (budgets are fixed per sweep)."""
    return "" if config.get("arm") != "gan" else _hash({k: config.get(k) for k in GAN_KEYS})


def config_id(config: Mapping[str, Any]) -> str:
    """Identity of a configuration across seeds: every trial value but the seed."""
    return _hash({k: config.get(k) for k in TRIAL_KEYS if k != "seed"})


class SearchSpace:
    """Define-by-run space for OptunaSearch (conditional: n_critic only for wgan-gp).

    A class, not a closure: Tune pickles the searcher with the experiment state so --resume works."""

    def __init__(self, sweep):
        self.losses, self.lrs = list(sweep.gan_losses), list(sweep.gan_lrs)
        self.critics, self.ratios = list(sweep.n_critic_choices), list(sweep.synthetic_ratios)
        self.clf_lr_range = tuple(sweep.clf_lr_range)

    def __call__(self, trial) -> dict[str, Any]:
        loss = trial.suggest_categorical("gan_loss", self.losses)
        trial.suggest_categorical("gan_lr_g", self.lrs)
        trial.suggest_categorical("gan_lr_d", self.lrs)
        if loss == "wgan-gp":
            trial.suggest_categorical("n_critic", self.critics)
        trial.suggest_categorical("diffaugment", [True, False])
        trial.suggest_categorical("synthetic_ratio", self.ratios)
        trial.suggest_float("clf_lr", *self.clf_lr_range, log=True)
        # constants of every search trial
        return {"arm": "gan", "seed": 0, "imbalance_fix": "none", "augment": "none",
                **({} if loss == "wgan-gp" else {"n_critic": 1})}


def default_clf_lr(sweep) -> float:
    lo, hi = sweep.clf_lr_range
    return float(math.sqrt(lo * hi))  # geometric middle of the searched range


def control_configs(sweep, seeds, clf_lr: float) -> list[dict[str, Any]]:
    """The controls, each with every seed. They train with `clf_lr`, the classifier learning rate of
    the best search config, so the GAN arm does not win merely by a tuned learning rate."""
    out = []
    for arm in sweep.controls:
        for seed in seeds:
            out.append({"arm": arm, "seed": seed, "gan_loss": "", "gan_lr_g": None, "gan_lr_d": None,
                        "diffaugment": False, "n_critic": 0, "clf_lr": float(clf_lr), **CONTROL_ARMS[arm]})
    return out


def repeat_configs(best: list[Mapping[str, Any]], seeds) -> list[dict[str, Any]]:
    """Top GAN configs again with more seeds (the GAN is retrained per seed: its variance counts too)."""
    return [{**{k: cfg.get(k) for k in TRIAL_KEYS}, "seed": seed} for cfg in best for seed in seeds]
