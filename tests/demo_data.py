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


def write_three_class_folder(root: Path, counts=(24, 12, 9), size: int = 16) -> Path:
    """A class-folder data set of three classes (bird, cat, dog: `counts` PNGs of `size` px, told apart by
    brightness) under `root`; -> root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate(zip(("bird", "cat", "dog"), counts)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = np.clip(rng.normal(60 + 70 * c, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root
