"""Fixtures of the fault-injection suite: one tiny demo data set (60 benign + 16 malignant, 32 px) and tiny
trial settings, so every fault runs the real code paths in seconds on 2 CPUs."""
from __future__ import annotations

from pathlib import Path

import pytest

from demo_data import make_demo


@pytest.fixture(scope="session")
def fault_manifest(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("fault_data"), 60, 16)
