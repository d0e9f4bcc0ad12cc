"""The "domain" feature extractor: the penultimate layer of a small CNN trained for a few epochs on the REAL
training split of the manifest (its class labels); always available, any size, 1 or 3 channels.

    ext = load_or_train_domain_extractor(manifest, image_size=32, channels=3, cache_dir="runs/cache")

Weights are cached on disk keyed by (manifest fingerprint, image size, channels, epochs); the first process to
finish training wins, so concurrent trials all use the same network. Domain FID/KID rank GANs on this dataset;
they are NOT comparable with published (Inception) FIDs.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from data_prep.arrays import to_channels_first
from trainables.metrics.feature_base import default_device, to_channels_last, uint8_to_unit

DOMAIN_CNN_VERSION = 2  # bump when the architecture or training recipe changes: invalidates cached weights


class DomainCNN(nn.Module):
    """Small classifier; `embed` (global-average-pooled last conv block, ReLU) is the feature space.

    Stride-2 convolutions down to ~4x4 (so cost grows gently with image size), widths 32 -> 128."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 32):
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        layers, w, size = conv(channels, width, 2), width, (image_size + 1) // 2
        while size > 4:
            layers += conv(w, min(2 * w, 4 * width), 2)
            w, size = min(2 * w, 4 * width), (size + 1) // 2
        layers += conv(w, 4 * width, 1)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * width, num_classes)
        self.num_features = 4 * width

    def embed(self, x_unit: torch.Tensor) -> torch.Tensor:
        return self.body(x_unit).mean(dim=(2, 3))

    def forward(self, x_unit: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x_unit))


class DomainFeatures(nn.Module):
    """uint8 (N, C, H, W) -> (N, 128) penultimate features of a trained DomainCNN; always in eval mode."""

    kind = "domain"

    def __init__(self, cnn: DomainCNN, name: str, info: dict[str, Any] | None = None):
        super().__init__()
        self.cnn = to_channels_last(cnn.eval())
        self.name = name  # identifies the network (and its weights) in cache keys
        self.num_features = cnn.num_features
        self.info = dict(info or {})
        self.has_logits = False

    def train(self, mode: bool = True) -> "DomainFeatures":  # never leaves eval mode (BN statistics fixed)
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.embed(uint8_to_unit(x))


def train_domain_cnn(images: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int = 8,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0, device: torch.device | str | None = None,
                     max_images: int = 20000, max_steps: int = 400) -> tuple[DomainCNN, dict[str, Any]]:
    """Train a DomainCNN on uint8 (N, H, W, C) images: class-weighted cross-entropy, random flips, at most
    `epochs` epochs and `max_steps` optimiser steps (a one-off cost, cached by the caller)."""
    device = torch.device(device) if device is not None else default_device()
    rng = np.random.default_rng(seed)
    if len(images) > max_images:  # a feature space, not a competition entry: a subsample is enough
        keep = rng.choice(len(images), max_images, replace=False)
        images, labels = images[keep], labels[keep]
    torch.manual_seed(seed)
    cnn = DomainCNN(images.shape[3], num_classes, images.shape[1]).to(device)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weight = torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    opt = torch.optim.Adam(cnn.parameters(), lr=lr)
    x_all = torch.from_numpy(to_channels_first(images))
    cnn = to_channels_last(cnn)
    y_all = torch.from_numpy(labels.astype(np.int64))
    t0 = time.perf_counter()
    cnn.train()
    loss_value, steps = float("nan"), 0
    for _ in range(epochs):
        if steps >= max_steps:
            break
        order = torch.from_numpy(rng.permutation(len(images)))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2 or steps >= max_steps:
                continue
            x = uint8_to_unit(x_all[idx].to(device)).contiguous(memory_format=torch.channels_last)
            flip = torch.rand(len(idx), device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(cnn(x), y_all[idx].to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value, steps = loss.item(), steps + 1
    # Re-estimate BatchNorm statistics with the final weights: after a few hundred fast Adam steps the running
    # averages still describe older weights, and the eval-mode network would be a different (worse) one.
    with torch.no_grad():
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        calib = torch.from_numpy(rng.permutation(len(images))[:4096])
        for i in range(0, len(calib), 256):
            cnn(uint8_to_unit(x_all[calib[i:i + 256]].to(device)).contiguous(memory_format=torch.channels_last))
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    cnn.eval()
    return cnn.cpu(), {"train_seconds": round(time.perf_counter() - t0, 2), "final_loss": loss_value,
                       "num_train_images": int(len(images)), "epochs": epochs, "steps": steps, "seed": seed}


def _write_once(path: Path, write) -> bool:
    """Write via a temp file and hard-link into place only if `path` does not exist (first writer wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # filesystems without hard links: replace (last writer wins, still atomic)
            os.replace(tmp, path)
            return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@torch.inference_mode()
def _val_balanced_accuracy(cnn: DomainCNN, manifest, image_size: int, channels: int) -> float | None:
    """Recorded with the cached network: a feature space from a CNN that cannot tell the classes apart on real
    validation images (~0.5) carries little domain information, and metrics.json says so."""
    from data_prep.arrays import load_split_arrays
    try:
        images, labels = load_split_arrays(manifest, "val", image_size, channels, include_synthetic=False)
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
    if len(images) == 0:
        return None
    cnn.eval()
    pred = torch.cat([cnn(uint8_to_unit(torch.from_numpy(images[i:i + 256]).permute(0, 3, 1, 2))).argmax(1)
                      for i in range(0, len(images), 256)]).numpy()
    recalls = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return round(float(np.mean(recalls)), 4)


def domain_cache_path(cache_dir: str | Path, fingerprint: str, image_size: int, channels: int, epochs: int) -> Path:
    # epochs in the key: a 2-epoch smoke-test network must never stand in for the real one
    return Path(cache_dir) / f"domain_cnn_v{DOMAIN_CNN_VERSION}_{fingerprint}_{image_size}px_{channels}ch_e{epochs}.pt"


def load_or_train_domain_extractor(manifest, image_size: int, channels: int, cache_dir: str | Path, *,
                                   epochs: int = 8, seed: int = 0, device: torch.device | str | None = None,
                                   real_train: tuple[np.ndarray, np.ndarray] | None = None) -> DomainFeatures:
    """The domain feature network for this manifest/size/channels: cached weights, else train and cache.

    `real_train` = (uint8 images, labels) of the real train split, when the caller already decoded them.
    """
    fp = manifest.fingerprint()
    path = domain_cache_path(cache_dir, fp, image_size, channels, epochs)
    if not path.is_file():
        if real_train is None:
            from data_prep.arrays import load_split_arrays
            real_train = load_split_arrays(manifest, "train", image_size, channels, include_synthetic=False)
        images, labels = real_train
        cnn, info = train_domain_cnn(images, labels, len(manifest.classes), epochs=epochs, seed=seed, device=device)
        info["val_balanced_accuracy"] = _val_balanced_accuracy(cnn, manifest, image_size, channels)
        info.update({"manifest_fingerprint": fp, "image_size": image_size, "channels": channels,
                     "classes": manifest.classes, "version": DOMAIN_CNN_VERSION})
        _write_once(path, lambda tmp: torch.save({"state_dict": cnn.state_dict(), "info": info,
                                                  "num_classes": len(manifest.classes)}, tmp))
    # Everyone (the trainer included) loads the file on disk, so concurrent trials share one network.
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cnn = DomainCNN(channels, int(blob["num_classes"]), image_size)
    cnn.load_state_dict(blob["state_dict"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    ext = DomainFeatures(cnn, name=f"domain-v{DOMAIN_CNN_VERSION}-{digest}", info=dict(blob["info"]))
    return ext.to(torch.device(device) if device is not None else default_device())
