"""Patients never cross splits: the leakage guard checks groups on every manifest data_prep makes or is given
(CSV split column, split-keyed npz with *_groups), K-fold manifests, and the sweep's --manifest; the explicit
alternative --move-crossing-groups moves each crossing patient whole to its most held-out split."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep import LeakageError, PrepConfig, prepare, read_manifest
from data_prep.__main__ import main as cli_main
from data_prep.manifest import check_no_leakage, write_manifest
from trainables.classifier.data import kfold_manifests

ROOT = Path(__file__).resolve().parents[1]

# patient -> (class, given split); every patient has 2 images
PATIENTS = {**{f"b{i}": ("benign", "train") for i in range(8)}, "b8": ("benign", "val"), "b9": ("benign", "val"),
            "b10": ("benign", "test"), "b11": ("benign", "test"),
            **{f"m{i}": ("malignant", "train") for i in range(4)}, "m4": ("malignant", "val"),
            "m5": ("malignant", "test")}


def _csv(root: Path, leaks: dict[str, str] | None = None, name: str = "labels.csv") -> Path:
    """Class-folder PNGs + a CSV path,label,group,split. leaks: patient -> split given to its SECOND image."""
    rng = np.random.default_rng(0)
    rows = []
    for p, (cls, split) in PATIENTS.items():
        for k in range(2):
            rel = f"img/{p}_{k}.png"
            if not (root / rel).exists():
                (root / "img").mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / rel)
            s = (leaks or {}).get(p, split) if k == 1 else split
            rows.append(f"{rel},{cls},{p},{s}")
    path = root / name
    path.write_text("path,label,group,split\n" + "\n".join(rows) + "\n")
    return path


def test_a_patient_in_train_and_test_exits_2_naming_the_patient(tmp_path, capsys):
    csv = _csv(tmp_path, leaks={"m2": "test"})
    assert cli_main(["--source", str(csv), "--out", str(tmp_path / "o"), "--use-given-split"]) == 2
    err = capsys.readouterr().err
    assert "1 group(s) (patients) have images in more than one split: 'm2' (train 1, test 1)" in err
    assert "--move-crossing-groups" in err
    assert not (tmp_path / "o" / "manifest.parquet").exists()


def test_move_crossing_groups_moves_exactly_that_patient_to_test_and_says_so(tmp_path, capsys):
    csv = _csv(tmp_path, leaks={"m2": "test", "b3": "val"})
    assert cli_main(["--source", str(csv), "--out", str(tmp_path / "o"), "--use-given-split",
                     "--move-crossing-groups"]) == 0
    out = capsys.readouterr().out
    assert "2 image(s) of 2 group(s) (patients) that crossed the given splits were moved" in out
    m = read_manifest(tmp_path / "o" / "manifest.parquet")
    got = m.df.assign(image=m.df["image_id"].str.extract(r"img/(\w+)_\d", expand=False))
    for p, (_, split) in PATIENTS.items():
        want = {"m2": "test", "b3": "val"}.get(p, split)  # the most held-out split holding one of its images
        assert set(got.loc[got["image"] == p, "split"]) == {want}, p
    assert m.meta["groups_moved_to_held_out"] == {"groups": 2, "images": 2}


def test_many_crossing_groups_are_listed_first_five_then_counted():
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(16)], "split": ["train", "test"] * 8,
                       "group": [f"p{k // 2}" for k in range(16)], "is_synthetic": False,
                       "sha256": [f"h{k}" for k in range(16)]})
    with pytest.raises(LeakageError) as e:
        check_no_leakage(df, where="x")
    msg = str(e.value)
    assert "8 group(s)" in msg and "'p0' (train 1, test 1)" in msg and "'p4'" in msg and "'p5'" not in msg
    assert "and 3 more" in msg
    # synthetic rows (no group) and ungrouped real rows are never a crossing
    ok = df.assign(group=["", "", *[f"q{k}" for k in range(14)]])
    check_no_leakage(ok, where="x")


def test_clean_data_passes_unchanged_and_byte_identical(tmp_path, capsys):
    csv = _csv(tmp_path)
    assert cli_main(["--source", str(csv), "--out", str(tmp_path / "a"), "--use-given-split"]) == 0
    assert cli_main(["--source", str(csv), "--out", str(tmp_path / "b"), "--use-given-split",
                     "--move-crossing-groups"]) == 0
    assert "group(s) (patients)" not in capsys.readouterr().out
    a, b = (tmp_path / "a" / "manifest.parquet").read_bytes(), (tmp_path / "b" / "manifest.parquet").read_bytes()
    assert a == b
    m = read_manifest(tmp_path / "a" / "manifest.parquet")
    given = {f"img/{p}_{k}.png": s for p, (_, s) in PATIENTS.items() for k in range(2)}
    assert dict(zip(m.df["image_id"], m.df["split"])) == given
    assert "groups_moved_to_held_out" not in m.meta


def _npz(path: Path, leak: bool) -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for s, n in (("train", 20), ("val", 6), ("test", 6)):
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        arrays[f"{s}_labels"] = np.array([0, 1] * (n // 2)).reshape(-1, 1)
        arrays[f"{s}_groups"] = np.array([f"{s}{k // 2}" for k in range(n)], dtype="U16")
    if leak:
        arrays["test_groups"][0] = "train3"  # patient train3 also has an image in test
    np.savez(path, **arrays)
    return path


def test_npz_given_split_with_groups_is_checked_the_same_way(tmp_path):
    leaky = _npz(tmp_path / "leaky.npz", leak=True)
    with pytest.raises(LeakageError, match=r"'train3' \(train 2, test 1\)"):
        prepare(PrepConfig(source=str(leaky), use_given_split=True, channels=1), tmp_path / "o", progress=False)
    m = prepare(PrepConfig(source=str(leaky), use_given_split=True, channels=1, move_crossing_groups=True),
                tmp_path / "o2", progress=False)
    assert set(m.df.loc[m.df["group"] == "train3", "split"]) == {"test"}
    assert m.meta["groups_moved_to_held_out"] == {"groups": 1, "images": 2}
    clean = prepare(PrepConfig(source=str(_npz(tmp_path / "clean.npz", leak=False)), use_given_split=True,
                               channels=1), tmp_path / "o3", progress=False)
    assert (clean.df["split"] == clean.df["source_key"].str.replace("_images", "")).all()


def test_kfold_manifests_keep_patients_whole_and_a_forced_crossing_is_caught(tmp_path):
    m = prepare(PrepConfig(source=str(_csv(tmp_path)), use_given_split=True), tmp_path / "o", progress=False)
    for fold in kfold_manifests(m, 2, seed=0):
        per = fold.df.groupby("group")["split"].nunique()
        assert (per == 1).all()
    bad = m.df.copy()
    bad.loc[bad.index[bad["group"] == "b0"][:1], "split"] = "val"
    with pytest.raises(LeakageError, match="'b0'"):
        check_no_leakage(bad, where="fold")


def test_sweep_refuses_a_leaky_manifest_before_ray_starts(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(ROOT / "sweeps"))
    import ray

    from sweeps.augment_ratio import main as sweep_main

    m = prepare(PrepConfig(source=str(_csv(tmp_path)), use_given_split=True), tmp_path / "o", progress=False)
    m.df.loc[m.df.index[m.df["group"] == "m1"][:1], "split"] = "test"
    write_manifest(m, tmp_path / "leaky" / "manifest.parquet")
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started on leaky data"))
    rc = sweep_main(["--manifest", str(tmp_path / "leaky" / "manifest.parquet"), "--storage-path",
                     str(tmp_path / "res"), "--smoke-test"])
    assert rc == 2
    assert "'m1' (train 1, test 1)" in capsys.readouterr().err
    rc = sweep_main(["--data", str(_csv(tmp_path, leaks={"m1": "test"}, name="l2.csv")), "--use-given-split",
                     "--storage-path", str(tmp_path / "res2"), "--smoke-test"])
    assert rc == 2
    assert "'m1' (train 1, test 1)" in capsys.readouterr().err


def test_npz_flat_groups_beside_split_keys_is_refused_saying_what_to_give(tmp_path):
    from data_prep import DataError

    path = _npz(tmp_path / "x.npz", leak=False)
    arrays = dict(np.load(path))
    arrays["groups"] = np.array(["a"] * 32)
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="give one per split as train_groups, val_groups, test_groups"):
        prepare(PrepConfig(source=str(path), use_given_split=True, channels=1), tmp_path / "o", progress=False)
