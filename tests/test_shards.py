"""Ray Data shards: manifest split -> materialised dataset of uint8 tensors (local 2-CPU Ray)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep import read_manifest
from data_prep.arrays import load_split_arrays, normalize, normalize_batch
from data_prep.shards import split_dataset
from data_prep.errors import DataError

pytestmark = pytest.mark.ray


def test_shard_round_trip_matches_direct_decode(tiny_demo, ray_local):
    m = read_manifest(tiny_demo)
    ds = split_dataset(m, "train", image_size=16, channels=3)
    got = ds.take_all()
    images = np.stack([r["image"] for r in got])
    labels = np.array([r["label"] for r in got])
    x, y = load_split_arrays(m, "train", 16, 3)
    assert images.shape == (len(m.split("train")), 3, 16, 16) and images.dtype == np.uint8  # 1 byte a pixel
    np.testing.assert_array_equal(images, x.transpose(0, 3, 1, 2))  # order kept, same decode path
    np.testing.assert_array_equal(labels, y)
    # what the loops feed the models: the same float32 bits as normalising the whole split up front
    np.testing.assert_array_equal(normalize_batch(torch.from_numpy(images)).numpy(), normalize(x))


def test_minority_only_grayscale_and_torch_batches(tiny_demo, ray_local):
    m = read_manifest(tiny_demo)
    ds = split_dataset(m, "train", image_size=8, channels=1, label=m.positive_label)
    batches = list(ds.iter_torch_batches(batch_size=4))
    assert all(b["image"].shape[1:] == (1, 8, 8) and b["image"].dtype == torch.uint8 for b in batches)
    assert all((b["label"] == m.positive_label).all() for b in batches)
    assert sum(len(b["label"]) for b in batches) == len(m.split("train", m.positive_label))


def test_empty_selection_is_an_error(tiny_demo, ray_local):
    m = read_manifest(tiny_demo)
    with pytest.raises(DataError, match="no images for split 'train', class 'malignant'"):
        split_dataset(m, "train", 8, 3, label=m.positive_label, rows=m.split("train").iloc[:0])


def test_decode_tasks_may_run_side_by_side_without_touching_the_global_context(tiny_demo, ray_local):
    """Ray Data's per-operator reservation ran our two decode tasks one after another on 2 CPUs; split_dataset
    turns it off for its own dataset only (bench/ingest.py measures the effect)."""
    import ray.data

    before = ray.data.DataContext.get_current().op_resource_reservation_enabled
    ds = split_dataset(read_manifest(tiny_demo), "train", 16, 3)
    assert ds.context.op_resource_reservation_enabled is False and ds.context.execution_options.preserve_order
    assert ray.data.DataContext.get_current().op_resource_reservation_enabled == before
    assert ds.count() == len(read_manifest(tiny_demo).split("train"))
