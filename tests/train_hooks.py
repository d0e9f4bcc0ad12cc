"""Hooks the tests pass into the Ray Train entry points (module-level, so they pickle into Train workers).

Train workers cannot import this file by name (tests/ is not on their path): a test that passes one in first
calls `ship_by_value()`, which makes Ray pickle this module's functions by value.
"""
from __future__ import annotations

import functools
import os
import signal
from pathlib import Path


def ship_by_value() -> None:
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def save_rank_weights(trainer, rank: int, out_dir: Path) -> None:
    """`run_gan_ray(after_training=...)`: every rank writes RUN/rank_weights/rank_<r>.pt (DDP replicas must agree)."""
    import torch

    ranks = Path(out_dir) / "rank_weights"
    ranks.mkdir(exist_ok=True)
    torch.save({"G": trainer.G_module.state_dict(), "D": trainer.D_module.state_dict(), "ada_p": trainer.ada_p_value},
               ranks / f"rank_{rank}.pt")


def _kill_once_at(kill_at: int, marker: str, epoch: int) -> None:
    if epoch == kill_at and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def kill_once_at(kill_at: int, marker: str | Path):
    """`run_classifier_ray(before_report=...)`: the rank-0 worker SIGKILLs itself on its way to report epoch
    `kill_at`, once (the marker file records the kill, so the restarted worker trains on)."""
    return functools.partial(_kill_once_at, int(kill_at), str(marker))
