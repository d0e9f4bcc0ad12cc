"""Search space, seed repeats, knob values; the hashes that say which rows share a config or a GAN.

Search phase: OptunaSearch (multi-objective: real-val F1 and sensitivity of the minority class) over
GAN loss, G and D learning rates, GAN architecture (dcgan | resnet), augmentation of D's inputs (none |
diffaugment | ada), n_critic (wgan-gp only), synthetic ratio, the classical fix and classifier augmentation the GAN
is stacked on (`stackable`; knobs at their defaults), the curation of the synthetic images (sweep.curation_choices,
a dimension only with more than one) and the classifier learning rate. GAN learning rates are
categorical on purpose: a GAN config then recurs across trials, and the GAN cache (trial.py) trains it once and
serves every ratio that asks for it. Which GAN a trial trains and its key: sweeps/gans.py.

The controls search and the confirm phase's arms (baseline, the tuned control C, the top-k GAN configs,
C + the rank-1 GAN) are planned in sweeps/controls.py, on the ids and seeds defined here.

K-fold confirm phase (--folds K): every confirm trial above is run once per fold (its `fold`, 0..K-1, a row
value, not part of config_id or setup_id: a config's rows across seeds AND folds share one config_id). Fold f
trains the GAN and the classifier on fold f's train part and validates on its held-out part (the driver writes
the fold manifests once, sweeps/data.py); the test split is the same for every fold. The fold is part of
gan_key, so no two folds ever share a GAN (one that saw a fold's validation images would leak them).
The statistics average each seed's K folds first: the unit of the paired test is the seed (analysis/verdict.py).
"""
from __future__ import annotations

from typing import Any, Mapping

from sweeps.gans import (MIX, _canonical, _hash, gan_augment_of, gan_key, mix_members,  # noqa: F401  (old home)
                         multi_critic_losses)
from trainables.arms import IMBALANCE_FIXES, KNOB_DEFAULTS

GAN_KEYS = ("gan_loss", "gan_lr_g", "gan_lr_d", "gan_arch", "gan_augment", "n_critic", "conditional",
            "feature_matching", "perceptual", "label_smoothing", "seed")
TRIAL_KEYS = GAN_KEYS + ("arm", "synthetic_mix", "synthetic_ratio", "clf_lr", "imbalance_fix", "augment",
                         "external", "curation")  # curation: a classifier setting (sweeps/curation.py), not part of gan_key
OBJECTIVES = ("val_f1", "val_sensitivity")  # both maximised, on REAL validation images only
SEARCH_SEED = 0  # every search trial trains with this seed
CONFIRM_SEED_BASE = 1000  # confirm seeds are 1000, 1001, ...: never a search seed, so no search run is reused
# trial values carried into results rows that are not part of the config's identity (minority_fraction: the
# exchange phase's share of the real minority train images, sweeps/exchange.py)
ROW_KEYS = ("confirm_rank", "fold", "minority_fraction")
KNOB_KEYS = tuple(KNOB_DEFAULTS)  # the controls' knobs: in a config's identity only when set off their defaults


def knob_values(config: Mapping[str, Any]) -> dict[str, float]:
    """The control knobs a trial trains with: its config's values, the defaults where it has none."""
    out = {}
    for k, default in KNOB_DEFAULTS.items():
        v = _canonical(config.get(k))
        out[k] = float(default if v is None else v)
    return out


def _identity(config: Mapping[str, Any], keys) -> str:
    values = {k: config.get(k) for k in keys}
    if _canonical(values.get("label_smoothing", 1)) in (None, 1):  # added later: off, a config keeps its old id
        values.pop("label_smoothing", None)
    if not _canonical(values.get("external")):  # only external arms name a set: every other config keeps its id
        values.pop("external", None)
    if _canonical(values.get("curation")) in (None, "none"):  # added later too: no curation keeps the old id
        values.pop("curation", None)
    # knobs came after the first sweeps: absent or at the default they stay out, so such a config keeps its old id
    values.update({k: v for k, v in knob_values(config).items() if v != KNOB_DEFAULTS[k]})
    return _hash(values)


def config_id(config: Mapping[str, Any]) -> str:
    """Identity of a configuration across seeds: every trial value but the seed (knobs off their defaults too)."""
    return _identity(config, [k for k in TRIAL_KEYS if k != "seed"])


def setup_id(config: Mapping[str, Any]) -> str:
    """Identity of an arm's setup across seeds and classifier LRs (the confirm phase tunes the LR per setup)."""
    return _identity(config, [k for k in TRIAL_KEYS if k not in ("seed", "clf_lr")])


def stackable(sweep) -> tuple[list[str], list[str]]:
    """(imbalance fixes, augmentation policies) that sweep.controls allows beside the baseline: what the controls
    search tunes and what the GAN search may stack a GAN on."""
    fixes = [c for c in sweep.controls if c in IMBALANCE_FIXES and c != "none"]
    return fixes, [sweep.augment_policy] if "augment" in sweep.controls else []


class SearchSpace:
    """Define-by-run space for OptunaSearch (conditional: n_critic only for multi-critic losses, i.e. wgan-gp).

    A class, not a closure: Tune pickles the searcher with the experiment state so --resume works."""

    def __init__(self, sweep):
        self.losses, self.lrs = list(sweep.gan_losses), list(sweep.gan_lrs)
        self.archs, self.gan_augments = list(sweep.gan_archs), list(sweep.gan_augments)
        self.critics, self.ratios = list(sweep.n_critic_choices), list(sweep.synthetic_ratios)
        self.multi_critic = multi_critic_losses(self.losses)
        self.clf_lr_range = tuple(sweep.clf_lr_range)
        self.mixes = list(sweep.mix_choices) if len(sweep.gan_losses) > 1 else ["single"]
        self.conditional = [bool(c) for c in sweep.conditional_choices]
        self.feature_matching = [float(w) for w in sweep.feature_matching_choices]
        self.perceptual = [float(w) for w in sweep.perceptual_choices] if sweep.vgg_weights else [0.0]
        self.smoothing = [float(x) for x in getattr(sweep, "label_smoothing_choices", (1.0,))]
        self.curations = list(getattr(sweep, "curation_choices", ("none",)))  # a dimension only with > 1 choice
        fixes, augments = stackable(sweep)  # the incremental arm: a GAN on top of a classical fix / augmentation
        self.fixes, self.clf_augments = ["none", *fixes], ["none", *augments]

    def _choose(self, trial, name, choices):
        # a single choice is a constant, not a search dimension
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)

    def __call__(self, trial) -> dict[str, Any]:
        consts: dict[str, Any] = {"arm": "gan", "seed": SEARCH_SEED}
        mix = self._choose(trial, "synthetic_mix", self.mixes)
        consts["synthetic_mix"] = mix
        loss = self._choose(trial, "gan_loss", self.losses) if mix == "single" else MIX
        if mix != "single":
            consts["gan_loss"] = MIX
        elif len(self.losses) == 1:
            consts["gan_loss"] = loss
        trial.suggest_categorical("gan_lr_g", self.lrs)
        trial.suggest_categorical("gan_lr_d", self.lrs)
        if loss in self.multi_critic or (loss == MIX and self.multi_critic):
            trial.suggest_categorical("n_critic", self.critics)
        else:
            consts["n_critic"] = 1
        smoothing = getattr(self, "smoothing", [1.0]) if loss == "bce" else [1.0]  # only bce has a real target
        value = self._choose(trial, "label_smoothing", smoothing)
        if len(smoothing) == 1:
            consts["label_smoothing"] = value
        for name, choices in (("gan_arch", self.archs), ("gan_augment", self.gan_augments),
                              ("conditional", self.conditional), ("feature_matching", self.feature_matching),
                              ("perceptual", self.perceptual), ("imbalance_fix", self.fixes),
                              ("augment", self.clf_augments), ("curation", getattr(self, "curations", ["none"]))):
            value = self._choose(trial, name, choices)
            if len(choices) == 1:
                consts[name] = value
        trial.suggest_categorical("synthetic_ratio", self.ratios)
        trial.suggest_float("clf_lr", *self.clf_lr_range, log=True)
        return consts


def confirm_seeds(num_seeds: int) -> list[int]:
    """The confirm phase's seeds: shared by every arm (so the test stays paired), never a search seed."""
    return list(range(CONFIRM_SEED_BASE, CONFIRM_SEED_BASE + int(num_seeds)))


def repeat_configs(best: list[Mapping[str, Any]], seeds, clf_lrs=None) -> list[dict[str, Any]]:
    """The top GAN configs of the search (in rank order) with every seed, and every classifier LR of the grid
    (None: the config's own LR). The GAN is retrained per seed: its variance counts too. Each carries its
    confirm_rank (1 = the search's best on validation: the headline's GAN, fixed before any confirm run)."""
    out = []
    for rank, cfg in enumerate(best, start=1):
        base = {k: _canonical(cfg.get(k)) for k in TRIAL_KEYS}
        # a pick saved before gan_arch / gan_augment existed (a resumed sweep): DCGAN, its DiffAugment boolean mapped
        base.update(gan_arch=base["gan_arch"] or "dcgan", gan_augment=gan_augment_of(cfg))
        for lr in (clf_lrs if clf_lrs is not None else [base["clf_lr"]]):
            for seed in seeds:
                out.append({**base, "clf_lr": float(lr), "seed": seed, "confirm_rank": rank})
    return out


def fold_configs(configs: list[dict[str, Any]], folds: int) -> list[dict[str, Any]]:
    """Each config once per CV fold 0..folds-1 (folds 0: the configs unchanged, the fixed split)."""
    if not folds:
        return configs
    return [{**c, "fold": f} for c in configs for f in range(int(folds))]
