"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, StyleGAN2-ADA) for GANs on a few dozen to a few
hundred images: real AND fake images go through the same differentiable augmentations, each applied to an image
with probability p, and p follows how much D overfits.

    ops = ada_ops("xray")                                   # what the modality allows: an X-ray is never flipped
    x = ada_augment(x, p, ops, generator)                   # p: a 0-dim tensor on x's device (graph-safe)
    p = ada_adjust(p, r_t, target=0.6, step=1 / ramp_epochs) # once per epoch

Augmentations (ADA's "bgc" pipeline, cut to what is differentiable in one grid_sample and allowed by the policy):
x-flip / y-flip (only where trainables.arms.AUGMENT_POLICIES allows flips; each applied with p then a fair coin),
quarter turns (only where the policy allows rotations of 90 degrees or more), integer translation up to 1/8 of
the side, isotropic scaling 2^N(0, 0.2), rotation within the policy's limit, then brightness + N(0, 0.2),
contrast x 2^N(0, 0.5) and (3 channels) saturation x 2^N(0, 1). The geometric ones are composed into one affine
map per image and applied by one bilinear grid_sample with reflection padding, so the whole pipeline is
shape-static (no data-dependent indexing) and runs inside a captured CUDA graph; with p = 0 it is the identity
up to float rounding. Each op draws its coins from the trainer's generator, so a run is reproducible.

The overfitting heuristic (ADA's r_t): the mean over the epoch's D steps of E[sign(D(augmented real))], for bce
and hinge, whose D scores have a meaningful sign (0 = undecided). A WGAN critic's score has none: adding a constant
to it changes neither its loss nor its gradient penalty, so its level drifts. For wgan-gp r_t is taken relative to
the same batch's fakes, E[sign(D(real) - mean D(fake))]: 0 when D cannot tell reals from the fakes beside them,
1 when it rates every real above them - the same scale, and no held-out images (the paper's r_v would spend
validation images, which here are the quality reference, on training). p moves by +-1/ramp_epochs per epoch
(the sign of r_t - target), so at full overfitting it goes from 0 to 1 in ramp_epochs = ada_ramp x num_epochs:
the paper's 500k-image ramp is longer than a whole demo run, so the speed is a share of the run instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TRANSLATE = 0.125  # largest integer shift, as a share of the side (ADA's xint_max)
SCALE_STD = 0.2  # log2 std of isotropic scaling
BRIGHTNESS_STD, CONTRAST_STD, SATURATION_STD = 0.2, 0.5, 1.0  # ADA's colour strengths ([-1, 1] images; log2 stds)


@dataclass(frozen=True)
class AdaOps:
    """What ADA may do to an image of this modality (from its augment policy)."""
    hflip: bool  # left-right flips allowed
    vflip: bool  # up-down flips allowed
    quarter_turns: bool  # 90/180/270 degree turns allowed (the policy rotates by 90 degrees or more)
    max_rotation_deg: float  # arbitrary rotation within +- this


def ada_ops(policy: str) -> AdaOps:
    """AdaOps of a trainables.arms.AUGMENT_POLICIES entry (GanConfig.ada_policy, the sweep's augment_policy)."""
    from trainables.arms import AUGMENT_POLICIES

    p = AUGMENT_POLICIES[policy]
    return AdaOps(hflip=p.hflip, vflip=p.vflip, quarter_turns=p.max_rotation_deg >= 90,
                  max_rotation_deg=min(float(p.max_rotation_deg), 180.0))


def _coin(b: int, p: torch.Tensor, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """1.0 for the images this op applies to (probability p each), else 0.0; shape (b,)."""
    return (torch.rand(b, device=x.device, generator=g) < p).to(torch.float32)


def _affine(x: torch.Tensor, p: torch.Tensor, ops: AdaOps, g: torch.Generator | None) -> torch.Tensor:
    """(b, 2, 3) affine maps (output -> input coordinates in [-1, 1]) of the geometric ops, composed."""
    b, dev = x.shape[0], x.device

    def rand(*shape):
        return torch.rand(*shape, device=dev, generator=g)

    def randn(*shape):
        return torch.randn(*shape, device=dev, generator=g)

    sx = 1 - 2 * _coin(b, p, x, g) * (rand(b) < 0.5).float() if ops.hflip else torch.ones(b, device=dev)
    sy = 1 - 2 * _coin(b, p, x, g) * (rand(b) < 0.5).float() if ops.vflip else torch.ones(b, device=dev)
    angle = torch.zeros(b, device=dev)
    if ops.quarter_turns:
        angle = angle + _coin(b, p, x, g) * torch.floor(rand(b) * 4) * (math.pi / 2)
    if ops.max_rotation_deg > 0:
        angle = angle + _coin(b, p, x, g) * (rand(b) * 2 - 1) * math.radians(ops.max_rotation_deg)
    scale = torch.exp2(_coin(b, p, x, g) * randn(b) * SCALE_STD)
    side = x.shape[-1]
    shift = torch.round((rand(b, 2) * 2 - 1) * TRANSLATE * side) * (2.0 / side) * _coin(b, p, x, g)[:, None]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, shift[:, 0]], 1),
                         torch.stack([sin * sx, cos * sy, shift[:, 1]], 1)], 1)
    return theta


def ada_augment(x: torch.Tensor, p: torch.Tensor, ops: AdaOps, g: torch.Generator | None = None) -> torch.Tensor:
    """x (B, C, S, S) in [-1, 1] -> augmented, differentiable in x; every op applied per image with probability p."""
    b = x.shape[0]
    theta = _affine(x, p, ops, g).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    shape = (b, 1, 1, 1)
    shift = _coin(b, p, x, g) * torch.randn(b, device=x.device, generator=g) * BRIGHTNESS_STD
    x = x + shift.reshape(shape).to(x.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = torch.exp2(_coin(b, p, x, g) * torch.randn(b, device=x.device, generator=g) * CONTRAST_STD)
    x = (x - mean) * c.reshape(shape).to(x.dtype) + mean
    if x.shape[1] == 3:
        luma = x.mean(dim=1, keepdim=True)
        s = torch.exp2(_coin(b, p, x, g) * torch.randn(b, device=x.device, generator=g) * SATURATION_STD)
        x = (x - luma) * s.reshape(shape).to(x.dtype) + luma
    return x


def overfitting_signs(s_real: torch.Tensor, s_fake: torch.Tensor, relative: bool) -> torch.Tensor:
    """This batch's E[sign(D(real))] (relative: sign(D(real) - mean D(fake)), the critic's offset removed)."""
    ref = s_fake.detach().float().mean() if relative else 0.0
    return torch.sign(s_real.detach().float() - ref).mean()


def ada_adjust(p: float, r_t: float, target: float, step: float) -> float:
    """One epoch's update of p: up by `step` when D overfits (r_t > target), down when it does not; in [0, 1]."""
    if not math.isfinite(r_t):
        return p
    return float(min(1.0, max(0.0, p + step * math.copysign(1.0, r_t - target) if r_t != target else p)))
