"""External synthetic sets (--external NAME=DIR): folders read as they are, the leak audit against real val/test
images, the settings, their place in the verdict (a secondary family; the GAN's place without a GAN), and an end-to-end
smoke sweep judging a plain folder and per-class folders beside our GAN while refusing a folder of test images."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep.errors import ConfigError, DataError
from tests.real_data import REAL_DATA

ROOT = Path(__file__).resolve().parents[1]


def _save(img: np.ndarray, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **kw)


def test_a_plain_folder_and_class_folders_are_read_without_a_manifest(tmp_path):
    from data_prep.arrays import decode_rows
    from data_prep.manifest import read_synthetic_rows

    rng = np.random.default_rng(0)
    plain = tmp_path / "plain"  # any size, mode and format
    _save(rng.integers(0, 255, (40, 40, 4), np.uint8), plain / "a.png")
    _save(rng.integers(0, 255, (50, 30, 3), np.uint8), plain / "b.jpg", quality=90)
    _save(rng.integers(0, 255, (20, 20), np.uint8), plain / "c.bmp")
    _save(rng.integers(0, 255, (33, 33), np.uint8), plain / "d.tif")
    (plain / "notes.txt").write_text("not an image")
    rows = read_synthetic_rows(plain, ["benign", "malignant"], 1)
    assert len(rows) == 4 and set(rows["label"]) == {1} and set(rows["label_name"]) == {"malignant"}
    assert decode_rows(rows, 16, 3).shape == (4, 16, 16, 3)

    per = tmp_path / "per"
    for cls, n in (("benign", 3), ("malignant", 5)):
        for i in range(n):
            _save(rng.integers(0, 255, (24, 24, 3), np.uint8), per / cls / f"{i}.png")
    rows = read_synthetic_rows(per, ["benign", "malignant"], 1)
    assert rows.groupby("label_name").size().to_dict() == {"benign": 3, "malignant": 5}

    _save(rng.integers(0, 255, (24, 24, 3), np.uint8), per / "loose.png")
    with pytest.raises(DataError, match="one layout"):
        read_synthetic_rows(per, ["benign", "malignant"], 1)
    (tmp_path / "odd" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no image files.*'cats'.*not named after"):
        read_synthetic_rows(tmp_path / "odd", ["benign", "malignant"], 1)
    with pytest.raises(DataError, match="no synthetic manifest"):  # without the classes: our GANs' sets only
        read_synthetic_rows(plain)


def test_the_leak_audit_finds_re_saved_copies_of_held_out_images_and_nothing_in_a_copy_free_set():
    from trainables.metrics.memorisation import held_out_copies

    rng = np.random.default_rng(1)

    def smooth(n):  # image-like: low-frequency content, so distinct images are not all equally far apart
        small = rng.integers(0, 255, (n, 8, 8, 1), np.uint8)
        return np.stack([np.asarray(Image.fromarray(s[:, :, 0]).resize((32, 32), Image.BILINEAR))[:, :, None]
                         for s in small])

    train, held_out, new = smooth(200), smooth(60), smooth(80)
    held_out[0] = train[5]  # the data set's own duplicate across splits: a copy of it is no leak

    def jpeg(img):
        buf = io.BytesIO()
        Image.fromarray(img[:, :, 0]).save(buf, format="JPEG", quality=85)
        return np.asarray(Image.open(buf))[:, :, None]

    def resized(img):  # up to 64 px and back, as a generator at another resolution would hand it over
        big = Image.fromarray(img[:, :, 0]).resize((64, 64), Image.BICUBIC)
        return np.asarray(big.resize((32, 32), Image.BILINEAR))[:, :, None]

    copies = [jpeg(held_out[i]) for i in range(1, 11)] + [resized(held_out[i]) for i in range(11, 21)]
    fake = np.concatenate([np.stack(copies), new, train[:30], held_out[:1]])
    summary, idx = held_out_copies(fake, held_out, train)
    assert summary["leak_copies"] == 20 and summary["leak_copied_images"] == 20
    assert sorted(idx[idx >= 0].tolist()) == list(range(1, 21))
    assert summary["held_out_with_train_twin"] == 1  # held_out[0]: its copy at the end is not counted
    clean, _ = held_out_copies(np.concatenate([new, train[:50]]), held_out, train)
    assert clean["leak_copies"] == 0  # the memorisation audit's percentile rule would flag ~5% here by chance


def test_external_settings_are_checked_and_repeatable(tmp_path):
    from sweeps import config as sweep_config
    from sweeps.augment_ratio import parse_args

    _, cli = parse_args(["--external", "a=/x,y", "--external", "b=rel", "--allow-leaky", "b", "--no-train-gan"])
    cfg = sweep_config.resolve({}, cli).with_absolute_paths()
    assert cfg.external == ("a=/x,y", f"b={Path('rel').resolve()}") and cfg.allow_leaky == ("b",)
    assert not cfg.train_gan
    assert sweep_config.resolve({"external": {"medigan": "/m"}}, {}).external == ("medigan=/m",)
    for bad, msg in (({"external": ("nodir",)}, "expected NAME=DIR"), ({"external": ("1x=/d",)}, "must start"),
                     ({"external": ("a=/d", "a=/e")}, "given twice"),
                     ({"external": ("a=/d",), "allow_leaky": ("b",)}, "not external sets"),
                     ({"train_gan": False}, "nothing to judge")):
        with pytest.raises(ConfigError, match=msg):
            sweep_config.resolve(bad, {})
    from sweeps.plan import plan

    p = plan(sweep_config.resolve({"external": ("a=/d", "b=/e"), "train_gan": False, "num_seeds": 3,
                                   "clf_lr_grid": (1e-3,), "synthetic_ratios": (0.5, 1.0)}, {}))
    assert p.search_trials == 0 and p.confirm_gan_trainings == 0
    assert p.arm_names == ("baseline", "control (C)", "external a on C", "external b on C")
    assert p.confirm_trials == (2 + 2 * 2) * 3  # baseline, C; each set x its 2 ratios; x 3 seeds


def _rows(arm: str, f1: list[float], setup: str, external: str = "", status="ok") -> list[dict]:
    out = []
    for seed, v in zip(range(1000, 1000 + len(f1)), f1):
        out.append({"arm": arm, "external": external, "config_id": setup, "setup_id": setup, "seed": seed,
                    "status": status, "error": "", "trial_id": f"{setup}-{seed}", "stage": "classifier",
                    "sweep_phase": "confirm", "confirm_rank": 1 if arm in ("gan", "control+gan") else
                    (1 if external == "a" else 2 if external else np.nan),
                    "val_f1": v, "val_sensitivity": v, "test_f1": v, "test_sensitivity": v, "test_specificity": 0.9,
                    "clf_threshold": 0.5, "n_test_positive": 15})
    return out


def test_external_sets_are_a_secondary_family_and_take_the_gans_place_without_a_gan():
    from analysis.decision import decide

    noise = np.random.default_rng(3).normal(0, 0.01, 6)
    base = [0.50 + x for x in noise]
    rows = (_rows("baseline", base, "b") + _rows("control", [v + 0.05 for v in base], "c")
            + _rows("external", [v + 0.25 + 0.01 * (i % 2) for i, v in enumerate(base)], "xa", "a")
            + _rows("external", [v + 0.05 + 0.02 * (-1) ** i for i, v in enumerate(base)], "xb", "b"))
    gan = _rows("gan", [v + 0.01 * (-1) ** i for i, v in enumerate(base)], "g")
    stacked = _rows("control+gan", [v + 0.05 + 0.02 * (-1) ** i for i, v in enumerate(base)], "s")
    df = pd.DataFrame(rows + gan + stacked)
    d = decide(df, df, ["f1", "sensitivity", "specificity"], None, cover_test_images=False)
    assert d.externals == ["ext:a", "ext:b"] and d.primary_external == ""
    t = d.tests.set_index(["comparison", "metric"])
    assert t.loc[("ext:a - control", "f1"), "verdict"] == "helps"
    assert t.loc[("ext:b - control", "f1"), "verdict"] == "no evidence"
    assert t.loc[("ext:a - control", "f1"), "family"] == "external"
    # Holm within each family: the external family's 4 claims, the primary family's own
    ext = d.tests[(d.tests["family"] == "external") & d.tests["claim"]]
    p = ext["p_value"].to_numpy()
    assert np.isclose(ext["p_holm"].min(), min(1.0, 4 * p.min()))
    prim = d.tests[(d.tests["family"] == "primary") & d.tests["claim"] & d.tests["tested"]]
    assert np.isclose(prim["p_holm"].min(), min(1.0, len(prim) * prim["p_value"].min()))
    # no GAN in the sweep: the first external set (by its place in --external) is the primary claim's arm
    only = pd.DataFrame(rows)
    d = decide(only, only, ["f1", "sensitivity", "specificity"], None, cover_test_images=False)
    assert d.primary_external == "a" and d.externals == ["ext:b"] and d.picks["stacked"].arm == "external"
    t = d.tests.set_index(["comparison", "metric"])
    assert t.loc[("stacked - control", "f1"), "verdict"] == "helps"
    assert t.loc[("stacked - control", "f1"), "family"] == "primary"


def _external_folders(manifest, out: Path, n_test_copies: int = 20) -> dict[str, Path]:
    """From a prepared manifest: a plain folder of 'generated' minority images (train minority images flipped,
    noised, resized to twice the size, JPEG), per-class folders (the same kind, both classes) and a leaky folder
    holding n_test_copies real TEST minority images among generated ones."""
    from data_prep.arrays import decode_rows

    df, pos = manifest.df, manifest.positive_label
    rng = np.random.default_rng(0)
    size = int(manifest.meta.get("image_size", 32))

    def made(rows):
        x = decode_rows(rows, size, 3)[:, :, ::-1].astype(float) + rng.normal(0, 12, (len(rows), size, size, 3))
        return np.clip(x, 0, 255).astype(np.uint8)

    train_min = df[(df["split"] == "train") & (df["label"] == pos)]
    test_min = df[(df["split"] == "test") & (df["label"] == pos)].head(n_test_copies)
    other = df[(df["split"] == "train") & (df["label"] != pos)].head(10)
    folders = {name: out / name for name in ("plain", "perclass", "leaky")}
    folders["plain"].mkdir(parents=True)
    for i, im in enumerate(made(train_min)):
        Image.fromarray(im).resize((2 * size, 2 * size)).save(folders["plain"] / f"g{i:03d}.jpg", quality=95)
        _save(im, folders["perclass"] / manifest.positive_class / f"m{i:03d}.png")
    for i, im in enumerate(made(other)):
        _save(im, folders["perclass"] / manifest.classes[1 - pos] / f"o{i:03d}.png")
    for i, im in enumerate(decode_rows(test_min, size, 3)):
        _save(im, folders["leaky"] / f"t{i:03d}.png")
    for i, im in enumerate(made(train_min)[: len(train_min) // 2]):
        _save(im, folders["leaky"] / f"g{i:03d}.png")
    return folders


def test_smoke_sweep_judges_external_folders_beside_the_gan_and_refuses_one_of_test_images(tmp_path):
    """On BreastMNIST (../shared/data) when present, else on the project's demo data."""
    import data_prep

    npz = REAL_DATA / "breastmnist.npz"
    if npz.is_file():
        prep = data_prep.PrepConfig(source=str(npz), use_given_split=True, image_size=28, channels=1)
        extra = ["--image-size", "28", "--channels", "1"]
    else:
        prep = data_prep.PrepConfig(source="demo", demo_num_majority=100, demo_num_minority=40, demo_image_size=32,
                                    image_size=32)
        extra = []
    manifest = data_prep.prepare(prep, tmp_path / "data", progress=False)
    folders = _external_folders(manifest, tmp_path / "ext", n_test_copies=20)
    n_leaked = min(20, int(((manifest.df["split"] == "test") & (manifest.df["label"] == manifest.positive_label)).sum()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    args = ["--smoke-test", "--manifest", str(tmp_path / "data" / "manifest.parquet"), "--max-images-per-class", "0",
            "--storage-path", str(tmp_path / "runs"), *extra,
            *(a for name, d in folders.items() for a in ("--external", f"{name}={d}"))]
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "augment_ratio.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "test near-copies: REFUSED: LEAK" in out, out[-4000:]
    assert "EXTERNAL SET 'leaky' REFUSED" in out  # said again with the answer
    work = tmp_path / "runs" / "smoke_test"
    leaky = json.loads((work / "sweep_state.json").read_text())["external"]["leaky"]
    # every copied test image is found, except those the data set itself duplicates in train (BreastMNIST: 30% of
    # its test images have a train image within the rule's distance; a copy of one of those cannot be told apart)
    assert leaky["leak_val_copies"] == 0 and n_leaked // 2 <= leaky["leak_test_copies"] <= n_leaked
    df = pd.read_parquet(work / "results.parquet")
    ext = df[df["arm"] == "external"]
    assert set(ext["external"]) == {"plain", "perclass"} and (ext["status"] == "ok").all()
    assert set(ext["sweep_phase"]) == {"confirm"} and (ext["n_synthetic"] > 0).all()
    assert (ext["leak_test_copies"] == 0).all() and ext["gan_kid"].notna().all()
    state = json.loads((work / "sweep_state.json").read_text())
    n_min = len(list((folders["perclass"] / manifest.positive_class).glob("*.png")))
    assert state["external"]["perclass"]["n_images"] == n_min  # the other class's folder is not imported
    gan_rows = df[(df["stage"] == "gan") & (df["status"] == "ok")]
    assert (gan_rows["leak_test_copies"] == 0).all()  # our own GAN's set is audited too
    import analysis

    h = analysis.headline(analysis.load(work / "results.parquet"))
    assert list(h.externals) == ["ext:plain", "ext:perclass"] and h.gan is not None
    fam = h.tests[h.tests["claim"]].groupby("family").size().to_dict()
    assert fam == {"primary": 4, "external": 4}
    report = (work / "report" / "report.md").read_text()
    assert "## External synthetic sets" in report and "was REFUSED as an arm" in report
    assert (work / "report" / "external_plain.png").is_file() and "C + ext 'plain' (secondary)" in report
