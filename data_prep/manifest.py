"""The split manifest: schema, building it from scanned records, reading/writing, and the leakage guard.

manifest.parquet holds one row per image (columns MANIFEST_COLUMNS) plus dataset metadata in the
parquet schema (key "ganaug"): class names by label, the positive class, seed, fractions, channels.
Paths of files inside the manifest's folder are stored relative to it, so a run folder can move.

Rules enforced here (see DESIGN.md):
  * val and test hold real images only: `add_synthetic_rows` is the only way synthetic rows enter,
    and it sets split="train";
  * `check_no_leakage` is called on every manifest data_prep makes and by every classifier-dataset builder, and
    fails loudly: synthetic rows outside train, the same pixels in train and val/test, a patient (group) in more
    than one split.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.config import PrepConfig
from data_prep.errors import DataError, LeakageError
from data_prep.sources import ScanResult
from data_prep.split import (SPLITS, assign_splits, carve_val_from_train, move_crossing_groups,
                             unify_duplicates_across_given_splits)

META_KEY = b"ganaug"
MANIFEST_COLUMNS = ["image_id", "source", "source_key", "source_index", "source_label", "label",
                    "label_name", "split", "group", "is_synthetic", "width", "height", "channels", "sha256",
                    "generator"]
_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("source", pa.string()), ("source_key", pa.string()),
    ("source_index", pa.int64()), ("source_label", pa.string()), ("label", pa.int64()),
    ("label_name", pa.string()), ("split", pa.string()), ("group", pa.string()),
    ("is_synthetic", pa.bool_()), ("width", pa.int64()), ("height", pa.int64()),
    ("channels", pa.int64()), ("sha256", pa.string()), ("generator", pa.string()),
])


@dataclass
class Manifest:
    """Rows (sources resolved to absolute paths) + dataset metadata."""
    df: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def positive_label(self) -> int:
        return int(self.meta["positive_label"])

    @property
    def positive_class(self) -> str:
        return str(self.meta["positive_class"])

    def split(self, name: str, label: int | None = None) -> pd.DataFrame:
        df = self.df[self.df["split"] == name]
        if label is not None:
            df = df[df["label"] == label]
        return df.reset_index(drop=True)

    def counts(self) -> pd.DataFrame:
        """split x class name -> image count (real and synthetic apart)."""
        kind = np.where(self.df["is_synthetic"], "synthetic", "real")
        return (self.df.assign(kind=kind).groupby(["split", "kind", "label_name"]).size()
                .unstack("label_name", fill_value=0))

    def fingerprint(self) -> str:
        """Content hash of the rows that matter for caches (images, labels, splits)."""
        h = hashlib.sha256()
        cols = ["image_id", "sha256", "label", "split", "is_synthetic"]
        h.update(pd.util.hash_pandas_object(self.df[cols], index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]


def apply_label_map(source_labels: pd.Series, label_map: tuple[tuple[str, str], ...], where: str) -> pd.Series:
    if not label_map:
        return source_labels.astype(str)
    mapping = dict(label_map)
    unmapped = sorted(set(source_labels.astype(str)) - set(mapping))
    if unmapped:
        raise DataError(f"{where}: label(s) {unmapped} are not in the label map; mapped labels are "
                        f"{sorted(mapping)} (add them, e.g. --relabel '{unmapped[0]}=<task class>')")
    return source_labels.astype(str).map(mapping)


def _split_for(cfg: PrepConfig, given_from: str, labels, given, groups, hashes, classes, label_of):
    """(split per image, what was moved to a held-out split: meta entries): the source's own split with
    use_given_split (checked: train and test present, every class in every split, val carved from train when
    missing; exact duplicates, and with move_crossing_groups patients, unified in their most held-out split),
    else a new one (groups never cross it)."""
    if given_from in ("split folders", "split column") and not (cfg.use_given_split or cfg.resplit):
        # never silently turn train/val/test folders into classes, nor silently drop a split the user wrote down
        found = sorted(set(given) - {""}, key=SPLITS.index)
        what = (f"split folders {', '.join(f'{s}/' for s in found)} (a pre-split tree {cfg.source}/<split>/<class>/)"
                if given_from == "split folders" else f"a split column (values {found})")
        raise DataError(f"{cfg.source}: holds {what}; pass --use-given-split to keep that split (a missing val is "
                        f"carved from train), or --resplit to pool every image and split anew with --fractions "
                        f"and --seed")
    if cfg.use_given_split:
        if not given_from:
            raise DataError(f"{cfg.source}: use_given_split needs a source that carries a split: an .npz with "
                            f"train_*/val_*/test_* keys, a folder tree {cfg.source}/{{train,val,test}}/<class>/, or "
                            f"a CSV with a split column; this source has no given split")
        for s in ("train", "test"):  # val may be missing: it is carved from train below
            if s not in set(given):
                how = {"npz keys": f"{s}_images/{s}_labels", "split folders": f"a folder {cfg.source}/{s}/<class>/",
                       "split column": f"CSV rows with split={s}"}[given_from]
                raise DataError(f"{cfg.source}: use_given_split needs a {s} split ({how}); found only "
                                f"{sorted(set(given), key=SPLITS.index)}")
        split = given.copy()
        if "val" not in set(given):
            split = carve_val_from_train(labels, given, groups, hashes, cfg.fractions, cfg.seed, classes)
        split, moved = unify_duplicates_across_given_splits(split, hashes)
        moves = {"duplicates_moved_to_held_out": moved}
        if cfg.move_crossing_groups:
            split, images, n_groups = move_crossing_groups(split, groups, hashes)
            if images:  # key absent when nothing moved: clean data gives the same manifest with or without the flag
                moves["groups_moved_to_held_out"] = {"groups": n_groups, "images": images}
        for c, lab in label_of.items():
            for s in SPLITS:
                if not np.any((labels == lab) & (split == s)):
                    raise DataError(f"{cfg.source}: class {c!r} has no image in the given {s} split")
        return split, moves
    return assign_splits(labels, groups, hashes, cfg.fractions, cfg.seed, classes), {"duplicates_moved_to_held_out": 0}


def build_manifest(scan: ScanResult, cfg: PrepConfig) -> Manifest:
    rec = scan.records
    task_names = apply_label_map(rec["source_label"], cfg.label_map, cfg.source)
    classes = sorted(task_names.unique())
    if len(classes) < 2:
        raise DataError(f"{cfg.source}: found {len(classes)} class ({classes}); at least 2 are needed")
    label_of = {c: i for i, c in enumerate(classes)}
    labels = task_names.map(label_of).to_numpy(np.int64)
    groups = rec["group"].astype(str).to_numpy(object)
    hashes = rec["sha256"].to_numpy(object)
    given = rec["given_split"].to_numpy(object)
    given_from = getattr(scan, "given_split_from", "") or ("npz keys" if np.all(np.isin(given, SPLITS)) else "")
    split, moves = _split_for(cfg, given_from, labels, given, groups, hashes, classes, label_of)

    df = pd.DataFrame({
        "image_id": rec["image_id"].astype(str), "source": rec["source"].astype(str),
        "source_key": rec["source_key"].astype(str), "source_index": rec["source_index"].astype(np.int64),
        "source_label": rec["source_label"].astype(str), "label": labels, "label_name": task_names.to_numpy(),
        "split": split.astype(str), "group": groups.astype(str), "is_synthetic": False,
        "width": rec["width"].astype(np.int64), "height": rec["height"].astype(np.int64),
        "channels": rec["channels"].astype(np.int64), "sha256": hashes.astype(str), "generator": "",
    })
    train_counts = df[df["split"] == "train"]["label"].value_counts()
    if cfg.positive_class is not None:
        if cfg.positive_class not in label_of:
            raise DataError(f"positive class {cfg.positive_class!r} is not a task class; classes are {classes}")
        positive = cfg.positive_class
    else:  # least frequent in train; ties broken by name, never "label 1"
        positive = min(classes, key=lambda c: (int(train_counts.get(label_of[c], 0)), c))
    meta = {
        "format_version": 1, "classes": classes, "positive_class": positive,
        "positive_label": label_of[positive], "source": cfg.source, "source_kind": scan.kind,
        "seed": cfg.seed, "fractions": list(cfg.fractions), "use_given_split": cfg.use_given_split,
        **({"resplit": True} if cfg.resplit else {}),
        "label_map": [list(p) for p in cfg.label_map], "channels": cfg.channels,
        "image_size": cfg.image_size,
        "skipped_files": [[f, why] for f, why in scan.skipped],
        **moves,
    }
    m = Manifest(df=df, meta=meta)
    check_no_leakage(m.df, where=f"manifest of {cfg.source}")
    return m


def write_manifest(m: Manifest, path: str | Path) -> Path:
    """Write rows + metadata; same content -> byte-identical file. Inside-folder paths stored relative."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    df = m.df.copy()

    def rel(p: str) -> str:
        q = Path(p)
        try:
            return q.relative_to(root).as_posix() if q.is_absolute() else p
        except ValueError:
            return p

    df["source"] = [rel(p) for p in df["source"]]
    table = pa.Table.from_pandas(df[MANIFEST_COLUMNS], schema=_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({META_KEY: json.dumps(m.meta, sort_keys=True).encode()})
    tmp = path.with_suffix(".tmp.parquet")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    m.path = path
    return path


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path} (make one with: python -m data_prep --source demo|PATH --out DIR)")
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable parquet manifest ({exc})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError(f"{path}: parquet file without ganaug metadata; is it a manifest made by data_prep?")
    missing = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: manifest lacks column(s) {missing}")
    df = table.to_pandas()
    root = path.parent.resolve()
    df["source"] = [p if Path(p).is_absolute() else str(root / p) for p in df["source"]]
    return Manifest(df=df, meta=json.loads(raw), path=path)


def check_no_leakage(df: pd.DataFrame, where: str = "dataset") -> None:
    """The guard every classifier-dataset builder calls. Raises LeakageError on:
    a synthetic row outside train; a val/test image whose pixels also appear in train;
    an image id in more than one split; a group (patient) with images in more than one split;
    a split name that is not train/val/test."""
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise LeakageError(f"{where}: unknown split name(s) {bad_split}; expected {list(SPLITS)}")
    syn = df[df["is_synthetic"].astype(bool) & (df["split"] != "train")]
    if len(syn):
        ex = syn.iloc[0]
        raise LeakageError(f"{where}: {len(syn)} synthetic row(s) outside train, e.g. {ex['image_id']!r} in "
                           f"split {ex['split']!r}; synthetic images may only ever be training data")
    real = df[~df["is_synthetic"].astype(bool)]
    train_hashes = set(real.loc[real["split"] == "train", "sha256"])
    for s in ("val", "test"):
        held = real[(real["split"] == s) & real["sha256"].isin(train_hashes)]
        if len(held):
            raise LeakageError(f"{where}: {len(held)} {s} image(s) also appear in train (same pixels), e.g. "
                               f"{held.iloc[0]['image_id']!r}; evaluation would be contaminated")
    ids = real.groupby("image_id")["split"].nunique()
    multi = ids[ids > 1]
    if len(multi):
        raise LeakageError(f"{where}: image id(s) {list(multi.index[:5])} appear in more than one split")
    check_groups(real, where)


def check_groups(real: pd.DataFrame, where: str, show: int = 5) -> None:
    """LeakageError naming each group (patient) whose real images sit in more than one split, with its splits and
    image counts (the first `show`, then how many more): the classifier would learn the patient, not the disease."""
    grouped = real[real["group"].astype(str) != ""]
    if grouped.empty:
        return
    per_split = grouped.groupby(["group", "split"]).size().unstack("split", fill_value=0)
    crossing = per_split[(per_split > 0).sum(axis=1) > 1]
    if crossing.empty:
        return
    order = [s for s in SPLITS if s in crossing.columns]
    shown = [f"{g!r} ({', '.join(f'{s} {int(row[s])}' for s in order if row[s])})"
             for g, row in crossing.head(show).iterrows()]
    more = f" and {len(crossing) - show} more" if len(crossing) > show else ""
    raise LeakageError(
        f"{where}: {len(crossing)} group(s) (patients) have images in more than one split: {'; '.join(shown)}{more}. "
        f"A patient in train and in val/test lets the classifier recognise the patient, not the disease. Fix the "
        f"split, or let data_prep move each crossing group's images to the most held-out split holding one of them "
        f"(test > val > train): python -m data_prep ... --move-crossing-groups (sweep: --move-crossing-groups)")


def add_synthetic_rows(m: Manifest, synthetic: pd.DataFrame) -> Manifest:
    """Return a new Manifest with synthetic rows appended as training data (split forced to "train").

    `synthetic` needs columns image_id, source, label, sha256, generator; width/height/channels are
    taken from it when present. The synthetic label must be a known class.
    """
    need = ["image_id", "source", "label", "sha256", "generator"]
    missing = [c for c in need if c not in synthetic.columns]
    if missing:
        raise DataError(f"synthetic rows lack column(s) {missing}")
    classes = m.classes
    bad = sorted(set(int(x) for x in synthetic["label"]) - set(range(len(classes))))
    if bad:
        raise DataError(f"synthetic rows have label(s) {bad}; the manifest's classes are {classes}")
    rows = pd.DataFrame({
        "image_id": synthetic["image_id"].astype(str), "source": synthetic["source"].astype(str),
        "source_key": synthetic.get("source_key", pd.Series("", index=synthetic.index)).astype(str),
        "source_index": synthetic.get("source_index", pd.Series(-1, index=synthetic.index)).astype(np.int64),
        "source_label": [classes[int(x)] for x in synthetic["label"]],
        "label": synthetic["label"].astype(np.int64),
        "label_name": [classes[int(x)] for x in synthetic["label"]],
        "split": "train", "group": "", "is_synthetic": True,
        "width": synthetic.get("width", pd.Series(0, index=synthetic.index)).astype(np.int64),
        "height": synthetic.get("height", pd.Series(0, index=synthetic.index)).astype(np.int64),
        "channels": synthetic.get("channels", pd.Series(0, index=synthetic.index)).astype(np.int64),
        "sha256": synthetic["sha256"].astype(str), "generator": synthetic["generator"].astype(str),
    })
    out = Manifest(df=pd.concat([m.df, rows], ignore_index=True), meta=dict(m.meta), path=m.path)
    check_no_leakage(out.df, where="manifest + synthetic rows")
    return out


SYNTHETIC_COLUMNS = ["image_id", "source", "label", "label_name", "sha256", "generator", "width", "height",
                     "channels"]


def write_synthetic_rows(rows: pd.DataFrame, out_dir: str | Path) -> Path:
    """Write the rows of a folder of generated PNGs as out_dir/manifest.parquet (sources relative to it).

    Columns SYNTHETIC_COLUMNS; `generator` names the checkpoint that made each image, so mixed sets keep
    each image's origin. These rows are not a split manifest: they enter a classifier dataset only through
    `add_synthetic_rows`, which makes them training rows.
    """
    out_dir = Path(out_dir)
    missing = [c for c in SYNTHETIC_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(f"synthetic rows lack column(s) {missing}")
    df = rows[SYNTHETIC_COLUMNS].copy()
    root = out_dir.resolve()
    df["source"] = [Path(p).resolve().relative_to(root).as_posix() if Path(p).resolve().is_relative_to(root)
                    else str(p) for p in df["source"]]
    df["is_synthetic"] = True
    df["split"] = "train"
    path = out_dir / "manifest.parquet"
    df.to_parquet(path, index=False)
    return path


def read_synthetic_rows(out_dir: str | Path, classes: list[str] | None = None,
                        positive_label: int | None = None) -> pd.DataFrame:
    """Read out_dir/manifest.parquet written by `write_synthetic_rows`; sources made absolute. Without a manifest,
    given the data set's classes and minority label: a folder made elsewhere (plain, or one sub-folder per class;
    data_prep.external), read as it is."""
    path = Path(out_dir) / "manifest.parquet"
    if not path.is_file() and classes is not None and positive_label is not None and Path(out_dir).is_dir():
        from data_prep.external import external_rows

        df = external_rows(out_dir, list(classes), int(positive_label))
        df["source_key"], df["source_index"] = "", -1
        return df
    if not path.is_file():
        raise DataError(f"no synthetic manifest at {path}; make one with "
                        f"python -m trainables.gan.sample --checkpoint CKPT --num-samples N --output-dir {out_dir}")
    df = pd.read_parquet(path)
    missing = [c for c in SYNTHETIC_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: synthetic manifest lacks column(s) {missing}")
    if "split" in df.columns and (df["split"] != "train").any():
        raise LeakageError(f"{path}: synthetic rows with split != 'train'; synthetic images are training data only")
    root = path.parent.resolve()
    df["source"] = [p if Path(p).is_absolute() else str(root / p) for p in df["source"]]
    df["source_key"], df["source_index"] = "", -1  # PNG files: decodable by data_prep.arrays.decode_rows
    return df
