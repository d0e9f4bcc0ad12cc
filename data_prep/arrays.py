"""Manifest rows -> decoded, resized uint8 arrays, and the normalisation every model input shares.

`decode_rows` is the one decode path: the Ray Data shards (data_prep.shards) call it per block,
and small in-process consumers (tests, metrics, the GAN audit) call `load_split_arrays`.
Pixels are normalised to [-1, 1] (the range of the generator's tanh), channels first.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.images import resize_uint8
from data_prep.sources import decode_record


def decode_rows(rows: pd.DataFrame, image_size: int, channels: int) -> np.ndarray:
    """Rows with source, source_key, source_index -> uint8 (N, image_size, image_size, channels)."""
    out = np.empty((len(rows), image_size, image_size, channels), np.uint8)
    for i, (src, key, idx) in enumerate(zip(rows["source"], rows["source_key"], rows["source_index"])):
        img = decode_record(src, key, int(idx), channels)
        out[i] = resize_uint8(img, image_size)
    return out


def normalize(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    x = images_uint8.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x * (2.0 / 255.0) - 1.0)


def denormalize(images: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C)."""
    x = (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.round(x).astype(np.uint8).transpose(0, 2, 3, 1)


def load_split_arrays(manifest, split: str, image_size: int, channels: int, label: int | None = None,
                      include_synthetic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 images (N, S, S, C), int64 labels (N,)) of one split of a Manifest."""
    df = manifest.split(split, label)
    if not include_synthetic:
        df = df[~df["is_synthetic"]].reset_index(drop=True)
    return decode_rows(df, image_size, channels), df["label"].to_numpy(np.int64)
