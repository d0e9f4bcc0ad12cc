"""python -m analysis.export: the GAN config chosen on REAL VALIDATION is exported as a folder tree (real +
synthetic train, real val/test), its generator checkpoint and a classifier config that re-runs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.export import main as export_main
from data_prep.__main__ import main as prep_main
from data_prep.manifest import read_manifest
from trainables.classifier.__main__ import main as clf_main

ROOT = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> Path:
    """A pre-split folder tree of distinct random 32 px PNGs (item: DIR/{train,val,test}/<class>/)."""
    rng = np.random.default_rng(11)
    for split, counts in (("train", (30, 10)), ("val", (6, 3)), ("test", (6, 3))):
        for cls, n in zip(("benign", "malignant"), counts):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(rng.normal(90 if cls == "benign" else 160, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{cls}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep's work dir with real run folders for one GAN config, and a results.parquet with three configs:
    A (GAN, best on val), B (GAN, best on TEST, its run folders absent), a baseline with a higher val F1."""
    from tests.test_classifier_data import make_synthetic

    t = tmp_path_factory.mktemp("sweep")
    work = t / "work"
    assert prep_main(["--source", str(_tree(t / "images")), "--out", str(work / "data"), "--use-given-split",
                      "--image-size", "32"]) == 0
    manifest = work / "data" / "manifest.parquet"
    gan = work / "gans" / "keyA"
    (gan / "checkpoints").mkdir(parents=True)
    for e in (1, 2):  # the sweep samples from the latest checkpoint
        (gan / "checkpoints" / f"checkpoint_00000{e}.pt").write_bytes(f"generator epoch {e}".encode())
    (gan / "config.json").write_text(json.dumps({"loss": "hinge", "_run": {"manifest": str(manifest)}}))
    syn = make_synthetic(gan / "synthetic", 25, label=1)
    clf = work / "classifiers" / "trialA"
    assert clf_main(["--manifest", str(manifest), "--out", str(clf), "--smoke-test", "--epochs", "2",
                     "--synthetic", str(syn), "--synthetic-ratio", "2"]) == 0
    base = {"sweep_name": "s", "stage": "classifier", "status": "ok", "error": "", "seed": 0, "gan_loss": "hinge",
            "synthetic_ratio": 2.0, "val_sensitivity": 0.5}
    rows = [
        {**base, "trial_id": "g1", "stage": "gan", "arm": "gan", "config_id": "", "gan_key": "keyA",
         "gan_run_dir": str(gan)},
        {**base, "trial_id": "trialA", "arm": "gan", "config_id": "A", "gan_key": "keyA", "val_f1": 0.80,
         "test_f1": 0.40, "clf_run_dir": str(clf), "synthetic_dir": str(syn), "gan_run_dir": str(gan)},
        {**base, "trial_id": "trialB", "arm": "gan", "config_id": "B", "gan_key": "keyB", "val_f1": 0.60,
         "test_f1": 0.99, "clf_run_dir": str(work / "classifiers" / "trialB"),
         "synthetic_dir": str(work / "gans" / "keyB" / "synthetic"), "gan_run_dir": str(work / "gans" / "keyB")},
        {**base, "trial_id": "trialC", "arm": "baseline", "config_id": "C", "gan_loss": "", "synthetic_ratio": 0.0,
         "val_f1": 0.95, "test_f1": 0.95, "clf_run_dir": str(work / "classifiers" / "trialC")},
    ]
    pd.DataFrame(rows).to_parquet(work / "results.parquet")
    return {"results": work / "results.parquet", "manifest": manifest, "clf": clf, "gan": gan, "work": work}


def _files(d: Path, prefix: str) -> list[Path]:
    return sorted(d.glob(f"{prefix}_*")) if d.is_dir() else []


def test_export_writes_the_val_chosen_config_and_its_config_reruns_it(sweep, tmp_path):
    out = tmp_path / "export"
    r = subprocess.run([sys.executable, "-m", "analysis.export", str(sweep["results"]), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "export.json").read_text())
    assert info["config_id"] == "A"  # best GAN on val; B is best on test, C is not a GAN arm
    assert "chosen on real validation: config A" in r.stdout

    m = read_manifest(sweep["manifest"])
    run = json.loads((sweep["clf"] / "metrics.json").read_text())
    data = out / "data"
    for split in ("train", "val", "test"):
        for cls in ("benign", "malignant"):
            n_real = int(((m.df["split"] == split) & (m.df["label_name"] == cls)).sum())
            assert len(_files(data / split / cls, "real")) == n_real, (split, cls)
    assert len(_files(data / "train" / "malignant", "synthetic")) == run["n_synthetic"] > 0
    assert {p.parent.relative_to(data).as_posix() for p in data.rglob("synthetic_*")} == {"train/malignant"}
    for split in ("val", "test"):  # real only
        assert not _files(data / split / "benign", "synthetic") and not _files(data / split / "malignant", "synthetic")
    index = pd.read_csv(data / "index.csv")
    assert set(index.loc[index["kind"] == "synthetic", "split"]) == {"train"}
    assert (index.loc[index["kind"] == "synthetic", "generator"] == "gan-test").all()
    # real files are the user's files, bit for bit
    first = index[index["kind"] == "real"].iloc[0]
    assert (data / first["file"]).read_bytes() == Path(first["source"]).read_bytes()
    # the generator the synthetic set came from: the latest checkpoint
    assert (out / "generator" / "gan_0" / "checkpoint_000002.pt").read_bytes() == b"generator epoch 2"

    # the exported config re-runs the classifier: same data, same seeded synthetic draw, same numbers
    rr = subprocess.run([sys.executable, "-m", "trainables.classifier", "--config", str(out / "classifier.yaml")],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rr.returncode == 0, rr.stderr
    again = json.loads((out / "rerun" / "metrics.json").read_text())
    assert again["n_synthetic"] == run["n_synthetic"] and again["data"]["train"] == run["data"]["train"]
    assert again["val"]["f1"] == pytest.approx(run["val"]["f1"]) and again["best_epoch"] == run["best_epoch"]
    assert again["test"]["confusion_matrix"] == run["test"]["confusion_matrix"]


def test_export_refuses_results_without_a_gan_row_and_missing_files(sweep, tmp_path, capsys):
    df = pd.read_parquet(sweep["results"])
    df[df["arm"] != "gan"].to_parquet(tmp_path / "no_gan.parquet")
    assert export_main([str(tmp_path / "no_gan.parquet"), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "no successful GAN configuration with validation metrics" in err and "no_gan.parquet" in err

    gone = df.copy()  # the chosen run's classifier folder was deleted
    gone.loc[gone["config_id"] == "A", "clf_run_dir"] = str(tmp_path / "deleted" / "classifiers" / "trialA_x")
    gone.to_parquet(tmp_path / "gone.parquet")
    assert export_main([str(tmp_path / "gone.parquet"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "classifier run folder not found" in err and "trialA_x" in err

    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "keep.txt").write_text("x")
    assert export_main([str(sweep["results"]), "--out", str(tmp_path / "o3")]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_import_analysis_export_stays_torch_free():
    code = "import sys, analysis.export; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
