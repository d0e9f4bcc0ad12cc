"""Image sources -> one table of image records (before splitting).

Four kinds, chosen by what `source` names:
  * "demo"                 the built-in demo set (written as DIR/demo.npz, see data_prep.demo)
  * a directory            one sub-folder per class holding PNG/JPEG/BMP/TIFF files, or a pre-split tree
                           DIR/{train,val,test}/<class>/ (val may be named valid or validation)
  * a .csv file            columns path,label[,group][,split]; paths relative to the CSV's folder
  * a .npz file            MedMNIST-style {train,val,test}_{images,labels[,groups]} (any subset) or flat
                           images, labels[, classes, groups]

A source that carries a split (split folders, a CSV split column, npz split keys) records it per image in
`given_split`; `ScanResult.given_split_from` says where it came from, and data_prep.manifest decides
whether it is kept (--use-given-split) or pooled and re-split.

`scan_source` decodes every image once to record its size, channel count and pixel hash, and
collects every unreadable file before failing (or skipping them when asked), so nothing is
dropped without being named.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.errors import DataError
from data_prep.images import IMAGE_SUFFIXES, image_sha256, read_image_file, to_uint8_channels

NPZ_SPLITS = ("train", "val", "test")
# split names a pre-split folder tree or a CSV split column may use (case-insensitive) -> the manifest's name
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
RECORD_COLUMNS = ["image_id", "source", "source_key", "source_index", "source_label", "group", "given_split"]


@dataclass
class ScanResult:
    records: pd.DataFrame  # RECORD_COLUMNS + width, height, channels, sha256
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) skipped with skip_bad
    kind: str = ""  # demo | folder | csv | npz
    given_split_from: str = ""  # "split folders" | "split column" | "npz keys" | "" (the source has no split)


def _ref(path: Path) -> str:
    return str(path.resolve())


def _sub_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_rows(root: Path, class_dirs: list[Path], split: str) -> list[tuple]:
    rows = []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {d} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        rows += [(f.relative_to(root).as_posix(), _ref(f), "", -1, d.name, "", split) for f in files]
    return rows


def list_folder(root: Path) -> pd.DataFrame:
    """DIR/<class>/... (given_split "") or a pre-split tree DIR/{train,val,test}/<class>/... (given_split set)."""
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    top = _sub_dirs(root)
    if not top:
        raise DataError(f"{root}: no class sub-folders found; expected one folder per class, e.g. "
                        f"{root}/benign/*.png and {root}/malignant/*.png")
    split_dirs = [d for d in top if d.name.lower() in SPLIT_NAMES]
    if not split_dirs:
        return pd.DataFrame(_class_rows(root, top, ""), columns=RECORD_COLUMNS)
    # split folders are never classes: a tree with train/ (val/, test/) holds one folder per class in each
    others = [d.name for d in top if d not in split_dirs]
    if others:
        raise DataError(f"{root}: mixes split folders {[d.name for d in split_dirs]} with other folders {others}; "
                        f"expected either one folder per class ({root}/<class>/*.png) or a pre-split tree "
                        f"({root}/train/<class>/*.png, {root}/val/<class>/..., {root}/test/<class>/...)")
    names = [SPLIT_NAMES[d.name.lower()] for d in split_dirs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{root}: several folders name the {dup[0]} split: "
                        f"{[d.name for d, n in zip(split_dirs, names) if n == dup[0]]}; keep one")
    rows = []
    for d, split in zip(split_dirs, names):
        loose = sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        class_dirs = _sub_dirs(d)
        if loose or not class_dirs:
            raise DataError(f"split folder {d} " + (f"holds images directly (e.g. {loose[0]})" if loose else
                            "holds no class folders") + f"; in a pre-split tree each split folder holds one "
                            f"folder per class: {d}/<class>/*.png")
        rows += _class_rows(root, class_dirs, split)
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def list_csv(csv_path: Path, allow_outside_root: bool = False) -> pd.DataFrame:
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise DataError(f"{csv_path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; expected columns path,label[,group][,split], "
                        f"found {list(df.columns)}")
    has_split = "split" in df.columns
    if df.empty:
        raise DataError(f"{csv_path}: no rows")
    root = csv_path.parent.resolve()
    problems, rows = [], []
    for i, r in enumerate(df.itertuples(index=False), start=2):  # row 1 is the header
        rel, label = r.path.strip(), r.label.strip()
        if not rel:
            problems.append(f"row {i}: empty path")
            continue
        if not label:
            problems.append(f"row {i} ({rel}): empty label")
            continue
        p = (root / rel).resolve()
        if not allow_outside_root and root not in p.parents:
            problems.append(f"row {i}: path {rel!r} resolves outside the CSV's folder {root} "
                            f"(allow it with --allow-outside-root)")
            continue
        if not p.is_file():
            problems.append(f"row {i}: file not found: {p}")
            continue
        split = ""
        if has_split:
            value = r.split.strip()
            split = SPLIT_NAMES.get(value.lower(), "")
            if not split:
                problems.append(f"row {i} ({rel}): split {value!r} is not a split name; expected one of "
                                f"train, val, test (or valid/validation for val)")
                continue
        group = getattr(r, "group", "") if "group" in df.columns else ""
        rows.append((rel, str(p), "", -1, label, str(group).strip(), split))
    if problems:
        raise DataError(f"{csv_path}: {len(problems)} bad row(s):\n  " + "\n  ".join(problems[:50])
                        + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""))
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def _npz_labels(path: Path, key: str, arr: np.ndarray, n_images: int) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{path}: {key} has shape {arr.shape}; expected (N,) or (N, 1)")
    if len(arr) != n_images:
        raise DataError(f"{path}: {key} has {len(arr)} labels but the images array has {n_images} images")
    return arr


def _check_npz_images(path: Path, key: str, arr: np.ndarray) -> None:
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3, 4)):
        raise DataError(f"{path}: {key} has shape {arr.shape}; expected (N, H, W) or (N, H, W, C) with C in 1, 3, 4")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected numeric pixels")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise DataError(f"{path}: holds pickled objects, which are refused (use plain numeric arrays)") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as .npz ({exc})") from exc


def _npz_groups(path: Path, arrays: dict[str, np.ndarray], key: str, n: int):
    """The group (patient id) of each image from arrays[key], as strings; "" (no groups) when absent."""
    groups = arrays.get(key)
    if groups is None:
        return ""
    groups = np.asarray(groups).reshape(-1) if np.ndim(groups) == 2 and np.shape(groups)[1] == 1 else np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n:
        raise DataError(f"{path}: {key} has shape {tuple(np.shape(arrays[key]))} but its images number {n}; expected "
                        f"one group (patient id) per image")
    return groups.astype(str)


def list_npz(path: Path, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    keys = set(arrays)
    ref = _ref(path)
    split_keys = [s for s in NPZ_SPLITS if f"{s}_images" in keys]
    frames = []
    if split_keys:
        for s in NPZ_SPLITS:
            if (f"{s}_images" in keys) != (f"{s}_labels" in keys):
                raise DataError(f"{path}: has {s}_images or {s}_labels without the other")
        classes = None
        for s in split_keys:
            imgs = arrays[f"{s}_images"]
            _check_npz_images(path, f"{s}_images", imgs)
            labels = _npz_labels(path, f"{s}_labels", arrays[f"{s}_labels"], len(imgs))
            frames.append(pd.DataFrame({
                "image_id": [f"{s}_images/{i}" for i in range(len(imgs))],
                "source": ref, "source_key": f"{s}_images", "source_index": np.arange(len(imgs)),
                "source_label": labels, "group": _npz_groups(path, arrays, f"{s}_groups", len(imgs)),
                "given_split": s}))
        if "groups" in keys:
            raise DataError(f"{path}: a flat 'groups' array beside split keys cannot be matched to images; give one "
                            f"per split as {', '.join(f'{s}_groups' for s in split_keys)} (same length as "
                            f"{split_keys[0]}_images)")
        if "classes" in keys:
            classes = arrays["classes"]
    elif {"images", "labels"} <= keys:
        imgs = arrays["images"]
        _check_npz_images(path, "images", imgs)
        labels = _npz_labels(path, "labels", arrays["labels"], len(imgs))
        frames.append(pd.DataFrame({
            "image_id": [f"images/{i}" for i in range(len(imgs))],
            "source": ref, "source_key": "images", "source_index": np.arange(len(imgs)),
            "source_label": labels, "group": _npz_groups(path, arrays, "groups", len(imgs)), "given_split": ""}))
        classes = arrays.get("classes")
    else:
        raise DataError(f"{path}: unrecognised keys {sorted(keys)}; expected MedMNIST-style "
                        f"train_images/train_labels (and optionally val_*, test_*) or flat images, labels "
                        f"[, classes, groups]")
    df = pd.concat(frames, ignore_index=True)
    labels = df["source_label"].to_numpy()
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            df["source_label"] = labels.astype(str)
            return df
    if classes is not None:
        names = [str(c) for c in np.asarray(classes).reshape(-1)]
        bad = sorted(set(int(v) for v in labels if not 0 <= int(v) < len(names)))
        if bad:
            raise DataError(f"{path}: label value(s) {bad} have no entry in classes ({len(names)} names)")
        df["source_label"] = [names[int(v)] for v in labels]
    else:
        df["source_label"] = [str(int(v)) for v in labels]
    return df


@functools.lru_cache(maxsize=2)  # a worker decodes rows of one or two npz files at a time
def _cached_npz(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    return load_npz(Path(path))


def decode_record(source: str, source_key: str, source_index: int, channels: int) -> np.ndarray:
    """One manifest/record row -> uint8 (H, W, channels) at native size."""
    if source_key:
        try:
            arrays = _cached_npz(source, os.stat(source).st_mtime_ns)
        except FileNotFoundError as exc:
            raise DataError(f"image source not found: {source}") from exc
        return to_uint8_channels(arrays[source_key][int(source_index)], channels)
    return to_uint8_channels(read_image_file(source), channels)


def _list_source(source: str, allow_outside_root: bool, demo_dir, demo_counts: tuple[int, int], demo_size: int):
    """(records, kind, the npz arrays when the source is an npz) of `source` (see scan_source)."""
    npz_arrays = None
    if source == "demo":
        from data_prep.demo import write_demo_npz

        if demo_dir is None:
            raise DataError("the demo source needs an output folder to write demo.npz into")
        path = write_demo_npz(Path(demo_dir) / "demo.npz", *demo_counts, size=demo_size)
        npz_arrays = load_npz(path)
        records, kind = list_npz(path, npz_arrays), "demo"
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"source not found: {path} (give a class-folder directory, a .csv manifest, "
                            f"an .npz file, or 'demo')")
        if path.is_dir():
            records, kind = list_folder(path), "folder"
        elif path.suffix.lower() == ".csv":
            records, kind = list_csv(path, allow_outside_root), "csv"
        elif path.suffix.lower() == ".npz":
            npz_arrays = load_npz(path)
            records, kind = list_npz(path, npz_arrays), "npz"
        else:
            raise DataError(f"{path}: unsupported source; expected a directory, a .csv or an .npz file")
    return records, kind, npz_arrays


def _measure(records, npz_arrays, progress: bool):
    """Width, height, channels and pixel sha256 per record; (file, reason) of the unreadable ones."""
    widths, heights, chans, hashes, bad = [], [], [], [], []
    if npz_arrays is not None:
        for key, idx in records.groupby("source_key", sort=False).groups.items():
            arr = npz_arrays[key]
            # hashing each image row of an in-memory array: vectorised over the key's rows
            for i in records.loc[idx, "source_index"].to_numpy():
                img = arr[int(i)]
                img3 = img if img.ndim == 3 else img[:, :, None]
                heights.append(img3.shape[0]); widths.append(img3.shape[1]); chans.append(img3.shape[2])
                hashes.append(image_sha256(img3))
        # groupby order == record order (records were built key by key)
    else:
        from tqdm import tqdm

        it = records["source"].tolist()
        for f in tqdm(it, desc=f"scanning {len(it)} images", unit="img", disable=not progress or len(it) < 500):
            try:
                img = read_image_file(f)
            except Exception as exc:
                bad.append((f, f"{type(exc).__name__}: {exc}"))
                widths.append(0); heights.append(0); chans.append(0); hashes.append("")
                continue
            img3 = img if img.ndim == 3 else img[:, :, None]
            heights.append(img3.shape[0]); widths.append(img3.shape[1]); chans.append(img3.shape[2])
            hashes.append(image_sha256(img3))
    return widths, heights, chans, hashes, bad


def scan_source(source: str, *, skip_bad: bool = False, allow_outside_root: bool = False,
                demo_dir: str | Path | None = None, demo_counts: tuple[int, int] = (1000, 100),
                demo_size: int = 64, progress: bool = True) -> ScanResult:
    """List and decode every image of `source`; record width, height, channels and pixel sha256."""
    records, kind, npz_arrays = _list_source(source, allow_outside_root, demo_dir, demo_counts, demo_size)
    if records.empty:
        raise DataError(f"{source}: no images found")

    widths, heights, chans, hashes, bad = _measure(records, npz_arrays, progress)
    records = records.assign(width=widths, height=heights, channels=chans, sha256=hashes)
    given_from = ""
    if (records["given_split"] != "").any():
        given_from = {"folder": "split folders", "csv": "split column"}.get(kind, "npz keys")
    if bad and not skip_bad:
        listing = "\n  ".join(f"{f}: {why}" for f, why in bad[:100])
        more = f"\n  ... and {len(bad) - 100} more" if len(bad) > 100 else ""
        raise DataError(f"{len(bad)} unreadable image(s) (re-run with --skip-bad to report and skip them):\n  "
                        f"{listing}{more}")
    if bad:
        bad_files = {f for f, _ in bad}
        records = records[~records["source"].isin(bad_files)].reset_index(drop=True)
    return ScanResult(records=records, skipped=bad, kind=kind, given_split_from=given_from)
