"""Shared fixtures: a tiny demo manifest and a local 2-CPU Ray."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """Demo set of 60 benign + 12 malignant 32px images, split and written once per session."""
    import data_prep

    out = tmp_path_factory.mktemp("tiny_demo")
    cfg = data_prep.PrepConfig(source="demo", demo_num_majority=60, demo_num_minority=12, demo_image_size=32,
                               image_size=32)
    data_prep.prepare(cfg, out, progress=False)
    return out / "manifest.parquet"


@pytest.fixture(scope="module")
def ray_local():
    """A local 2-CPU Ray for the tests of one module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
