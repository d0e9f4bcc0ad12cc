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


def trainer_state(tr) -> dict[str, Any]:
    """A GanTrainer's checkpoint payload: weights, optimizers, the random stream, ADA's p, the best KID so far."""
    from data_prep.config import config_to_dict

    return {"format": CHECKPOINT_FORMAT, "epoch": tr.epoch, "config": config_to_dict(tr.cfg),
            "meta": tr.meta, "G": tr.G_module.state_dict(), "D": tr.D_module.state_dict(),
            "G_ema": tr.G_ema.state_dict(), "opt_G": tr.opt_G.state_dict(),
            "opt_D": tr.opt_D.state_dict(), "rng": tr.rng.get_state(), "rng_device": tr.device.type,
            "rng_rank": tr.rank, "ema_step": tr.ema_step.clone(), "d_steps_total": tr.d_steps_total,
            "ada_p": tr.ada_p_value, "best_kid": tr.best_kid, "best_epoch": tr.best_epoch}


def restore_trainer(tr, state: dict[str, Any], where: str = "checkpoint") -> None:
    """Load a checkpoint payload into GanTrainer `tr` (same architecture; checkpoints older than ADA and the
    best-KID record resume with p = 0 and no best yet)."""
    from trainables.gan.config import check_same_architecture

    check_checkpoint_format(state, where)
    check_same_architecture(state["config"], tr.cfg, where)
    tr.G_module.load_state_dict(state["G"])
    tr.D_module.load_state_dict(state["D"])
    tr.G_ema.load_state_dict(state["G_ema"])
    tr.opt_G.load_state_dict(state["opt_G"])
    tr.opt_D.load_state_dict(state["opt_D"])
    graphs = tr.switches["cuda_graphs"]
    match_optimizer_to_trainer(tr.opt_G, graphs)
    match_optimizer_to_trainer(tr.opt_D, graphs)
    tr.ema_step.copy_(state["ema_step"])
    tr.d_steps_total = int(state["d_steps_total"])
    tr.epoch = int(state["epoch"])
    tr.ada_p_value = float(state.get("ada_p", 0.0))
    tr.ada_p.fill_(tr.ada_p_value)
    tr.best_kid, tr.best_epoch = float(state.get("best_kid", float("inf"))), int(state.get("best_epoch", 0))
    # The random stream continues only where it was written: same device type (a CUDA Philox state is not a
    # CPU Mersenne-Twister state: set_state raises) and same rank (rank 0 writes the checkpoint for all).
    tr.rng_restored = rng_device_of(state) == tr.device.type and int(state.get("rng_rank", 0)) == tr.rank
    if tr.rng_restored:
        tr.rng.set_state(state["rng"].cpu())
    else:
        tr.rng.manual_seed(_resume_seed(tr.cfg.seed, tr.rank, tr.d_steps_total))
