"""The tests' demo data: a small built-in demo set (made by the project), split and written to a folder."""
from __future__ import annotations

from pathlib import Path


def make_demo(out: Path, majority: int, minority: int, size: int = 32) -> Path:
    """Write a demo set of `majority` benign + `minority` malignant `size`-px images to `out`; return its
    manifest path."""
    import data_prep

    data_prep.prepare(data_prep.PrepConfig(source="demo", demo_num_majority=majority, demo_num_minority=minority,
                                           demo_image_size=size, image_size=size), out, progress=False)
    return Path(out) / "manifest.parquet"
