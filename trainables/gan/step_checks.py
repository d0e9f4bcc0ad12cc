"""Numerics checks of the GAN step, shared by bench/gan_step.py and tests/test_gpu.py.

    with strict_numerics():
        r = graph_vs_eager_step(cfg, "cuda")        # one graph replay vs one eager step from copied state
        r = bf16_vs_fp32_losses(cfg, "cuda")        # per-step losses of the first steps, bf16 vs fp32

graph_vs_eager_step: trainer A (cfg as given, graphed on CUDA) trains a few steps until its step is captured;
its full state (weights, buffers, Adam, EMA, the random stream) is copied into an eager trainer B; both then
take one step on the same batch and their gradients are compared, tensor by tensor (max |a - b| / max |b|).
Gradients, not updates: one Adam step moves almost every weight by about lr whatever the gradient, so two
updates look alike even when the gradients are not. With DiffAugment on, the same gradients also show that
the graph drew the same noise and augmentation as the eager step (one random stream, see GanTrainer.rng).
On the CPU both trainers are eager: the check then shows the copied state continues the run exactly.

bf16_vs_fp32_losses: two eager trainers from one seed (same init, data and random stream), bf16 autocast on and
off; per step |loss_bf16 - loss_fp32| / max(|loss_fp32|, 1) over the first steps (before the runs drift apart).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Iterator

import torch

from trainables.gan.config import GanConfig
from trainables.gan.loop import GRAPH_WARMUP_STEPS, GanTrainer


@contextlib.contextmanager
def strict_numerics() -> Iterator[None]:
    """TF32 off and deterministic cuDNN algorithms for the duration (restored afterwards): differences left are
    the ones under test, not TF32's 10-bit mantissa or an atomics-based kernel's summation order."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(cfg: GanConfig, n: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1)
            .to(device) for _ in range(n)]


def _grads(tr: GanTrainer) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in (("G", tr.G_module), ("D", tr.D_module)):
        for name, p in module.named_parameters():
            if p.grad is not None:
                out[f"{prefix}.{name}"] = p.grad.detach().float().clone()
    return out


def _step_losses(tr: GanTrainer, real: torch.Tensor) -> tuple[float, float]:
    tr.reset_stats()
    tr.train_step(real)
    _sync(tr.device)
    acc = tr.acc.double().cpu()
    return float(acc[0]), float(acc[1])  # this step's loss_D and loss_G (n_critic = 1: one of each)


def graph_vs_eager_step(cfg: GanConfig, device: str | torch.device, *, seed: int = 1,
                        tolerance: float = 1e-3, ada_p: float = 0.0) -> dict:
    """From copied state, one step of `cfg` (graphed when it resolves so on this device) vs one eager step.
    cfg must be resolved (image_size, channels set); n_critic is forced to 1 so every step is a D+G step.
    ada_p: ADA's probability for the whole check (cfg.ada; > 0 puts its augmentations in the graph)."""
    device = torch.device(device)
    cfg = dataclasses.replace(cfg, n_critic=1)
    a = GanTrainer(cfg, device)
    a.ada_p_value = ada_p
    a.ada_p.fill_(ada_p)
    reals = _batches(cfg, GRAPH_WARMUP_STEPS + 2, seed, device)
    for real in reals[:-1]:  # warm-up steps, then the capture (+ its replay)
        a.train_step(real)
    _sync(device)
    graphed = bool(a._graphs)
    b = GanTrainer(dataclasses.replace(cfg, cuda_graphs="off"), device)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # deep: no optimizer state shared between the two
    loss_a, loss_b = _step_losses(a, reals[-1]), _step_losses(b, reals[-1])
    ga, gb = _grads(a), _grads(b)
    worst, worst_key = 0.0, ""
    for k, x in gb.items():
        rel = float((ga[k] - x).abs().max() / x.abs().max().clamp_min(1e-12))
        if rel > worst or not rel == rel:  # a NaN difference counts as the worst
            worst, worst_key = rel, k
            if not rel == rel:
                break
    finite = all(torch.isfinite(v).all() for v in (*ga.values(), *gb.values())) and all(
        v == v and abs(v) != float("inf") for v in (*loss_a, *loss_b))
    loss_rel = max(abs(x - y) / max(abs(y), 1.0) for x, y in zip(loss_a, loss_b))  # losses near 0: absolute
    return {"loss": cfg.loss, "diffaugment": cfg.diffaugment, "switches": a.switches, "graphed": graphed,
            "rng_restored": b.rng_restored, "same_tensors": ga.keys() == gb.keys(), "num_tensors": len(gb),
            "max_rel_grad_diff": worst, "worst_tensor": worst_key, "loss_D": [loss_a[0], loss_b[0]],
            "loss_G": [loss_a[1], loss_b[1]], "max_rel_loss_diff": loss_rel, "finite": bool(finite),
            "tolerance": tolerance,
            "ok": bool(finite and ga.keys() == gb.keys() and worst <= tolerance and loss_rel <= tolerance
                       and b.rng_restored and len(gb) > 0)}


def bf16_vs_fp32_losses(cfg: GanConfig, device: str | torch.device, *, steps: int = 10, seed: int = 2,
                        tolerance: float = 0.05) -> dict:
    """Per-step losses of the first `steps` steps with bf16 autocast on vs off (same init, data and noise),
    both eager. ok: every step's |bf16 - fp32| <= tolerance * max(|fp32|, 1) for loss_D and loss_G."""
    device = torch.device(device)
    cfg = dataclasses.replace(cfg, n_critic=1, cuda_graphs="off")
    reals = _batches(cfg, steps, seed, device)
    runs = {}
    for bf16 in ("on", "off"):
        tr = GanTrainer(dataclasses.replace(cfg, bf16=bf16), device)
        runs[bf16] = {"switches": tr.switches, "losses": [_step_losses(tr, r) for r in reals]}
    rel = [max(abs(x - y) / max(abs(y), 1.0) for x, y in zip(lb, lf))
           for lb, lf in zip(runs["on"]["losses"], runs["off"]["losses"])]
    finite = all(v == v and abs(v) != float("inf") for r in runs.values() for ls in r["losses"] for v in ls)
    return {"loss": cfg.loss, "diffaugment": cfg.diffaugment, "steps": steps,
            "bf16_active": runs["on"]["switches"]["bf16"], "fp32_losses": runs["off"]["losses"],
            "bf16_losses": runs["on"]["losses"], "max_rel_diff_per_step": rel, "max_rel_diff": max(rel),
            "tolerance": tolerance, "tolerance_rule": "|bf16 - fp32| <= tol * max(|fp32|, 1), every step",
            "finite": bool(finite), "ok": bool(finite and max(rel) <= tolerance and runs["on"]["switches"]["bf16"])}
