"""Helpers of the fault-injection suite: tiny trial settings and trial configs."""
from __future__ import annotations

from pathlib import Path


def tiny_settings(manifest: Path, work: Path, **over) -> dict:
    """sweeps.trial settings for a trial that finishes in seconds (GAN width 8, small_cnn, 32 px)."""
    s = {"manifest": str(manifest), "work_dir": str(work), "image_size": 32, "channels": 3, "gan_epochs": 1,
         "gan_batch_size": 8, "gan_width": 8, "gan_eval_every": 0, "clf_model": "small_cnn", "clf_epochs": 1,
         "clf_batch_size": 32, "synthetic_ratios": [1.0], "cpus_per_trial": 1, "gpus_per_trial": 0,
         "workers_per_trial": 1}
    return {**s, **over}


BASELINE = {"arm": "baseline", "seed": 0, "gan_loss": "", "gan_lr_g": None, "gan_lr_d": None, "diffaugment": False,
            "n_critic": 0, "synthetic_ratio": 0.0, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}
GAN = {**BASELINE, "arm": "gan", "gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
       "n_critic": 1, "synthetic_ratio": 1.0}
