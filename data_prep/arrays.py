"""Manifest rows -> decoded, resized uint8 arrays, and the normalisation every model input shares.

`decode_rows` is the one decode path: the Ray Data shards (data_prep.shards) call it per block,
and small in-process consumers (tests, metrics, the GAN audit) call `load_split_arrays`.
Pixels are normalised to [-1, 1] (the range of the generator's tanh), channels first.

Splits stay uint8 in memory (1 byte a pixel; float32 would be 4: a 26k-image 224 px RGB train split is
3.9 GB as uint8, 15.7 GB as float32) and become float one batch at a time, on the batch's device:

    x = decode_rows(rows, 64, 3, channels_first=True)     # uint8 (N, C, S, S), what trainers keep
    batch = normalize_batch(torch.from_numpy(x[:32]).to(device))   # float32 in [-1, 1]

`normalize_batch` gives the same float32 bits as `normalize` (x * float32(2/255) - 1, two float32
roundings, elementwise), so a run keeping uint8 trains exactly like one that normalised up front.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.images import resize_uint8
from data_prep.sources import decode_record


_SCALE = 2.0 / 255.0  # uint8 -> [-1, 1]: x * _SCALE - 1 (numpy and torch both round _SCALE to float32)


def decode_rows(rows: pd.DataFrame, image_size: int, channels: int, channels_first: bool = False) -> np.ndarray:
    """Rows with source, source_key, source_index -> uint8 (N, image_size, image_size, channels), or
    (N, channels, image_size, image_size) with channels_first (written in place: no second copy of the split)."""
    shape = (channels, image_size, image_size) if channels_first else (image_size, image_size, channels)
    out = np.empty((len(rows), *shape), np.uint8)
    for i, (src, key, idx) in enumerate(zip(rows["source"], rows["source_key"], rows["source_index"])):
        img = resize_uint8(decode_record(src, key, int(idx), channels), image_size)
        out[i] = img.transpose(2, 0, 1) if channels_first else img
    return out


def to_channels_first(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> contiguous uint8 (N, C, H, W): the layout models take, still 1 byte a pixel."""
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4:
        raise ValueError(f"expected uint8 images shaped (N, H, W, C), got {images_uint8.dtype} {images_uint8.shape}")
    return np.ascontiguousarray(images_uint8.transpose(0, 3, 1, 2))


def normalize(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    x = images_uint8.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x * _SCALE - 1.0)


def normalize_batch(x):
    """torch uint8 (B, C, H, W) -> float32 in [-1, 1] on x's device, bit-identical to `normalize`; a float
    tensor (already normalised) is returned as it is. Any other dtype is an error: it is not a pixel batch."""
    import torch

    if x.is_floating_point():
        return x
    if x.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 (0..255) or float ([-1, 1]) image batch, got {x.dtype} {tuple(x.shape)}")
    return x.to(torch.float32).mul_(_SCALE).sub_(1.0)


def denormalize(images: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C)."""
    x = (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.round(x).astype(np.uint8).transpose(0, 2, 3, 1)


def load_split_arrays(manifest, split: str, image_size: int, channels: int, label: int | None = None,
                      include_synthetic: bool = True, channels_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 images (N, S, S, C), or (N, C, S, S) with channels_first, int64 labels (N,)) of one split."""
    df = manifest.split(split, label)
    if not include_synthetic:
        df = df[~df["is_synthetic"]].reset_index(drop=True)
    return decode_rows(df, image_size, channels, channels_first), df["label"].to_numpy(np.int64)
