"""Classifier transfer learning (local weights, summed grayscale stem, ImageNet normalisation, frozen backbone),
training curves and per-class metrics in the run folder, --config re-runs, and k-fold CV refusing synthetic
images. Every run goes through the CLI a user types (`main(argv)`), on tiny CPU data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import data_prep
from demo_data import write_three_class_folder
from trainables.classifier.__main__ import main
from trainables.classifier.loop import mean_loss
from trainables.classifier.models import IMAGENET_MEAN, IMAGENET_STD, build_model


@pytest.fixture(scope="module")
def gray_manifest(tmp_path_factory):
    """Demo set as grayscale (channels=1), 40 benign + 12 malignant, 32 px."""
    d = tmp_path_factory.mktemp("gray")
    data_prep.prepare(data_prep.PrepConfig(source="demo", demo_num_majority=40, demo_num_minority=12,
                                           demo_image_size=32, image_size=32, channels=1), d, progress=False)
    return d / "manifest.parquet"


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory):
    """A torchvision resnet18 state dict in ImageNet layout (3-channel 7x7 stem, 1000-class head): what a user
    saves with torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), ...). Random values
    stand in for the ImageNet ones (nothing is downloaded)."""
    import torchvision

    torch.manual_seed(123)
    src = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BN statistics, to see whether training touches them
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.9, 1.1)
    path = tmp_path_factory.mktemp("w") / "resnet18_imagenet_layout.pth"
    torch.save(src.state_dict(), path)
    return path, src.state_dict()


def _best_state(run):
    return torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)["model"]


def test_weights_gray_stem_summed_and_frozen_backbone_kept(gray_manifest, rgb_weights, tmp_path, capsys):
    path, src = rgb_weights
    common = ["--manifest", str(gray_manifest), "--model", "resnet18", "--weights", str(path), "--image-size", "64",
              "--epochs", "1", "--batch-size", "32", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "frozen"), "--freeze-epochs", "1"]) == 0
    assert "backbone frozen for 1 epoch(s)" in capsys.readouterr().out
    got = _best_state(tmp_path / "frozen")
    # grayscale stem = the RGB kernels summed over input channels, not a fresh random stem
    assert got["conv1.weight"].shape == (64, 1, 7, 7)
    assert torch.allclose(got["conv1.weight"], src["conv1.weight"].sum(dim=1, keepdim=True))
    # the frozen backbone trained nothing: weights and BatchNorm running statistics are the file's
    for k in ("layer1.0.conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean", "layer2.0.bn1.running_var"):
        assert torch.equal(got[k], src[k]), k
    assert got["fc.weight"].shape == (2, 512)  # new head for 2 classes (the file's has 1000)
    cfg = json.loads((tmp_path / "frozen" / "config.json").read_text())
    assert cfg["freeze_epochs"] == 1 and cfg["input_norm"] == "auto" and cfg["weights"] == str(path)
    assert pd.read_csv(tmp_path / "frozen" / "history.csv")["frozen"].tolist() == [True]

    # the same run unfrozen does change the backbone (so the check above can fail)
    assert main([*common, "--out", str(tmp_path / "free")]) == 0
    free = _best_state(tmp_path / "free")
    assert not torch.equal(free["layer1.0.conv1.weight"], src["layer1.0.conv1.weight"])
    assert not torch.equal(free["bn1.running_mean"], src["bn1.running_mean"])


def test_imagenet_normalisation_applies_with_weights_only(rgb_weights):
    path, _ = rgb_weights
    x = torch.rand(2, 3, 64, 64) * 2 - 1  # what the data pipeline feeds: [-1, 1]
    plain = build_model("resnet18", 2, 3, 64, weights=str(path), input_norm="none").eval()
    normed = build_model("resnet18", 2, 3, 64, weights=str(path), input_norm="auto").eval()
    normed.load_state_dict(plain.state_dict())  # same head; the state dict has no normalisation keys
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain(((x + 1) / 2 - mean) / std), atol=1e-5)
        assert not torch.allclose(normed(x), plain(x), atol=1e-3)
    # random init ("auto" without weights): inputs stay in [-1, 1]
    assert not hasattr(build_model("small_cnn", 2, 3, 32, input_norm="auto"), "input_normalisation")
    gray = build_model("resnet18", 2, 1, 64, weights=str(path), input_norm="auto")
    assert gray.input_normalisation["mean"] == [pytest.approx(np.mean(IMAGENET_MEAN))]


@pytest.mark.parametrize("argv, message", [
    (["--freeze-epochs", "2"], "freeze_epochs 2 needs weights"),
    (["--freeze-epochs", "9", "--weights", "w.pt", "--epochs", "2"], "freeze_epochs must be in [0, num_epochs = 2]"),
])
def test_freeze_needs_weights_and_fits_the_epochs(gray_manifest, tmp_path, capsys, argv, message):
    assert main(["--manifest", str(gray_manifest), "--out", str(tmp_path / "r"), "--smoke-test", *argv]) == 2
    assert message in capsys.readouterr().err


def test_mean_loss_matches_cross_entropy():
    logits = torch.randn(7, 3)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    w = torch.tensor([1.0, 2.0, 0.5])
    probs = torch.softmax(logits, 1).numpy()
    assert mean_loss(probs, y.numpy(), None) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)
    assert mean_loss(probs, y.numpy(), w) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y, weight=w)), rel=1e-5)


def test_history_csv_has_loss_curves_and_metrics_name_each_class(tmp_path):
    from data_prep.__main__ import main as prep_main

    src = write_three_class_folder(tmp_path / "img")
    assert prep_main(["--source", str(src), "--out", str(tmp_path / "d"), "--image-size", "16"]) == 0
    run = tmp_path / "run"
    assert main(["--manifest", str(tmp_path / "d" / "manifest.parquet"), "--out", str(run), "--smoke-test",
                 "--image-size", "16", "--epochs", "3"]) == 0
    hist = pd.read_csv(run / "history.csv")
    assert list(hist.columns[:3]) == ["epoch", "train_loss", "val_loss"] and hist["epoch"].tolist() == [1, 2, 3]
    assert (hist[["train_loss", "val_loss"]].to_numpy() > 0).all() and hist["val_loss"].nunique() == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["manifest"] == str((tmp_path / "d" / "manifest.parquet").resolve())
    for split in ("val", "test"):
        pc = metrics[split]["per_class"]
        assert sorted(pc) == ["bird", "cat", "dog"], pc.keys()
        assert sum(v["support"] for v in pc.values()) == metrics[split]["n"]
        assert {v["label"] for v in pc.values()} == {0, 1, 2}
        assert {"precision", "recall", "f1"} <= set(pc["dog"])


def test_folds_with_synthetic_refused_naming_the_leak(gray_manifest, tmp_path, capsys):
    from tests.test_classifier_data import make_synthetic

    syn = make_synthetic(tmp_path / "syn", 20, label=1)
    rc = main(["--manifest", str(gray_manifest), "--out", str(tmp_path / "cv"), "--smoke-test", "--folds", "2",
               "--synthetic", str(syn), "--synthetic-ratio", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: k-fold CV (2 folds) with synthetic images is refused")
    assert "leak" in err and "without --synthetic" in err and "drop --folds" in err
    assert not (tmp_path / "cv" / "fold_0").exists()  # refused before any training
    # folds alone still run (baseline CV is not affected)
    assert main(["--manifest", str(gray_manifest), "--out", str(tmp_path / "cv0"), "--smoke-test", "--folds", "2",
                 "--epochs", "1"]) == 0


def test_config_file_runs_and_flags_override(gray_manifest, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(f"manifest: {gray_manifest}\nout: runs/from_file\n"
                                     f"classifier:\n  model: small_cnn\n  image_size: 32\n  num_epochs: 1\n"
                                     f"  batch_size: 16\n  device: cpu\n  seed: 7\n")
    assert main(["--config", str(tmp_path / "c.yaml"), "--seed", "3"]) == 0
    cfg = json.loads((tmp_path / "runs" / "from_file" / "config.json").read_text())  # `out` relative to the file
    assert cfg["seed"] == 3 and cfg["num_epochs"] == 1 and cfg["model"] == "small_cnn"
    (tmp_path / "bad.yaml").write_text("manifest: m.parquet\nclassifier:\n  num_epoch: 3\n")
    assert main(["--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "['num_epoch']" in err and "num_epochs" in err


def test_resume_accepts_a_run_written_before_the_new_config_keys(gray_manifest, tmp_path):
    from trainables.classifier.run import run_classifier_local

    cfg = {"model": "small_cnn", "image_size": 32, "batch_size": 32, "device": "cpu", "num_epochs": 1}
    run_classifier_local(gray_manifest, tmp_path / "r", cfg)
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    for k in ("input_norm", "freeze_epochs"):  # a last.pt from before these keys existed
        del state["config"][k]
    torch.save(state, last)
    rows = []
    out = run_classifier_local(gray_manifest, tmp_path / "r", cfg, resume=True, report=rows.append)
    assert rows == [] and out["best_epoch"] == 1  # resumed at epoch 1 of 1: nothing left to train
    with pytest.raises(RuntimeError, match="written with another config"):  # a real difference is still refused
        run_classifier_local(gray_manifest, tmp_path / "r", {**cfg, "lr": 0.01}, resume=True)
    with pytest.raises(RuntimeError, match="written with another config"):  # so is a new key set off its default
        run_classifier_local(gray_manifest, tmp_path / "r", {**cfg, "input_norm": "imagenet"}, resume=True)
