"""Curation of synthetic images (trainables.classifier.curation) on a fixture whose classes separate cleanly.

Real data: dark "benign" (majority) and bright "malignant" (minority) 16 px images with per-image brightness and
per-pixel noise. The synthetic folder plants three kinds of minority-labelled images:
  copy      exact copies (10) and near copies (10, +-3 grey levels of noise) of real TRAIN minority images
  majority  new dark images (30): what a GAN that drifted to the other class makes
  genuine   new bright images (60) from the real minority's own distribution (the hardest case for both rules:
            each flags such an image by chance about 5 % of the time)
One classifier run with curation copies+off_class trains the scorer, curates, draws and trains; the tests read what
it recorded.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import data_prep
from data_prep.errors import ConfigError
from data_prep.manifest import read_manifest, write_synthetic_rows

SIZE = 16
EPOCHS = 4


def _image(rng, bright: bool) -> np.ndarray:
    base = (185 if bright else 70) + rng.normal(0, 15)
    return np.clip(rng.normal(base, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("curation")
    rng = np.random.default_rng(0)
    for name, n, bright in (("benign", 300, False), ("malignant", 160, True)):
        (root / "src" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_image(rng, bright)).save(root / "src" / name / f"{i:03d}.png")
    data_prep.prepare(data_prep.PrepConfig(source=str(root / "src"), image_size=SIZE), root / "data", progress=False)
    manifest = read_manifest(root / "data" / "manifest.parquet")
    from data_prep.arrays import load_split_arrays

    train, _ = load_split_arrays(manifest, "train", SIZE, 3, label=manifest.positive_label, include_synthetic=False)
    planted = [("copy", train[i]) for i in range(10)]
    planted += [("copy", np.clip(train[10 + i].astype(int) + rng.integers(-3, 4, train[0].shape), 0, 255)
                 .astype(np.uint8)) for i in range(10)]
    planted += [("majority", _image(rng, False)) for _ in range(30)]
    planted += [("genuine", _image(rng, True)) for _ in range(60)]
    out = root / "synthetic"
    out.mkdir()
    rows = []
    for i, (kind, img) in enumerate(planted):
        path = out / f"synthetic_1_{i:06d}.png"
        Image.fromarray(img).save(path)
        rows.append({"image_id": f"syn/{kind}/{i}", "source": str(path), "label": manifest.positive_label,
                     "label_name": "malignant", "sha256": data_prep.manifest.hashlib.sha256(img.tobytes()).hexdigest(),
                     "generator": "planted", "width": SIZE, "height": SIZE, "channels": 3})
    write_synthetic_rows(pd.DataFrame(rows), out)
    return root / "data" / "manifest.parquet", out


@pytest.fixture(scope="module")
def curated_run(fixture_data, tmp_path_factory):
    import torch

    from trainables.classifier.run import run_classifier_local

    torch.set_num_threads(1)
    manifest, synthetic = fixture_data
    out = tmp_path_factory.mktemp("run") / "clf"
    cfg = {"model": "small_cnn", "image_size": SIZE, "num_epochs": EPOCHS, "batch_size": 32, "device": "cpu",
           "synthetic_ratio": 0.5, "curation": "copies+off_class"}
    return run_classifier_local(manifest, out, cfg, synthetic_dir=synthetic), out


def _kind(image_id: str) -> str:
    return image_id.split("/")[1]


def test_curation_drops_copies_and_off_class_images_and_keeps_genuine_ones(curated_run):
    result, out = curated_run
    dropped = pd.read_csv(out / "curation_dropped.csv")
    kinds = dropped["image_id"].map(_kind)
    by_step = dropped.groupby([kinds, dropped["step"]]).size().to_dict()
    print("dropped by planted kind and step:", by_step)
    n_copy = int((kinds == "copy").sum())
    assert n_copy == 20 and by_step.get(("copy", "copies")) == 20, by_step  # every planted copy, by the copy rule
    assert int((kinds == "majority").sum()) >= 27, by_step  # >= 90 % of the 30 planted majority images
    assert int((kinds == "genuine").sum()) <= 6, by_step  # <= 10 % of the 60 genuine ones
    cur = result["curation"]
    assert cur["candidates"] == 110
    assert cur["dropped_copies"] + cur["dropped_off_class"] == len(dropped)
    assert cur["kept"] == 110 - len(dropped)
    # the ratio's count was drawn from what curation kept: no dropped image is in the training set
    n_real_minority = result["data"]["train"]["malignant"] - result["n_synthetic"]
    assert result["n_synthetic"] == round(0.5 * n_real_minority) <= cur["kept"]
    assert Path(cur["grid"]).is_file() and Path(cur["grid"]).name == "curation_dropped.png"
    scorer = json.loads((out / "curation_scorer" / "scorer.json").read_text())
    assert scorer["threshold"] == cur["off_class_threshold"] and scorer["n_val_minority"] >= 19
    saved = json.loads((out / "metrics.json").read_text())["curation"]
    assert saved["dropped_copies"] == cur["dropped_copies"]


def test_too_few_left_after_curation_is_a_clear_error(fixture_data, curated_run, tmp_path):
    from trainables.classifier.config import ClassifierConfig
    from trainables.classifier.curation import CurationError, load_scorer
    from trainables.classifier.data import build_classifier_data

    manifest_path, synthetic = fixture_data
    manifest = read_manifest(manifest_path)
    scorer = load_scorer(curated_run[1] / "curation_scorer", manifest)
    cfg = ClassifierConfig(model="small_cnn", image_size=SIZE, synthetic_ratio=1.0, curation="copies+off_class")
    with pytest.raises(CurationError, match=r"dropped as near-copies .* as off-class .*--num-samples"):
        build_classifier_data(manifest, cfg, synthetic, scorer=scorer)
    copies_only = build_classifier_data(manifest, ClassifierConfig(image_size=SIZE, synthetic_ratio=0.5,
                                                                    curation="copies"), synthetic)
    assert copies_only.curation_counts()["dropped_copies"] >= 20
    assert copies_only.curation_counts()["dropped_off_class"] == 0
    with pytest.raises(ConfigError, match="no effect with synthetic_ratio 0"):
        ClassifierConfig(curation="copies")
    with pytest.raises(ConfigError, match="unknown curation"):
        ClassifierConfig(synthetic_ratio=1, curation="off_class")


def test_off_class_threshold_rank_bounds_the_genuine_drop_rate():
    from trainables.classifier.curation import off_class_rank, off_class_threshold

    assert off_class_rank(10) == 0 and off_class_rank(19) == 0 and off_class_rank(39) == 1 and off_class_rank(99) == 4
    for n in (19, 39, 60, 99, 500):
        assert (off_class_rank(n) + 1) / (n + 1) <= 0.05 + 1e-12
    assert off_class_threshold([3.0, -1.0, 2.0]) == -1.0


# ---- the sweep: a search dimension, the row's counts, one scorer per split ------------------------------------
GAN = {"arm": "gan", "seed": 0, "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "gan_arch": "dcgan",
       "gan_augment": "ada", "n_critic": 1, "conditional": False, "feature_matching": 0.0, "perceptual": 0.0,
       "label_smoothing": 1.0, "synthetic_mix": "single", "synthetic_ratio": 0.5, "clf_lr": 1e-3,
       "imbalance_fix": "none", "augment": "none"}


def test_curation_is_a_search_dimension_that_leaves_old_ids_and_gan_keys_alone():
    from sweeps.config import SweepConfig
    from sweeps.space import SearchSpace, config_id, gan_key

    class Trial:
        def __init__(self):
            self.asked = {}

        def suggest_categorical(self, name, choices):
            self.asked[name] = list(choices)
            return choices[-1]

        def suggest_float(self, name, lo, hi, log=False):
            self.asked[name] = (lo, hi)
            return lo

    t = Trial()
    consts = SearchSpace(SweepConfig(curation_choices=("none", "copies+off_class")))(t)
    assert t.asked["curation"] == ["none", "copies+off_class"] and "curation" not in consts
    t = Trial()
    assert SearchSpace(SweepConfig())(t)["curation"] == "none" and "curation" not in t.asked
    # no curation: the id of a config from before the field; curated: another config, the same GAN
    assert config_id(GAN) == config_id({**GAN, "curation": "none"}) != config_id({**GAN, "curation": "copies"})
    sweep = SweepConfig()
    assert gan_key({**GAN, "curation": "copies"}, sweep) == gan_key(GAN, sweep)
    # ... but a sweep that curates samples a larger set per GAN, so its GANs are not the uncurated sweep's
    assert gan_key(GAN, SweepConfig(curation_choices=("none", "copies"))) != gan_key(GAN, sweep)
    with pytest.raises(ConfigError, match="curation_choices"):
        SweepConfig(curation_choices=("off_class",))


def test_sweep_trial_rows_record_what_curation_dropped(fixture_data, tmp_path, monkeypatch):
    import torch

    from sweeps import trial as trial_mod
    from sweeps.config import SweepConfig
    from sweeps.curation import scorer_dir
    from sweeps.data import trial_data

    manifest, synthetic = fixture_data
    data = trial_data(manifest, tmp_path)
    sweep = SweepConfig(image_size=SIZE, clf_epochs=EPOCHS, curation_choices=("none", "copies+off_class"))
    torch.set_num_threads(1)

    def fake_gans(config, sweep, data, device, report, row):  # the planted set stands for a trained GAN's
        row.update(gan_gate="off", gan_run_dir="")
        return str(synthetic)

    monkeypatch.setattr(trial_mod, "trial_gans", fake_gans)
    row = trial_mod.run_trial({**GAN, "curation": "copies+off_class"}, sweep, data, "cur", report=lambda m: None)
    assert row["status"] == "ok" and row["curation"] == "copies+off_class"
    assert row["curation_candidates"] == 110 and row["curation_dropped_copies"] >= 20
    assert row["curation_dropped_off_class"] >= 27
    assert Path(row["curation_grid"]).is_file() and Path(row["curation_grid"]).parent == Path(row["clf_run_dir"])
    # trained once, in quality_cache (it travels with remote storage)
    folder, _ = scorer_dir(sweep, data, trial_mod.classifier_config)
    assert (folder / "scorer.json").is_file()
    # a ratio the curated set cannot supply: the trial fails with the counts and what to do, not a crash
    bad = trial_mod.run_trial({**GAN, "synthetic_ratio": 2.0, "curation": "copies+off_class"}, sweep, data, "big",
                              report=lambda m: None)
    assert bad["status"] == "failed" and bad["error"].startswith("curation: ") and "sample more" in bad["error"]
    assert bad["curation_dropped_copies"] == row["curation_dropped_copies"]
    base = trial_mod.run_trial({**GAN, "arm": "baseline", "synthetic_ratio": 0.0, "gan_loss": ""}, sweep, data, "b",
                               report=lambda m: None)
    assert base["curation"] == "none" and base["curation_candidates"] == 0


# ---- the report ------------------------------------------------------------------------------------------------
def test_report_shows_curation_effect_and_the_dropped_grid(tmp_path):
    from analysis.report import build_report
    from fake_results import make_results

    df = make_results(losses=("hinge",), ratios=(0.5, 1.0), lrs=(2e-4,), run_root=tmp_path / "runs", failures=False)
    gan = df[(df["stage"] == "classifier") & (df["arm"] == "gan")]
    curated = gan.assign(curation="copies+off_class", config_id=gan["config_id"] + "_cur",
                         trial_id=gan["trial_id"] + "_cur", test_f1=gan["test_f1"] + 0.02, val_f1=gan["val_f1"] + 0.01,
                         curation_candidates=40, curation_dropped_copies=3, curation_dropped_off_class=5)
    for d in curated["clf_run_dir"].iloc[:2]:  # the others dropped nothing: no grid
        Image.fromarray(np.full((20, 40, 3), 128, np.uint8)).save(Path(d) / "curation_dropped.png")
    rows = pd.concat([df.assign(curation="none"), curated], ignore_index=True)
    md = build_report(rows, tmp_path / "rep").read_text()
    section = md.split("## Curation of synthetic images")[1].split("\n## ")[0]
    assert "| copies+off_class |" in section and "| none |" in section
    # every curated run has its uncurated twin here: the effect is their difference (+0.01 val, +0.02 test)
    effect = pd.read_csv(tmp_path / "rep" / "curation_effect.csv")
    assert effect["Pairs"].tolist() == [len(gan)]
    assert effect["Δ val F1"].tolist() == [0.01] and effect["Δ test F1"].tolist() == [0.02]
    assert "](curation_dropped.png)" in section and (tmp_path / "rep" / "curation_dropped.png").is_file()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Synthetic images curation dropped" in html
    # a sweep without curation has no such section
    assert "Curation of synthetic" not in build_report(df, tmp_path / "plain").read_text()


def test_cli_curation_flag_is_refused_without_synthetic_images(fixture_data, tmp_path, capsys):
    from trainables.classifier.__main__ import main

    manifest, _ = fixture_data
    assert main(["--manifest", str(manifest), "--out", str(tmp_path / "r"), "--curation", "copies"]) == 2
    assert "no effect with synthetic_ratio 0" in capsys.readouterr().err
