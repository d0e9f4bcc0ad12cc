"""Issue 9: class-conditional DCGAN, feature-matching and perceptual (VGG16) losses, generator mixing.

Tiny on purpose (16-32 px, a few steps): wiring, gradients, exact counts and clear errors; the one
training test (conditional G on the demo set) runs a few hundred CPU steps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import data_prep
from data_prep.errors import ConfigError, DataError
from data_prep.manifest import read_manifest, write_synthetic_rows
from trainables.classifier.config import ClassifierConfig
from trainables.classifier.data import build_classifier_data, mix_counts, parse_synthetic_arg, synthetic_sources


# ---- generator mixing ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo_mix")
    data_prep.prepare(data_prep.PrepConfig(source="demo", demo_num_majority=60, demo_num_minority=30,
                                           demo_image_size=16, image_size=16), d, progress=False)
    return read_manifest(d / "manifest.parquet")


def make_synthetic(out_dir, n, generator, labels=(1,)):
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(map(ord, generator)))
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        path = out_dir / f"synthetic_{label}_{i:06d}.png"
        Image.fromarray(img).save(path)
        rows.append({"image_id": f"syn/{generator}/{i}", "source": str(path), "label": label,
                     "label_name": ["benign", "malignant"][label],
                     "sha256": data_prep.manifest.hashlib.sha256(img.tobytes()).hexdigest(),
                     "generator": generator, "width": 16, "height": 16, "channels": 3})
    write_synthetic_rows(pd.DataFrame(rows), out_dir)
    return out_dir


def test_mix_counts_largest_remainder_sum_exactly():
    assert mix_counts(10, [0.5, 0.25, 0.25]) == [5, 3, 2]  # 5, 2.5, 2.5: the tie goes to the earlier source
    assert mix_counts(7, [1 / 3] * 3) == [3, 2, 2]
    assert mix_counts(21, [0.5, 0.25, 0.25]) == [11, 5, 5]  # 10.5, 5.25, 5.25
    for n in range(0, 60):
        for props in ([0.5, 0.25, 0.25], [0.1, 0.9], [0.2] * 5, [1.0]):
            counts = mix_counts(n, props)
            assert sum(counts) == n
            assert all(abs(c - n * p) < 1 for c, p in zip(counts, props))


def test_mixed_synthetic_set_has_exact_proportions_and_keeps_sources(demo, tmp_path):
    dirs = [make_synthetic(tmp_path / name, 40, generator=f"gan-{name}") for name in ("bce", "hinge", "wgan")]
    n_min = int(((demo.df["split"] == "train") & (demo.df["label"] == demo.positive_label)).sum())
    cfg = ClassifierConfig(synthetic_ratio=1.5, seed=2)
    n = int(np.floor(1.5 * n_min + 0.5))
    data = build_classifier_data(demo, cfg, [(dirs[0], 0.5), (dirs[1], 0.25), (dirs[2], 0.25)])
    syn = data.train_rows[data.train_rows["is_synthetic"]]
    expect = mix_counts(n, [0.5, 0.25, 0.25])
    assert data.n_synthetic == len(syn) == n == sum(expect)
    got = syn["generator"].value_counts().to_dict()
    assert got == {"gan-bce": expect[0], "gan-hinge": expect[1], "gan-wgan": expect[2]}
    assert [s["n"] for s in data.summary()["synthetic_sources"]] == expect
    assert [s["generators"] for s in data.summary()["synthetic_sources"]] == [["gan-bce"], ["gan-hinge"], ["gan-wgan"]]
    assert not data.val_rows["is_synthetic"].any() and not data.test_rows["is_synthetic"].any()
    again = build_classifier_data(demo, cfg, {str(dirs[0]): 0.5, str(dirs[1]): 0.25, str(dirs[2]): 0.25})
    assert list(again.train_rows["image_id"]) == list(data.train_rows["image_id"])  # seeded, same draw
    # a single folder (old API) and a one-element mix draw the same rows
    one = build_classifier_data(demo, cfg, dirs[0])
    assert list(one.train_rows["image_id"]) == list(build_classifier_data(demo, cfg, [(dirs[0], 1.0)]).train_rows["image_id"])


def test_mix_proportions_must_sum_to_one(demo, tmp_path):
    a, b = make_synthetic(tmp_path / "a", 5, "a"), make_synthetic(tmp_path / "b", 5, "b")
    with pytest.raises(ConfigError, match=r"sum to 1, got 0.5 \+ 0.3 = 0.8"):
        build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.1), [(a, 0.5), (b, 0.3)])
    with pytest.raises(ConfigError, match="no proportion"):
        synthetic_sources([str(a), str(b)])
    with pytest.raises(ConfigError, match=">= 0"):
        synthetic_sources([(a, 1.5), (b, -0.5)])
    with pytest.raises(ConfigError, match="more than once"):
        synthetic_sources([(a, 0.5), (a, 0.5)])
    assert parse_synthetic_arg("runs/x:0.25") == ("runs/x", 0.25)
    assert parse_synthetic_arg("runs/x") == ("runs/x", None)


def test_conditional_folder_contributes_only_minority_rows(demo, tmp_path):
    both = make_synthetic(tmp_path / "both", 40, "cond", labels=(0, 1))
    data = build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.5), both)
    syn = data.train_rows[data.train_rows["is_synthetic"]]
    assert len(syn) == data.n_synthetic > 0 and (syn["label"] == demo.positive_label).all()
    only_benign = make_synthetic(tmp_path / "benign", 5, "b0", labels=(0,))
    with pytest.raises(DataError, match="minority class 'malignant'"):
        build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.1), only_benign)


def test_classifier_cli_parses_a_mix(demo, tmp_path):
    from trainables.classifier.__main__ import synthetic_arg

    a, b = make_synthetic(tmp_path / "a", 5, "a"), make_synthetic(tmp_path / "b", 5, "b")
    assert synthetic_arg([str(a)]) == str(a)
    assert synthetic_arg([f"{a}:0.5", f"{b}:0.5"]) == [(str(a), 0.5), (str(b), 0.5)]
    with pytest.raises(ConfigError, match="sum to 1"):
        synthetic_arg([f"{a}:0.5", f"{b}:0.4"])
    with pytest.raises(ConfigError, match="no proportion"):
        synthetic_arg([f"{a}:0.5", str(b)])
