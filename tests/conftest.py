"""Shared fixtures: a tiny demo manifest and a local 2-CPU Ray."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """Demo set of 60 benign + 12 malignant 32px images, split and written once per session."""
    from demo_data import make_demo

    return make_demo(tmp_path_factory.mktemp("tiny_demo"), 60, 12)


@pytest.fixture(scope="module")
def ray_local():
    """A local 2-CPU Ray for the tests of one module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    """The CPU is shared: one intra-op thread avoids oversubscription stalls in the training tests."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
