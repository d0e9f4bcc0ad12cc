"""What a GAN checkpoint is beyond the weights: its format tag, the random stream's seeds, and the adaptions a
resume on another device needs (generator state, Adam's `capturable`). Used by GanTrainer (trainables.gan.loop)
and by trainables.gan.run_files when it loads a checkpoint.

Random stream: the step draws noise, DiffAugment and the gradient-penalty mix from one generator
(`GanTrainer.rng`): the trainer's own generator when eager, the device's default CUDA generator when graphed
(graph replay advances that one). Both start from the same seed, so eager and graphed runs draw the same
numbers; checkpoints save that generator's state with its device type and rank, and a resume restores it only
on the same device type and rank (a CUDA state cannot enter a CPU generator). Elsewhere (GPU run finished
on the CPU, another rank) the stream is reseeded from (seed, rank, D steps done): deterministic, but a new stream.
"""
from __future__ import annotations

from typing import Any

import torch

from data_prep.errors import DataError

CHECKPOINT_FORMAT = "ganaug-gan-checkpoint-v1"


def _rng_seed(seed: int, rank: int) -> int:
    return seed * 1000 + rank + 1


def _resume_seed(seed: int, rank: int, d_steps: int) -> int:
    """Seed of a resume that cannot restore the saved random stream (other device type or rank)."""
    return (_rng_seed(seed, rank) * 1_000_003 + d_steps) % (2 ** 63)


def rng_device_of(state: dict[str, Any]) -> str:
    """Device type whose generator wrote a checkpoint's "rng" (older checkpoints: told apart by size, a CPU
    Mersenne-Twister state is 5056 bytes, a CUDA Philox state 16)."""
    if "rng_device" in state:
        return str(state["rng_device"])
    return "cpu" if state["rng"].numel() == torch.Generator().get_state().numel() else "cuda"


def match_optimizer_to_trainer(opt: torch.optim.Optimizer, capturable: bool) -> None:
    """After load_state_dict: the saved param_groups carry the writer's `capturable` flag, which must be this
    trainer's (a graphed GPU checkpoint makes a CPU Adam assert; a CPU one makes graph capture call .item()),
    and Adam keeps `step` on the parameter's device when capturable, on the CPU otherwise."""
    for group in opt.param_groups:
        group["capturable"] = capturable
        for p in group["params"]:
            st = opt.state.get(p)
            if st and torch.is_tensor(st.get("step")):
                st["step"] = st["step"].to(p.device if capturable else "cpu")


def check_checkpoint_format(state: Any, where: str) -> None:
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise DataError(f"{where} is not a GAN checkpoint of this project (format {got!r}, "
                        f"expected {CHECKPOINT_FORMAT!r}); make one with python -m trainables.gan")
