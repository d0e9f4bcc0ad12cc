"""Fixtures of the fault-injection suite: one tiny demo data set (60 benign + 16 malignant, 32 px) and tiny
trial settings, so every fault runs the real code paths in seconds on 2 CPUs."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fault_manifest(tmp_path_factory) -> Path:
    import data_prep

    out = tmp_path_factory.mktemp("fault_data")
    data_prep.prepare(data_prep.PrepConfig(source="demo", demo_num_majority=60, demo_num_minority=16,
                                           demo_image_size=32, image_size=32), out, progress=False)
    return out / "manifest.parquet"
