"""What every feature extractor of the generative metrics shares: device choice, layout, the uint8 -> [-1, 1]
conversion, batched extraction (`extract_features`) and the description recorded next to each metric.
The extractors themselves: trainables.metrics.domain_cnn and trainables.metrics.inception (overview:
trainables.metrics.features).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn as nn


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_channels_last(module: nn.Module) -> nn.Module:
    """Conv weights in NHWC: oneDNN (CPU) and cuDNN run these nets 1.3-2x faster; values change ~1e-7."""
    try:
        return module.to(memory_format=torch.channels_last)
    except (RuntimeError, TypeError):  # e.g. some TorchScript modules
        return module


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1] (the generator's range; see data_prep.arrays.normalize)."""
    return x.float() * (2.0 / 255.0) - 1.0


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


@torch.inference_mode()
def extract_features(extractor: nn.Module, images: np.ndarray, batch_size: int = 256,
                     with_logits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """uint8 (N, H, W, C) -> float32 features (N, d) [, logits (N, K) or None], batched on the extractor's device."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    dev = module_device(extractor)
    feats, logits = [], []
    want_logits = with_logits and getattr(extractor, "has_logits", False)
    for i in range(0, len(images), batch_size):
        # NHWC memory seen as NCHW is exactly the channels_last layout: no copy before the device transfer
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2)
        x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if want_logits:
            f, lg = extractor.forward_with_logits(x)
            logits.append(lg.float().cpu())
        else:
            f = extractor(x)
        feats.append(f.float().cpu())
    out = torch.cat(feats).numpy() if feats else np.zeros((0, int(getattr(extractor, "num_features", 0))), np.float32)
    if with_logits:
        return out, (torch.cat(logits).numpy() if logits else None)
    return out


def describe(extractor: nn.Module) -> dict[str, Any]:
    """JSON-able description recorded next to every metric."""
    d = {"extractor": getattr(extractor, "kind", type(extractor).__name__),
         "extractor_name": getattr(extractor, "name", type(extractor).__name__),
         "num_features": int(getattr(extractor, "num_features", 0))}
    info = getattr(extractor, "info", None)
    if info:
        d["extractor_info"] = json.loads(json.dumps(info, default=str))
    if d["extractor"] == "domain":
        d["comparable_with_published_fid"] = False
    return d
