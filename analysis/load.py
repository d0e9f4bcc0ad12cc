"""Read a sweep's results.parquet into a tidy DataFrame (one row per trial and stage).

    import analysis
    df = analysis.load("runs/my_sweep/results.parquet")   # also accepts the sweep folder

Every column of the contract in `analysis.schema` is present afterwards: optional columns the
file lacks are added empty (NaN for numbers, "" for text, <NA> for integers/booleans), and
types are normalised, so notebook code never has to check. A partial file written by an
interrupted sweep loads like a finished one: the rows written since the file was last rewritten, in
results.parts/ beside it, are read with it (read_table). Needs pandas + pyarrow only (no torch, no Ray).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schema import (ALL_COLUMNS, GAN_COLUMNS, GAN_QUALITY_COLUMNS, ID_COLUMNS, OPTIONAL_COLUMNS,
                             PATH_COLUMNS, REQUIRED_COLUMNS, TEST_COLUMNS, TIMING_COLUMNS, VAL_COLUMNS)

STATUSES = ("ok", "failed", "stopped", "gated")

# dtype families of the contract's columns; anything not listed (extra config values) is left as read
TEXT_COLUMNS = [c for c in ID_COLUMNS if c != "seed"] + [
    "gan_loss", "gan_key", "imbalance_fix", "augment", "synthetic_mix", "sweep_phase", "setup_id",
    "gan_kid_reference", "gan_arch", "gan_augment", "gan_gate", "gan_gate_note", "external"] + PATH_COLUMNS
INT_COLUMNS = ["seed", "n_critic", "image_size", "channels", "gan_epochs", "confirm_rank", "fold", "n_val_positive",
               "n_test_positive", "clf_steps", "clf_epoch_size", "gan_checkpoint_epoch", "leak_val_copies",
               "leak_test_copies"]
BOOL_COLUMNS = ["diffaugment", "conditional"]
FLOAT_COLUMNS = (["gan_lr_g", "gan_lr_d", "synthetic_ratio", "clf_lr", "feature_matching", "perceptual",
                  "label_smoothing",
                  "class_weight_power", "oversample_share", "augment_strength"] + VAL_COLUMNS + TEST_COLUMNS
                 + [c for c in GAN_COLUMNS + GAN_QUALITY_COLUMNS if c not in INT_COLUMNS]
                 + [c for c in TIMING_COLUMNS if c != "finished_at"])
TIME_COLUMNS = ["finished_at"]


PARTS = "results.parts"  # beside results.parquet: rows written since the file was last rewritten (sweeps.results)


class ResultsFileError(ValueError):
    """The results file is missing, unreadable, or not a results parquet (lacks required columns)."""


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir() and ((path / "results.parquet").exists() or (path / PARTS).is_dir()):
        return path / "results.parquet"
    if not path.exists() and not (path.parent / PARTS).is_dir():
        raise ResultsFileError(f"results file not found: {path}")
    return path


def row_keys(df: pd.DataFrame) -> pd.Series:
    """The identity of each row: (trial, stage), except a "gan" row, which is its GAN's (one row per GAN key)."""
    trial = df["trial_id"].astype(str) if "trial_id" in df.columns else pd.Series("", index=df.index)
    stage = df["stage"].astype(str) if "stage" in df.columns else pd.Series("", index=df.index)
    gan = df["gan_key"].fillna("").astype(str) if "gan_key" in df.columns else pd.Series("", index=df.index)
    is_gan = (stage == "gan") & (gan != "")
    return ("gan|" + gan).where(is_gan, trial + "|" + stage)


def part_files(folder: Path) -> list[Path]:
    """The parts in `folder`, oldest first (a half-written one is a hidden temporary file: left out)."""
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.is_dir() else []


def read_table(file: str | Path) -> pd.DataFrame:
    """results.parquet with the parts beside it (results.parts/<time>.json, each a JSON list of rows: the newest
    rows of a running or interrupted sweep, in the order written): one row per identity (row_keys), the last
    written winning."""
    import json

    file = Path(file)
    frames = [pd.read_parquet(file)] if file.exists() else []
    records = [r for p in part_files(file.parent / PARTS) for r in json.loads(p.read_text())]
    frames = [f for f in [*frames, pd.DataFrame(records)] if f.shape != (0, 0)]
    if len(frames) <= 1:
        return frames[0] if frames else pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df[~row_keys(df).duplicated(keep="last").to_numpy()].reset_index(drop=True)


def load(path: str | Path) -> pd.DataFrame:
    """Load a results parquet (or a folder holding results.parquet) as a tidy DataFrame.

    Raises ResultsFileError naming the file when it is missing, unreadable, or lacks the
    required identity columns. `df.attrs` records "source" (the file) and "missing_columns"
    (contract columns the file lacked and that were added empty).
    """
    file = _resolve(path)
    try:
        raw = read_table(file)
    except Exception as exc:  # pyarrow raises several types for non-parquet / truncated files
        raise ResultsFileError(f"cannot read {file} as parquet ({type(exc).__name__}: {exc}); "
                               "expected the results.parquet written by the sweep") from exc
    if raw.shape == (0, 0):
        # a sweep that has not finished any trial may write a file with no columns at all
        raw = pd.DataFrame(columns=REQUIRED_COLUMNS)
    missing_required = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing_required:
        raise ResultsFileError(
            f"{file} is not a results parquet: it lacks required column(s) {missing_required} "
            f"(has {list(raw.columns)[:20]}{' ...' if raw.shape[1] > 20 else ''})")
    df = tidy(raw)
    df.attrs["source"] = str(file)
    df.attrs["missing_columns"] = [c for c in ALL_COLUMNS if c not in raw.columns and c not in OPTIONAL_COLUMNS]
    return df


def _to_text(s: pd.Series) -> pd.Series:
    out = s.astype(object).where(s.notna(), "")
    return out.map(lambda v: v if isinstance(v, str) else str(v)).astype("str")


def _to_time(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.to_datetime(s, utc=True)
    if pd.api.types.is_numeric_dtype(s):  # unix seconds
        return pd.to_datetime(s, unit="s", utc=True, errors="coerce")
    return pd.to_datetime(s, utc=True, errors="coerce", format="mixed")


def _gan_variant_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Files from before gan_arch / gan_augment: a GAN row was a DCGAN with DiffAugment on or off (diffaugment);
    newer files: diffaugment derived from gan_augment, so both columns read the same whichever file it is."""
    gan = df["arm"].astype(str).str.strip().str.lower().eq("gan") if "arm" in df else pd.Series(False, index=df.index)
    if "gan_augment" not in df and "diffaugment" in df:
        flag = df["diffaugment"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
        df["gan_augment"] = flag.map({True: "diffaugment", False: "none"}).where(gan, "")
    if "gan_arch" not in df:
        df["gan_arch"] = pd.Series("dcgan", index=df.index).where(gan, "")
    if "diffaugment" not in df and "gan_augment" in df:
        df["diffaugment"] = df["gan_augment"].astype(str).eq("diffaugment").where(gan, False)
    return df


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """Add missing contract columns (empty) and normalise types; keeps extra columns after them."""
    df = _gan_variant_columns(raw.copy())
    n = len(df)
    for c in ALL_COLUMNS:
        if c in df.columns:
            continue
        if c in TEXT_COLUMNS:
            df[c] = pd.Series([""] * n, index=df.index, dtype="str")
        elif c in INT_COLUMNS:
            df[c] = pd.Series([pd.NA] * n, index=df.index, dtype="Int64")
        elif c in BOOL_COLUMNS:
            df[c] = pd.Series([pd.NA] * n, index=df.index, dtype="boolean")
        elif c in TIME_COLUMNS:
            df[c] = pd.Series([pd.NaT] * n, index=df.index, dtype="datetime64[ns, UTC]")
        else:
            df[c] = np.nan
    for c in TEXT_COLUMNS:
        df[c] = _to_text(df[c])
    for c in ("stage", "arm", "status", "gan_loss", "sweep_phase"):
        df[c] = df[c].str.strip().str.lower().astype("str")
    for c in FLOAT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in INT_COLUMNS:
        num = pd.to_numeric(df[c], errors="coerce")
        df[c] = num.round().astype("Int64") if n else num.astype("Int64")
    for c in BOOL_COLUMNS:
        col = df[c]
        if col.dtype == object or pd.api.types.is_string_dtype(col):
            col = col.map(lambda v: {"true": True, "false": False, "1": True, "0": False}.get(
                str(v).strip().lower(), pd.NA) if pd.notna(v) else pd.NA)
        df[c] = col.astype("boolean")
    for c in TIME_COLUMNS:
        df[c] = _to_time(df[c])
    extra = [c for c in df.columns if c not in ALL_COLUMNS]
    return df[ALL_COLUMNS + extra].reset_index(drop=True)
