"""Which GAN a trial trains: its GanConfig (the trial's sampled GAN values + the sweep's GAN settings) and its key.

    cfg = gan_config(trial_config, sweep, device)     # trainables.gan.config.GanConfig
    key = gan_key(trial_config, sweep)                # gans/<key>/ in the sweep's store: one training per key

The key is a digest of the whole resolved GanConfig (every field but the few that only say where and how often
files are written, NOT_IN_KEY), plus the CV fold whose training part it fits and the settings that choose and
size its synthetic set (the evaluator that picks the best-KID checkpoint, the largest synthetic ratio). So a
setting added to GanConfig later changes the key without anyone remembering to add it, and a budget (epochs,
batch, width) never lets two different GANs share a cache folder. A mix trial's key digests its members' keys.

Trial values are those the search samples (sweeps.space: gan_loss, gan_lr_g, gan_lr_d, gan_arch, gan_augment,
n_critic, conditional, feature_matching, perceptual, seed). Configs written before gan_arch / gan_augment existed
(a resumed sweep's saved picks, old results rows) carry a boolean `diffaugment`: gan_augment_of maps it.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

from trainables.arms import GAN_ARMS

MIX = "mix"  # gan_loss of a trial whose synthetic set mixes one GAN per loss in equal parts
# GanConfig fields that never change the trained weights or the sampled set: where and how often files are written
NOT_IN_KEY = ("device", "sample_every", "checkpoint_every", "keep_checkpoints")


def _canonical(v: Any) -> Any:
    """One spelling per value, whichever way it travelled (Tune config, parquet row, JSON state):
    numpy scalars -> Python, NaN -> None, integral floats -> int (n_critic 5.0 == 5)."""
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return int(v)
    return v


def _hash(values: Mapping[str, Any]) -> str:
    canon = {k: _canonical(v) for k, v in values.items()}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, default=str).encode()).hexdigest()[:12]


def gan_augment_of(config: Mapping[str, Any]) -> str:
    """The trial's augmentation of D's inputs: gan_augment, or (configs before it existed) diffaugment True/False."""
    aug = _canonical(config.get("gan_augment"))
    if aug:
        return str(aug)
    return "diffaugment" if _canonical(config.get("diffaugment")) else "none"


def gan_arch_of(config: Mapping[str, Any]) -> str:
    return str(_canonical(config.get("gan_arch")) or "dcgan")  # configs before gan_arch existed: DCGANs


def gan_config(config: Mapping[str, Any], sweep, device: str):
    """The GanConfig of a trial: its sampled GAN values + the sweep's GAN budgets (the one place they meet)."""
    from sweeps.config import ARCH_BETAS, GAN_AUGMENTS
    from trainables.gan.config import gan_config_from_dict

    config = {k: _canonical(v) for k, v in config.items()}  # a parquet row's NaN is "not set"
    perceptual = float(config.get("perceptual") or 0.0)
    arch = gan_arch_of(config)
    return gan_config_from_dict({
        "arch": arch, "attention": bool(sweep.gan_attention) and arch == "resnet", "betas": ARCH_BETAS[arch],
        "loss": config["gan_loss"], "lr_g": float(config["gan_lr_g"]), "lr_d": float(config["gan_lr_d"]),
        "n_critic": int(config.get("n_critic") or 1), **GAN_AUGMENTS[gan_augment_of(config)],
        # ADA flips/rotates only as the modality allows (an X-ray: never flipped); without ADA the field is unused
        "ada_policy": sweep.augment_policy if gan_augment_of(config) == "ada" else "standard",
        "seed": int(config["seed"]), "num_epochs": sweep.gan_epochs, "batch_size": sweep.gan_batch_size,
        "ngf": sweep.gan_width, "ndf": sweep.gan_width, "image_size": sweep.image_size, "channels": sweep.channels,
        "eval_every": sweep.gan_eval_every, "checkpoint_every": max(1, sweep.gan_epochs // 10),
        "sample_every": max(1, sweep.gan_epochs // 4), "keep_checkpoints": 2, "device": device,
        # conditional: one GAN over every class (sampled for the minority); else the minority class only
        "conditional": bool(config.get("conditional")),
        # a conditional GAN's epoch: all minority images + as many of each other class (its cost is K x a
        # minority-only epoch, not the whole train set: 265 s vs 23 s per demo GAN). DDP trials: every image.
        "balanced_epochs": bool(config.get("conditional")) and sweep.workers_per_trial == 1,
        "feature_matching": float(config.get("feature_matching") or 0.0), "perceptual": perceptual,
        # bce's real-image target (one-sided smoothing); the other losses have none: always off for them
        "label_smoothing": float(config.get("label_smoothing") or 1.0) if config["gan_loss"] == "bce" else 1.0,
        "vgg_weights": sweep.vgg_weights if perceptual > 0 else None})


def _default_sweep():
    from sweeps.config import SweepConfig

    return SweepConfig()


def gan_key(config: Mapping[str, Any], sweep=None) -> str:
    """Identity of a trained GAN ("" for arms without one): a digest of its resolved GanConfig (NOT_IN_KEY aside),
    the CV fold it trains on, and what picks and sizes its synthetic set. A mix: a digest of its members' keys.
    sweep: the SweepConfig (None: the defaults, for callers that only compare keys of one sweep's configs)."""
    if config.get("arm") not in GAN_ARMS:  # "gan" and "control+gan" of one seed share one GAN
        return ""
    sweep = sweep if sweep is not None else _default_sweep()
    if config.get("gan_loss") == MIX:
        return _hash({"mix": [gan_key(m, sweep) for m in mix_members(config, sweep.gan_losses)]})
    from data_prep.config import config_to_dict

    return gan_digest(config_to_dict(gan_config(config, sweep, "cpu")), sweep, config.get("fold"),
                      config.get("minority_fraction"))


def gan_digest(gan_values: Mapping[str, Any], sweep, fold=None, minority_fraction=None) -> str:
    """The key of a resolved GanConfig (as a dict): every field but NOT_IN_KEY, + what picks and sizes the sampled
    set, + the fold, + an exchange-rate subset's fraction (< 1: that GAN saw only the subset's minority images).
    Every field counts unless listed out, so a field added to GanConfig later joins the key."""
    values = {k: v for k, v in gan_values.items() if k not in NOT_IN_KEY}
    values["quality"] = [sweep.inception_weights or "domain", sweep.quality_domain_epochs, sweep.gan_eval_samples]
    values["synthetic_ratio_max"] = max(sweep.synthetic_ratios)  # the sampled set's size
    from sweeps.curation import sample_headroom

    if sample_headroom(sweep) != 1.0:  # curation searched: a larger set (absent otherwise: old keys stand)
        values["sample_headroom"] = sample_headroom(sweep)
    if _canonical(fold) is not None:  # a fold's GAN trained on that fold's train part only
        values["fold"] = fold
    f = _canonical(minority_fraction)
    if f is not None and float(f) < 1:  # the subset's GAN: never the full-data GAN's cache entry
        values["minority_fraction"] = float(f)
    return _hash(values)


def multi_critic_losses(losses) -> set[str]:
    """The losses among `losses` whose table entry says several D steps per G step pay off (n_critic searched)."""
    from trainables.gan.losses import GAN_LOSSES

    return {name for name in losses if GAN_LOSSES[name].multi_critic}


def mix_members(config: Mapping[str, Any], losses) -> list[dict[str, Any]]:
    """The single-GAN configs whose synthetic sets a "mix_losses" trial combines (equal parts)."""
    multi = multi_critic_losses(losses)
    return [{**config, "gan_loss": loss, "n_critic": int(config.get("n_critic") or 5) if loss in multi else 1}
            for loss in losses]
