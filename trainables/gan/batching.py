"""Batches for the GAN loop and sample iteration from a generator (no training here).

    batches = array_batches(images, batch_size=64, seed=0)           # batches(epoch) -> iterable of (B,C,S,S)
                                                                     # in the images' dtype (uint8 stays uint8)
    batches = array_batches(images, 64, 0, labels=class_idx, balanced=True)   # conditional, class-balanced
    for chunk in iter_generated(G, n=1000, latent_dim=128, seed=0):  # uint8 (b, S, S, C) chunks
        ...

The same seed gives the same images on any device and with any batch_size (noise is drawn per image on the CPU).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from data_prep.arrays import denormalize
from data_prep.errors import DataError


def iter_generated(G: torch.nn.Module, n: int, latent_dim: int, seed: int, device: str | torch.device = "cpu",
                   batch_size: int = 256, class_index: int | None = None) -> Iterator[np.ndarray]:
    """Yield n images from generator G (eval mode) as uint8 (b, S, S, C) batches. Noise is drawn on the CPU
    from `seed`, so the same seed gives the same images on any device and with any batch_size.
    A conditional G needs `class_index` (0..K-1): every image is of that class (same noise for every class)."""
    num_classes = getattr(G, "num_classes", 0)
    if num_classes and class_index is None:
        raise DataError(f"this generator is class-conditional ({num_classes} classes): pass the class to sample")
    if num_classes and not 0 <= class_index < num_classes:
        raise DataError(f"class index {class_index} out of range for a generator of {num_classes} classes")
    gen = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                m = min(batch_size, n - start)
                # one draw per image: the images do not depend on batch_size
                z = torch.stack([torch.randn(latent_dim, generator=gen) for _ in range(m)])
                cond = (torch.full((m,), int(class_index), dtype=torch.long, device=device),) if num_classes else ()
                yield denormalize(G(z.to(device), *cond).float().cpu().numpy())
    finally:
        G.train(was_training)


def generate_uint8(G: torch.nn.Module, n: int, latent_dim: int, seed: int, device: str | torch.device = "cpu",
                   batch_size: int = 256, class_index: int | None = None) -> np.ndarray:
    """n images from generator G as one uint8 (n, S, S, C) array (see iter_generated)."""
    return np.concatenate(list(iter_generated(G, n, latent_dim, seed, device, batch_size, class_index)))


def array_batches(images: torch.Tensor, batch_size: int, seed: int, rank: int = 0,
                  world_size: int = 1, labels: torch.Tensor | None = None,
                  balanced: bool = False) -> Callable[[int], Iterable]:
    """Images (N, C, S, S) -> batches(epoch): a seeded shuffle per epoch, this rank's share, full batches
    (DCGAN drops the last partial batch; a set smaller than one batch is used as one batch).
    With `labels` (N,) class indices, batches are (images, labels) pairs (conditional GAN); `balanced` makes each
    epoch every image of the smallest class plus as many of each other class, drawn afresh each epoch.
    Batches keep the images' dtype and device: uint8 images (a quarter of float32's memory) give uint8
    batches, which train_gan makes float in [-1, 1] one batch at a time on the trainer's device."""
    n = images.shape[0]
    if n == 0:
        raise DataError("no training images: the minority-class training split is empty")
    if labels is not None and labels.shape[0] != n:
        raise DataError(f"{n} images but {labels.shape[0]} labels")
    if balanced and labels is None:
        raise DataError("balanced epochs need the images' class labels (a conditional GAN)")
    take = (lambda idx: images[idx]) if labels is None else (lambda idx: (images[idx], labels[idx]))  # noqa: E731
    by_class: list[torch.Tensor] = []  # balanced: each class's image indices
    if balanced:
        cpu_labels = labels.cpu()
        by_class = [torch.nonzero(cpu_labels == c).flatten() for c in torch.unique(cpu_labels)]
    per_class = min((len(ix) for ix in by_class), default=0)

    def batches(epoch: int):
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        if balanced:  # every class contributes per_class images this epoch (all of the smallest class)
            pool = torch.cat([ix[torch.randperm(len(ix), generator=gen)[:per_class]] for ix in by_class])
            order = pool[torch.randperm(len(pool), generator=gen)]
        else:
            order = torch.randperm(n, generator=gen)
        order = order[rank::world_size]
        m = len(order)
        if m == 0:
            return
        if m < batch_size:
            yield take(order)
            return
        for start in range(0, m - batch_size + 1, batch_size):
            yield take(order[start:start + batch_size])

    return batches
