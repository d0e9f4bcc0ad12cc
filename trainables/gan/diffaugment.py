"""DiffAugment (Zhao et al. 2020): differentiable colour/translation/cutout applied to real AND fake
images in both the D and the G step, so a D trained on ~1,000 minority images does not memorise them.

    x = diff_augment(x, parse_policy("color,translation,cutout"), generator)

All ops are shape-static (no data-dependent indexing), so they also run inside a captured CUDA graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data_prep.errors import ConfigError


def _rand(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device, generator=g)


def color(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    x = x + (_rand(x, g) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, g) * 2) + mean  # saturation (a no-op for 1 channel)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, g) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio*side pixels, filling with zeros."""
    b, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device, generator=g)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device, generator=g)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    # index into a 1-pixel zero-padded copy: out-of-range reads land on the zero border
    iy = torch.clamp(yy + ty + 1, 0, h + 1)
    ix = torch.clamp(xx + tx + 1, 0, w + 1)
    pad = F.pad(x, [1, 1, 1, 1])
    flat = (iy * (w + 2) + ix).reshape(b, 1, h * w).expand(b, c, h * w)
    return pad.reshape(b, c, -1).gather(2, flat).reshape(b, c, h, w)


def cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of side ratio*side at a random centre per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device, generator=g)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device, generator=g)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((yy >= cy - ch // 2) & (yy < cy - ch // 2 + ch) & (xx >= cx - cw // 2) & (xx < cx - cw // 2 + cw))
    return x * (~inside).unsqueeze(1).to(x.dtype)


AUGMENTATIONS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise ConfigError(f"unknown DiffAugment op(s) {bad} in {policy!r}; valid: {sorted(AUGMENTATIONS)} "
                          f"(comma-separated; '' = off)")
    return names


def diff_augment(x: torch.Tensor, names: tuple[str, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    for name in names:
        x = AUGMENTATIONS[name](x, generator)
    return x
