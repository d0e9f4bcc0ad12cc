"""Helpers of the fault-injection suite: tiny trial settings and trial configs."""
from __future__ import annotations

from pathlib import Path


def tiny_settings(manifest: Path, work: Path, **over) -> dict:
    """Keyword arguments of sweeps.trial.trainable (sweep=, data=) for a trial that finishes in seconds (GAN
    width 8, small_cnn, 32 px); `over` sets SweepConfig fields. Pass them on with tune.with_parameters."""
    from sweeps.config import SweepConfig
    from sweeps.trial import TrialData

    sweep = SweepConfig(**{"image_size": 32, "gan_epochs": 1, "gan_batch_size": 8, "gan_width": 8, "gan_eval_every": 0,
                           "clf_epochs": 1, "clf_batch_size": 32, "synthetic_ratios": (1.0,), **over})
    return {"sweep": sweep, "data": TrialData(str(manifest), str(work))}


def inject_fault(config) -> None:
    """sweeps.trial's `before` injection point for the fault tests: a `test_fault` key in a trial's config makes
    it fail the way a real trial can, to prove the sweep records the reason and carries on."""
    fault = config.get("test_fault")
    if not fault:
        return
    if fault == "exception":
        raise RuntimeError("injected test fault: an exception inside the trial")
    if fault == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected test fault)")
    raise ValueError(f"unknown test_fault {fault!r}; valid: ['exception', 'oom']")


BASELINE = {"arm": "baseline", "seed": 0, "gan_loss": "", "gan_lr_g": None, "gan_lr_d": None, "diffaugment": False,
            "n_critic": 0, "synthetic_ratio": 0.0, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}
GAN = {**BASELINE, "arm": "gan", "gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
       "n_critic": 1, "synthetic_ratio": 1.0}
