"""Classifier dataset builder, synthetic-ratio arithmetic, leakage guard, controls, folds, models, config."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import data_prep
from data_prep.errors import ConfigError, DataError, LeakageError
from data_prep.manifest import Manifest, read_manifest, write_synthetic_rows
from trainables.classifier.config import ClassifierConfig, classifier_config
from trainables.classifier.data import (AUGMENTS, build_classifier_data, epoch_indices, kfold_manifests,
                                        loss_weights_for, n_synthetic_for, sample_weights_for)
from trainables.classifier.models import build_model


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    data_prep.prepare(data_prep.PrepConfig(source="demo", demo_num_majority=120, demo_num_minority=40,
                                           demo_image_size=32), d, progress=False)
    return read_manifest(d / "manifest.parquet")


def make_synthetic(out_dir, n, label, generator="gan-test"):
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(label)
    rows = []
    for i in range(n):
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        path = out_dir / f"synthetic_{label}_{i:06d}.png"
        Image.fromarray(img).save(path)
        rows.append({"image_id": f"syn/{generator}/{i}", "source": str(path), "label": label,
                     "label_name": "malignant" if label == 1 else "benign",
                     "sha256": data_prep.manifest.hashlib.sha256(img.tobytes()).hexdigest(),
                     "generator": generator, "width": 32, "height": 32, "channels": 3})
    write_synthetic_rows(pd.DataFrame(rows), out_dir)
    return out_dir


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "samples", 60, label=1)


def test_ratio_arithmetic_rounds_half_up():
    assert n_synthetic_for(0, 28) == 0
    assert n_synthetic_for(1, 28) == 28
    assert n_synthetic_for(10, 28) == 280
    assert n_synthetic_for(0.5, 3) == 2  # 1.5 -> 2 (half up, not banker's rounding)
    assert n_synthetic_for(0.25, 10) == 3  # 2.5 -> 3
    assert n_synthetic_for(0.3, 10) == 3
    for bad in (-0.1, 10.01):  # the bound lives in the config (trainables.arms.MAX_SYNTHETIC_RATIO), checked there
        with pytest.raises(ConfigError, match=r"synthetic_ratio must be in \[0, 10\]"):
            ClassifierConfig(synthetic_ratio=bad)


def test_training_set_gets_round_ratio_times_real_minority_synthetic_rows(demo, synthetic):
    n_minority = int(((demo.df["split"] == "train") & (demo.df["label"] == demo.positive_label)).sum())
    assert n_minority == 28
    base = build_classifier_data(demo, ClassifierConfig(), synthetic)
    assert base.n_synthetic == 0 and not base.train_rows["is_synthetic"].any()
    data = build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.5, seed=3), synthetic)
    syn = data.train_rows[data.train_rows["is_synthetic"]]
    assert data.n_synthetic == len(syn) == 14
    assert (syn["label"] == demo.positive_label).all()
    assert not data.val_rows["is_synthetic"].any() and not data.test_rows["is_synthetic"].any()
    again = build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.5, seed=3), synthetic)
    other = build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.5, seed=4), synthetic)
    ids = lambda d: list(d.train_rows.loc[d.train_rows["is_synthetic"], "image_id"])  # noqa: E731
    assert ids(data) == ids(again) and ids(data) != ids(other)
    with pytest.raises(DataError, match="only 60 available"):
        build_classifier_data(demo, ClassifierConfig(synthetic_ratio=3), synthetic)
    with pytest.raises(DataError, match="--synthetic"):
        build_classifier_data(demo, ClassifierConfig(synthetic_ratio=1), None)


def test_synthetic_rows_of_the_majority_label_are_refused(demo, tmp_path):
    wrong = make_synthetic(tmp_path / "wrong", 5, label=0)
    with pytest.raises(DataError, match="minority class 'malignant'"):
        build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.1), wrong)


def test_guard_fires_when_a_synthetic_row_is_forced_into_val(demo, synthetic):
    data = build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.1), synthetic)
    df = data.manifest.df.copy()
    df.loc[df.index[df["is_synthetic"]][0], "split"] = "val"
    with pytest.raises(LeakageError, match="synthetic row"):
        build_classifier_data(Manifest(df=df, meta=demo.meta, path=demo.path), ClassifierConfig(), None)


def test_val_or_test_without_minority_is_an_error(demo):
    df = demo.df[~((demo.df["split"] == "test") & (demo.df["label"] == demo.positive_label))]
    with pytest.raises(DataError, match="test split has no image of the minority class 'malignant'"):
        build_classifier_data(Manifest(df=df, meta=demo.meta, path=demo.path), ClassifierConfig(), None)


def test_class_weight_control_sets_balanced_loss_weights():
    labels = np.array([0] * 84 + [1] * 28)
    assert loss_weights_for("none", labels, 2) is None
    assert loss_weights_for("oversample", labels, 2) is None
    w = loss_weights_for("class_weight", labels, 2)
    assert torch.allclose(w, torch.tensor([112 / (2 * 84), 112 / (2 * 28)]))


def test_oversample_control_sets_inverse_frequency_sampler_weights():
    labels = np.array([0] * 84 + [1] * 28)
    assert sample_weights_for("none", labels, 2) is None and sample_weights_for("class_weight", labels, 2) is None
    w = sample_weights_for("oversample", labels, 2)
    assert w[0] == pytest.approx(1 / 84) and w[-1] == pytest.approx(1 / 28)
    idx = epoch_indices(len(labels), w, seed=0, epoch=0)
    assert len(idx) == 112 and 0.35 < labels[idx.numpy()].mean() < 0.65  # balanced in expectation
    plain = epoch_indices(len(labels), None, seed=0, epoch=0)
    assert sorted(plain.tolist()) == list(range(112))  # a permutation: no resampling
    assert not torch.equal(idx, epoch_indices(len(labels), w, seed=0, epoch=1))  # redrawn every epoch


def test_standard_augment_changes_images_and_keeps_range():
    assert AUGMENTS["none"] is None
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    y = AUGMENTS["standard"](x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.allclose(x, y)


def test_kfold_partitions_train_and_val_and_leaves_test_untouched(demo):
    folds = kfold_manifests(demo, 3, seed=0)
    pool = set(demo.df.loc[demo.df["split"].isin(["train", "val"]), "image_id"])
    test = set(demo.split("test")["image_id"])
    vals = [set(f.split("val")["image_id"]) for f in folds]
    assert set().union(*vals) == pool and sum(map(len, vals)) == len(pool)
    for f in folds:
        assert set(f.split("test")["image_id"]) == test
        assert set(f.split("val")["label"]) == {0, 1}


def test_models_adapt_to_small_inputs_and_channels(tmp_path):
    net = build_model("resnet18", 2, 1, 16)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.in_channels == 1
    assert isinstance(net.maxpool, torch.nn.Identity)
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 2)
    assert build_model("resnet18", 2, 3, 64).conv1.kernel_size == (7, 7)
    assert build_model("small_cnn", 3, 3, 16)(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


def test_weights_missing_wrong_architecture_and_imagenet_style(tmp_path):
    with pytest.raises(ConfigError, match="not found.*Nothing is downloaded"):
        build_model("resnet18", 2, 3, 32, weights=str(tmp_path / "nope.pt"))
    torch.save(build_model("small_cnn", 2, 3, 32).state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(ConfigError, match="does not match model 'resnet18'"):
        build_model("resnet18", 2, 3, 32, weights=str(tmp_path / "cnn.pt"))
    import torchvision
    src = torchvision.models.resnet18(weights=None)  # ImageNet layout: 7x7 stem, 1000-class head
    torch.save(src.state_dict(), tmp_path / "imagenet_like.pt")
    net = build_model("resnet18", 2, 3, 32, weights=str(tmp_path / "imagenet_like.pt"))
    assert torch.equal(net.layer1[0].conv1.weight, src.layer1[0].conv1.weight)


def test_config_from_dict_rejects_unknown_keys_and_variants():
    assert classifier_config({"model": "small_cnn"}).model == "small_cnn"
    with pytest.raises(ConfigError, match="valid keys"):
        classifier_config({"synthetic_ration": 1})
    with pytest.raises(ConfigError, match=r"valid: \['class_weight', 'none', 'oversample'\]"):
        classifier_config({"imbalance_fix": "smote"})
    with pytest.raises(ConfigError, match="select_metric"):
        classifier_config({"select_metric": "auc"})


def test_xray_policy_never_mirrors_and_standard_does():
    """The augmentation is a policy per modality: an X-ray (heart on the left) is never flipped; the standard
    policy flips about half the images. Left half dark, right half bright: a flip swaps them."""
    x = torch.full((64, 1, 32, 32), -0.8)
    x[..., 16:] = 0.8
    mirrored = lambda y: (y[..., :16].mean(dim=(1, 2, 3)) > y[..., 16:].mean(dim=(1, 2, 3))).sum().item()  # noqa: E731
    assert mirrored(AUGMENTS["xray"](x, torch.Generator().manual_seed(0))) == 0
    assert 10 < mirrored(AUGMENTS["standard"](x, torch.Generator().manual_seed(0))) < 54
    from trainables.arms import AUGMENT_NAMES, AUGMENT_POLICIES

    assert set(AUGMENTS) == set(AUGMENT_NAMES) == {"none", *AUGMENT_POLICIES}
    assert "no flips" in AUGMENT_NAMES["xray"]
