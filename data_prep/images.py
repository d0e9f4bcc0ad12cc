"""Decoding one image to a uint8 array in the configured channel mode, and resizing.

Every stage decodes through `to_uint8_channels`, so grayscale, RGB, RGBA, palette and 16-bit
inputs look the same to the GAN and the classifier: uint8, shape (H, W, C), C = 1 or 3.
"""
from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating) and a.size and a.min() >= 0.0 and a.max() <= 1.0:
        return np.round(a * 255.0).astype(np.uint8)
    # 16-bit (and other wide) images: medical scanners often use 10-12 of 16 bits, so scaling by
    # the dtype's max would leave them black. Stretch each image's own range to 0..255.
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_uint8_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """Array (H, W), (H, W, 1|3|4) of any numeric dtype -> uint8 (H, W, channels)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image shaped (H, W) or (H, W, 1|3|4), got {arr.shape}")
    arr = _to_uint8(arr)
    c = arr.shape[2]
    if c in (2, 4):  # gray+alpha / RGBA: composite onto black, alpha is not image content
        alpha = arr[:, :, -1:].astype(np.uint16)
        arr = ((arr[:, :, :-1].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
        c -= 1
    if channels == c:
        return np.ascontiguousarray(arr)
    if channels == 3:  # gray -> RGB
        return np.repeat(arr, 3, axis=2)
    # RGB -> gray with ITU-R 601-2 luma, the same weights PIL's convert("L") uses
    gray = arr[:, :, 0] * 0.299 + arr[:, :, 1] * 0.587 + arr[:, :, 2] * 0.114
    return np.round(gray).astype(np.uint8)[:, :, None]


def read_image_file(path: str) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF fully (truncated files raise) -> numpy array in its own mode."""
    with Image.open(path) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        elif im.mode == "I":
            return np.asarray(im, dtype=np.int32)
        elif im.mode == "F":
            return np.asarray(im, dtype=np.float32)
        elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("L" if im.mode == "1" else "RGB")
        elif im.mode == "LA":
            return np.asarray(im)
        return np.asarray(im)


def resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) -> (size, size, C), bilinear with antialiasing (PIL); no-op at the right size."""
    h, w, c = img.shape
    if h == size and w == size:
        return img
    mode = "L" if c == 1 else "RGB"
    pil = Image.fromarray(img[:, :, 0] if c == 1 else img, mode=mode)
    out = np.asarray(pil.resize((size, size), Image.BILINEAR))
    return out[:, :, None] if c == 1 else out


def image_sha256(img: np.ndarray) -> str:
    """Hash of decoded pixels and shape, so the same picture saved as PNG and BMP is one image."""
    h = hashlib.sha256()
    h.update(str(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()
