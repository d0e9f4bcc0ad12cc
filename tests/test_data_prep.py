"""data_prep: sources, split, manifest determinism, leakage guard, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import data_prep
from data_prep import DataError, LeakageError, PrepConfig, prepare, read_manifest
from data_prep.__main__ import main as cli_main
from data_prep.errors import ConfigError
from data_prep.images import to_uint8_channels
from data_prep.manifest import add_synthetic_rows, check_no_leakage, read_synthetic_rows, write_synthetic_rows
from data_prep.split import assign_splits

from real_data import REAL_DATA


def _write_folder(root, counts, size=16, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        d = root / cls
        d.mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(d / f"{cls}_{i:03d}.png")
    return root


# ---------------------------------------------------------------- determinism and the demo set

def test_demo_counts_ratio_and_byte_identical(tmp_path):
    cfg = PrepConfig(source="demo", demo_num_majority=200, demo_num_minority=20, demo_image_size=32)
    a = prepare(cfg, tmp_path / "a", progress=False)
    prepare(cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "a/manifest.parquet").read_bytes() == (tmp_path / "b/manifest.parquet").read_bytes()
    counts = a.df["label_name"].value_counts()
    assert counts["benign"] == 200 and counts["malignant"] == 20
    assert a.positive_class == "malignant"
    # another seed gives another split of the same images
    c = prepare(PrepConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "c", progress=False)
    assert not np.array_equal(a.df["split"].to_numpy(), c.df["split"].to_numpy())
    assert sorted(a.df["image_id"]) == sorted(c.df["image_id"])


def test_stratified_within_one_image_per_class_per_split():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 997)
    out = assign_splits(labels, np.array([""] * 997, dtype=object),
                        np.array([str(i) for i in range(997)], dtype=object), (0.7, 0.15, 0.15), seed=3)
    for lab in range(3):
        n = int((labels == lab).sum())
        for s, f in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
            got = int(((labels == lab) & (out == s)).sum())
            assert abs(got - n * f) <= 1, (lab, s, got, n * f)


def test_groups_never_cross_splits_and_duplicates_stay_together():
    rng = np.random.default_rng(1)
    n = 400
    groups = np.array([f"patient{i // 4}" for i in range(n)], dtype=object)  # 4 images per patient
    labels = np.array([(i // 4) % 5 == 0 for i in range(n)], dtype=int)
    hashes = np.array([f"h{i}" for i in range(n)], dtype=object)
    hashes[7] = hashes[300]  # an exact duplicate across two patients
    out = assign_splits(labels, groups, hashes, (0.6, 0.2, 0.2), seed=0)
    for g in np.unique(groups):
        assert len(set(out[groups == g])) == 1, g
    assert out[7] == out[300]
    assert set(out) == {"train", "val", "test"}


# ---------------------------------------------------------------- sources

def test_folder_source_modes_and_channels(tmp_path):
    root = tmp_path / "imgs"
    _write_folder(root, {"a": 6, "b": 5}, mode="L")
    # one RGBA and one 16-bit image among them
    Image.fromarray(np.full((16, 16, 4), 200, np.uint8), "RGBA").save(root / "a" / "rgba.png")
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).save(root / "b" / "deep16.png")
    m = prepare(PrepConfig(source=str(root), channels=1), tmp_path / "out", progress=False)
    assert len(m.df) == 13
    assert set(m.df["split"]) == {"train", "val", "test"}
    from data_prep.arrays import load_split_arrays

    for split in ("train", "val", "test"):
        x, y = load_split_arrays(m, split, 8, 3)
        assert x.shape[1:] == (8, 8, 3) and x.dtype == np.uint8
    # 16-bit image is stretched to the full 8-bit range, not left black
    row = m.df[m.df["image_id"] == "b/deep16.png"].iloc[0]
    from data_prep.sources import decode_record

    img = decode_record(row["source"], row["source_key"], row["source_index"], 1)
    assert img.max() == 255 and img.min() == 0


def test_to_uint8_channels_conversions():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    assert to_uint8_channels(rgb, 1)[0, 0, 0] == 76  # 0.299 * 255
    assert to_uint8_channels(np.full((2, 2), 9, np.uint8), 3).shape == (2, 2, 3)
    rgba = np.dstack([np.full((2, 2, 3), 200, np.uint8), np.zeros((2, 2), np.uint8)])
    assert to_uint8_channels(rgba, 3).max() == 0  # fully transparent composites to black


def test_csv_source_with_groups(tmp_path):
    root = _write_folder(tmp_path / "data", {"neg": 12, "pos": 9})
    rows = [(f"{c}/{p.name}", c, f"pt{i // 3}_{c}") for c in ("neg", "pos")
            for i, p in enumerate(sorted((root / c).iterdir()))]
    pd.DataFrame(rows, columns=["path", "label", "group"]).to_csv(root / "labels.csv", index=False)
    m = prepare(PrepConfig(source=str(root / "labels.csv"), fractions=(0.34, 0.33, 0.33)), tmp_path / "o",
                progress=False)
    for g, s in m.df.groupby("group")["split"].nunique().items():
        assert s == 1, g
    assert m.positive_class == "pos"


def test_relabel_and_named_positive(tmp_path):
    root = _write_folder(tmp_path / "d", {"MT_Free": 20, "MT_Crack": 4, "MT_Fray": 4})
    lm = data_prep.parse_label_map("MT_Free=good,MT_Crack=defect,MT_Fray=defect")
    m = prepare(PrepConfig(source=str(root), label_map=lm), tmp_path / "o", progress=False)
    assert m.classes == ["defect", "good"] and m.positive_class == "defect" and m.positive_label == 0
    m2 = prepare(PrepConfig(source=str(root), label_map=lm, positive_class="good"), tmp_path / "o2", progress=False)
    assert m2.positive_label == 1


def test_npz_medmnist_given_split_carves_val(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", train_images=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8),
             train_labels=np.r_[np.zeros(45), np.ones(15)].astype(np.uint8).reshape(-1, 1),
             test_images=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
             test_labels=np.r_[np.zeros(15), np.ones(5)].astype(np.uint8).reshape(-1, 1))
    m = prepare(PrepConfig(source=str(tmp_path / "x.npz"), use_given_split=True), tmp_path / "o", progress=False)
    assert (m.df["split"] == "test").sum() == 20
    assert (m.df[m.df["split"] == "test"]["image_id"].str.startswith("test_images/")).all()
    assert (m.df["split"] == "val").sum() > 0
    assert m.positive_class == "1"


# ---------------------------------------------------------------- leakage guard

def test_guard_catches_each_violation(tiny_demo):
    m = read_manifest(tiny_demo)
    check_no_leakage(m.df)  # clean manifest passes
    syn = pd.DataFrame({"image_id": ["syn0"], "source": ["x.png"], "label": [1], "sha256": ["abc"],
                        "generator": ["g"]})
    m2 = add_synthetic_rows(m, syn)
    assert (m2.df[m2.df["is_synthetic"]]["split"] == "train").all()
    forced = m2.df.copy()
    forced.loc[forced["is_synthetic"], "split"] = "val"
    with pytest.raises(LeakageError, match="synthetic row.*outside train.*syn0"):
        check_no_leakage(forced)
    leaked = m.df.copy()
    val_i = leaked.index[leaked["split"] == "test"][0]
    leaked.loc[val_i, "sha256"] = leaked.loc[leaked["split"] == "train", "sha256"].iloc[0]
    with pytest.raises(LeakageError, match="test image.*also appear in train"):
        check_no_leakage(leaked)
    odd = m.df.copy()
    odd.loc[0, "split"] = "holdout"
    with pytest.raises(LeakageError, match="holdout"):
        check_no_leakage(odd)


def test_synthetic_rows_round_trip_and_refuse_held_out(tmp_path):
    d = tmp_path / "syn"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "synthetic_1_000000.png")
    rows = pd.DataFrame({"image_id": ["s0"], "source": [str(d / "synthetic_1_000000.png")], "label": [1],
                         "label_name": ["malignant"], "sha256": ["h"], "generator": ["ckpt"], "width": [8],
                         "height": [8], "channels": [3]})
    write_synthetic_rows(rows, d)
    back = read_synthetic_rows(d)
    assert back["source"].iloc[0] == str((d / "synthetic_1_000000.png").resolve())
    df = pd.read_parquet(d / "manifest.parquet")
    df["split"] = "test"
    df.to_parquet(d / "manifest.parquet")
    with pytest.raises(LeakageError, match="split != 'train'"):
        read_synthetic_rows(d)


# ---------------------------------------------------------------- bad input, each named

@pytest.mark.parametrize("case", ["missing", "empty_dir", "empty_class", "one_class", "too_small"])
def test_bad_folder_inputs(tmp_path, case):
    root = tmp_path / "d"
    if case == "missing":
        src, match = tmp_path / "nope", "source not found: .*nope"
    elif case == "empty_dir":
        root.mkdir(); src, match = root, "no class sub-folders"
    elif case == "empty_class":
        _write_folder(root, {"a": 5}); (root / "b").mkdir(); src, match = root, "class folder .*b holds no images"
    elif case == "one_class":
        _write_folder(root, {"a": 5}); src, match = root, "found 1 class"
    else:
        _write_folder(root, {"a": 10, "b": 2}); src, match = root, "class 'b' has 2 image.*needs at least 3"
    with pytest.raises(DataError, match=match):
        prepare(PrepConfig(source=str(src)), tmp_path / "o", progress=False)


def test_unreadable_images_listed_or_skipped(tmp_path):
    root = _write_folder(tmp_path / "d", {"a": 6, "b": 6})
    good = (root / "a" / "a_000.png").read_bytes()
    (root / "a" / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"2 unreadable image\(s\)[\s\S]*trunc.png[\s\S]*junk.png"):
        prepare(PrepConfig(source=str(root)), tmp_path / "o", progress=False)
    m = prepare(PrepConfig(source=str(root), skip_bad=True), tmp_path / "o", progress=False)
    assert len(m.df) == 12 and len(m.meta["skipped_files"]) == 2


def test_csv_bad_inputs(tmp_path):
    root = _write_folder(tmp_path / "d", {"a": 4, "b": 4})
    (root / "nocol.csv").write_text("file,label\na/a_000.png,a\n")
    with pytest.raises(DataError, match=r"nocol.csv: missing column\(s\) \['path'\]"):
        prepare(PrepConfig(source=str(root / "nocol.csv")), tmp_path / "o", progress=False)
    (root / "gone.csv").write_text("path,label\na/a_000.png,a\na/missing.png,a\n")
    with pytest.raises(DataError, match="row 3: file not found: .*missing.png"):
        prepare(PrepConfig(source=str(root / "gone.csv")), tmp_path / "o", progress=False)
    (root / "escape.csv").write_text("path,label\n../../etc/passwd,a\n")
    with pytest.raises(DataError, match="row 2: path '../../etc/passwd' resolves outside"):
        prepare(PrepConfig(source=str(root / "escape.csv")), tmp_path / "o", progress=False)


def test_label_not_in_map(tmp_path):
    root = _write_folder(tmp_path / "d", {"x": 4, "y": 4, "z": 4})
    with pytest.raises(DataError, match=r"label\(s\) \['z'\] are not in the label map"):
        prepare(PrepConfig(source=str(root), label_map=(("x", "p"), ("y", "q"))), tmp_path / "o", progress=False)


@pytest.mark.parametrize("arrays,match", [
    ({"foo": np.zeros(3)}, "unrecognised keys"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.zeros((3,))}, "labels has 3 labels but .* 4 images"),
    ({"images": np.zeros((4, 8), np.uint8), "labels": np.zeros(4)}, r"images has shape \(4, 8\)"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.zeros((4, 2))}, r"labels has shape \(4, 2\)"),
    ({"train_images": np.zeros((4, 8, 8), np.uint8)}, "train_images or train_labels without the other"),
])
def test_npz_bad_shapes_and_keys(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        prepare(PrepConfig(source=str(tmp_path / "bad.npz")), tmp_path / "o", progress=False)


def test_config_errors():
    with pytest.raises(ConfigError, match="sum to 1"):
        PrepConfig(fractions=(0.5, 0.3, 0.3))
    with pytest.raises(ConfigError, match=r"unknown PrepConfig key\(s\) \['sead'\]"):
        data_prep.config_from_dict(PrepConfig, {"sead": 1})


def test_cli_prints_counts_and_errors(tmp_path, capsys):
    assert cli_main(["--source", "demo", "--demo-counts", "30,6", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "imbalance ratio (largest / smallest class): 5.00:1" in out and "malignant" in out
    assert cli_main(["--source", "demo", "--demo-counts", "30,6", "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert cli_main(["--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "source not found" in capsys.readouterr().err
    assert cli_main(["--source", "demo", "--fractions", "0.5,0.5,0.5", "--out", str(tmp_path / "o3")]) == 2
    assert "sum to 1" in capsys.readouterr().err


# ---------------------------------------------------------------- the real data in ../shared/data

REAL_CASES = [
    ("breastmnist.npz", dict(use_given_split=True, channels=1), "0"),       # minority is label 0
    ("pneumoniamnist.npz", dict(use_given_split=True, channels=1), "0"),    # labels shaped (N, 1)
    ("chest_xray_64.npz", dict(use_given_split=True, channels=1), "0"),     # no val: carved from train
    ("magnetic_tile_64.npz", dict(channels=1, label_map=data_prep.parse_label_map(
        "MT_Free=good,MT_Blowhole=defect,MT_Break=defect,MT_Crack=defect,MT_Fray=defect,MT_Uneven=defect")), "defect"),
]


@pytest.mark.parametrize("name,kw,positive", REAL_CASES, ids=[c[0] for c in REAL_CASES])
def test_real_data_files(tmp_path, name, kw, positive):
    path = REAL_DATA / name
    if not path.exists():
        pytest.skip(f"real data not present at {path} (see shared/data/README.md)")
    m = prepare(PrepConfig(source=str(path), **kw), tmp_path, progress=False)
    assert m.positive_class == positive
    assert set(m.df["split"]) == {"train", "val", "test"}
    check_no_leakage(m.df)
    for s in ("train", "val", "test"):
        assert (m.split(s)["label_name"] == positive).any()
    from data_prep.arrays import load_split_arrays

    x, y = load_split_arrays(m, "val", 32, 1)
    assert x.shape == (len(m.split("val")), 32, 32, 1)


# ---------------------------------------------------------------- pre-split sources (folder tree, CSV split column)

def _write_split_tree(root, splits=("train", "val", "test"), counts=None, size=8):
    """root/<split>/<class>/*.png with distinct random images; returns {relative path: split}."""
    counts = counts or {"train": {"benign": 12, "malignant": 6}, "val": {"benign": 4, "malignant": 2},
                        "valid": {"benign": 4, "malignant": 2}, "test": {"benign": 5, "malignant": 3}}
    rng = np.random.default_rng(7)
    where = {}
    for s in splits:
        for cls, n in counts[s].items():
            d = root / s / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")
                where[f"{s}/{cls}/{i:03d}.png"] = {"valid": "val"}.get(s, s)
    return where


def test_presplit_folder_tree_needs_a_choice_and_keeps_the_split(tmp_path, capsys):
    where = _write_split_tree(tmp_path / "tree")
    src = str(tmp_path / "tree")
    # detected, no choice given: refused, never read with train/val/test as classes
    assert cli_main(["--source", src, "--out", str(tmp_path / "o0")]) == 2
    err = capsys.readouterr().err
    assert "split folders train/, val/, test/" in err and "--use-given-split" in err and "--resplit" in err
    assert not (tmp_path / "o0" / "manifest.parquet").exists()

    assert cli_main(["--source", src, "--out", str(tmp_path / "kept"), "--use-given-split"]) == 0
    m = read_manifest(tmp_path / "kept" / "manifest.parquet")
    assert m.classes == ["benign", "malignant"] and m.positive_class == "malignant"
    assert dict(zip(m.df["image_id"], m.df["split"])) == where  # every image in the split its folder names

    assert cli_main(["--source", src, "--out", str(tmp_path / "pooled"), "--resplit", "--seed", "3"]) == 0
    p = read_manifest(tmp_path / "pooled" / "manifest.parquet")
    assert p.classes == ["benign", "malignant"] and sorted(p.df["image_id"]) == sorted(where)
    assert dict(zip(p.df["image_id"], p.df["split"])) != where  # split anew by fractions and seed
    assert cli_main(["--source", src, "--out", str(tmp_path / "o1"), "--resplit", "--use-given-split"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_presplit_tree_without_val_carves_it_from_train(tmp_path):
    where = _write_split_tree(tmp_path / "tree", splits=("train", "test"))
    m = prepare(PrepConfig(source=str(tmp_path / "tree"), use_given_split=True), tmp_path / "o", progress=False)
    given = m.df["image_id"].map(where)
    assert (m.df.loc[given == "test", "split"] == "test").all() and (given[m.df["split"] == "test"] == "test").all()
    val = m.df[m.df["split"] == "val"]
    assert len(val) > 0 and set(val["label_name"]) == {"benign", "malignant"}
    assert (given[val.index] == "train").all()  # carved from the given train split, never from test
    # "valid" is accepted for val
    w2 = _write_split_tree(tmp_path / "tree2", splits=("train", "valid", "test"))
    m2 = prepare(PrepConfig(source=str(tmp_path / "tree2"), use_given_split=True), tmp_path / "o2", progress=False)
    assert dict(zip(m2.df["image_id"], m2.df["split"])) == w2


@pytest.mark.parametrize("layout, message", [
    ("mixed", "mixes split folders ['train'] with other folders ['extra']"),
    ("loose", "holds images directly (e.g. x.png)"),
    ("no_test", "use_given_split needs a test split (a folder"),
])
def test_presplit_tree_bad_layouts_named(tmp_path, layout, message):
    root = tmp_path / "tree"
    if layout == "mixed":
        _write_split_tree(root, splits=("train",))
        _write_folder(root, {"extra": 3})
    elif layout == "loose":
        _write_split_tree(root, splits=("train", "test"))
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "x.png")
    else:
        _write_split_tree(root, splits=("train", "val"))
    with pytest.raises(DataError) as e:
        prepare(PrepConfig(source=str(root), use_given_split=True), tmp_path / "o", progress=False)
    assert message in str(e.value)


def test_csv_split_column_kept_and_bad_values_named(tmp_path, capsys):
    where = _write_split_tree(tmp_path / "img")
    rows = [f"img/{p},{p.split('/')[1]},{s.upper() if i % 5 == 0 else s}" for i, (p, s) in enumerate(where.items())]
    (tmp_path / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    assert cli_main(["--source", str(tmp_path / "l.csv"), "--out", str(tmp_path / "o0")]) == 2
    assert "a split column (values ['train', 'val', 'test'])" in capsys.readouterr().err
    assert cli_main(["--source", str(tmp_path / "l.csv"), "--out", str(tmp_path / "o"), "--use-given-split"]) == 0
    m = read_manifest(tmp_path / "o" / "manifest.parquet")
    assert dict(zip(m.df["image_id"], m.df["split"])) == {f"img/{p}": s for p, s in where.items()}
    rows[3] = rows[3].rsplit(",", 1)[0] + ",holdout"
    rows[9] = rows[9].rsplit(",", 1)[0] + ","
    (tmp_path / "bad.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    assert cli_main(["--source", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o2"), "--use-given-split"]) == 2
    err = capsys.readouterr().err
    assert "2 bad row(s)" in err and "row 5 (img/train/benign/003.png): split 'holdout' is not a split name" in err
    assert "row 11" in err and "split ''" in err and "expected one of train, val, test" in err
