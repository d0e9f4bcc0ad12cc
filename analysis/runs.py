"""The classifier runs behind the headline's three arms (baseline, the GAN, the best classical control): where
their run folders are, what the folders hold, which seed stands for an arm, and ROC / PR curves from scores.

    arms = headline_runs(hl, clf, base)   # hl: analysis.verdict.headline(df); clf: classifier_rows(df);
                                          # base: the results file's folder -> [ArmRuns] baseline, GAN, control
    fpr, tpr, auc = roc(labels_is_positive, scores); recall, precision, ap = pr(labels_is_positive, scores)

Nothing is chosen here: the arms are the verdict's picks (confirm phase; the GAN is confirm_rank 1; each arm's
classifier LR chosen on real validation; the best control chosen on validation among the classical ones).
Of a pick's seeds the report shows the confusion matrix summed, and the per-class metrics averaged, over every
seed whose folder has metrics.json; ROC/PR and training curves come from one representative seed per arm: the
one whose real-test F1 (results row) is the median of the seeds with a run folder (the lower middle one when
their number is even; seeds tied on F1 in seed order). Results with a "fold" column (k-fold CV in the confirm
phase) have one run per seed and fold: each is a run here (the folds share the real test set).
Reads RUN/metrics.json, RUN/history.csv and RUN/test_scores.csv (written by trainables.classifier.run); a
missing or unreadable file becomes a note, never an exception.
A sweep folder moved elsewhere is found relative to the results file (analysis.export.locate); run folders in
a sweep's remote store (clf_run_dir = s3://...) are read there through pyarrow.fs.
pandas/numpy (pyarrow for store URIs).
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.document import fnum
from analysis.export import ExportError, locate
from analysis.uris import check_uri
from analysis.tables import confirm_rows
from trainables.arms import ARM_DESCRIPTIONS

ARM_KEYS = ("baseline", "control", "stacked", "gan")  # the Headline's attributes, in the order the figures show them


@dataclass
class Run:
    """One seed's classifier run of an arm (its files, each None when absent or unreadable)."""
    seed: int | None
    fold: int | None                 # the CV fold (results with a "fold" column), else None
    test_f1: float                   # from the results row (the value the headline averages)
    named: str                       # clf_run_dir as the results row gives it
    dir: "Path | RemoteDir | None" = None  # the folder found (None: not found)
    metrics: dict | None = None      # metrics.json
    history: pd.DataFrame | None = None  # history.csv (epoch, train_loss, val_loss, ...)
    scores: pd.DataFrame | None = None   # test_scores.csv (row, label, score)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return (f"seed {self.seed}" if self.seed is not None else "the run") + (
            f", fold {self.fold}" if self.fold is not None else "")


@dataclass
class ArmRuns:
    key: str                 # "baseline" | "gan" | "control"
    label: str               # e.g. "Best control (random oversampling)"
    config_id: str
    runs: list[Run]          # one per seed of the chosen config, seed order
    representative: Run | None = None
    why: str = ""            # how the representative was chosen, for captions

    @property
    def with_metrics(self) -> list[Run]:
        return [r for r in self.runs if r.metrics is not None and "test" in r.metrics]


def arm_label(key: str, pick) -> str:
    """The arm's name in figures and tables (the GAN's loss and ratio; the control's kind)."""
    s = pick.summary
    if key in ("gan", "stacked"):
        bits = [f"{s.get('gan_loss')}" if s.get("gan_loss") else "",
                f"ratio {float(s.get('synthetic_ratio')):g}" if _finite(s.get("synthetic_ratio")) else ""]
        bits = [b for b in bits if b]
        name = "Best control + GAN" if key == "stacked" else "GAN"
        return name + (f" ({', '.join(bits)})" if bits else "")
    if key == "control":
        if pick.arm == "control":
            fix = [str(s.get(k)) for k in ("imbalance_fix", "augment") if str(s.get(k, "") or "none") != "none"]
            return f"Best control ({' + '.join(fix) or 'tuned'})"
        return f"Best control ({ARM_DESCRIPTIONS.get(pick.arm, pick.arm)})"
    return "Baseline (no augmentation)"


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def headline_runs(hl, clf: pd.DataFrame, base: Path) -> list[ArmRuns]:
    """The run folders of the headline's picks, read; an arm the headline has no pick for is left out."""
    rows = confirm_rows(clf)[0] if hl.confirm_only else clf
    out = []
    for key in ARM_KEYS:
        pick = getattr(hl, key, None)
        if pick is None or not pick.config_id:
            continue
        mine = rows[rows["config_id"] == pick.config_id]
        keys = ["seed", "fold"] if "fold" in mine.columns and mine["fold"].notna().any() else ["seed"]
        runs = []
        for _, g in mine.sort_values([*keys, "trial_id"], na_position="last").groupby(keys, dropna=False, sort=False):
            r = g.iloc[0]  # a seed (and fold) with several rows (a resumed trial): its first
            run = Run(seed=_int(r["seed"]), fold=_int(r["fold"]) if len(keys) > 1 else None,
                      test_f1=float(r.get("test_f1", math.nan)), named=str(r.get("clf_run_dir", "") or ""))
            read_run(run, base)
            runs.append(run)
        arm = ArmRuns(key, arm_label(key, pick), pick.config_id, runs)
        arm.representative, arm.why = representative(arm.runs)
        out.append(arm)
    return out


def _int(x) -> int | None:
    return None if x is None or pd.isna(x) else int(x)


@dataclass
class RemoteDir:
    """A run folder in the sweep's store (s3://, gs://, file://), read through pyarrow.fs."""
    uri: str
    fs: object
    path: str

    def __str__(self) -> str:
        return self.uri

    def read(self, name: str) -> bytes:
        with self.fs.open_input_stream(f"{self.path}/{name}") as f:
            return f.read()


def find_dir(named: str, base: Path) -> tuple[Path | RemoteDir | None, str]:
    """The run folder a results row names -> (folder, why not found). Tried in order: the path as given or
    relative to the results file; moved with the sweep folder (beside the results file); a store URI
    (clf_run_dir of a sweep with remote storage) read in place (an S3 endpoint comes from AWS_ENDPOINT_URL).
    A name with a query string or a '..' segment is refused before anything is opened (analysis.uris)."""
    if not named:
        return None, "the results row names none"
    try:  # a results file is data: a query string or '..' in it could send the reader (and its credentials) anywhere
        check_uri(named, "run folder")
    except ValueError as exc:
        return None, str(exc)
    p = Path(named).expanduser()
    if "://" not in named and not p.is_absolute() and (base / p).is_dir():
        return base / p, ""
    try:
        found = locate(named, base / "results.parquet", "classifier run folder")
        if found.is_dir():
            return found, ""
    except ExportError:
        pass
    if "://" not in named:
        return None, f"{named} not found"
    try:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(named)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            return RemoteDir(named, fs, path.rstrip("/")), ""
        return None, f"{named} not found in the store"
    except Exception as exc:  # no credentials, unknown scheme, no network: say so, never raise
        return None, f"{named}: cannot read it from here ({type(exc).__name__}: {str(exc)[:120]})"


def _read(folder: Path | RemoteDir, name: str) -> bytes:
    return folder.read(name) if isinstance(folder, RemoteDir) else (folder / name).read_bytes()


def read_run(run: Run, base: Path) -> None:
    """Fill run.dir / metrics / history / scores; what is missing goes to run.problems."""
    run.dir, why = find_dir(run.named, base)
    if run.dir is None:
        run.problems.append(f"run folder not found ({why})")
        return
    try:
        m = json.loads(_read(run.dir, "metrics.json"))
        run.metrics = m if isinstance(m, dict) and isinstance(m.get("test"), dict) else None
        if run.metrics is None:
            run.problems.append("metrics.json has no test metrics")
    except FileNotFoundError:
        run.problems.append("no metrics.json")
    except (OSError, ValueError) as exc:
        run.problems.append(f"metrics.json unreadable ({type(exc).__name__})")
    run.history = _csv(run, "history.csv", ("epoch", "train_loss", "val_loss"))
    run.scores = _csv(run, "test_scores.csv", ("label", "score"))


def _csv(run: Run, name: str, needed: tuple[str, ...]) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(io.BytesIO(_read(run.dir, name)))
    except FileNotFoundError:
        run.problems.append(f"no {name}")
        return None
    except (OSError, ValueError) as exc:
        run.problems.append(f"{name} unreadable ({type(exc).__name__})")
        return None
    lacking = [c for c in needed if c not in df.columns]
    if lacking or df.empty:
        run.problems.append(f"{name} lacks {', '.join(lacking)}" if lacking else f"{name} is empty")
        return None
    return df


def representative(runs: list[Run]) -> tuple[Run | None, str]:
    """The seed with the median real-test F1 among those whose folder was found -> (run, why in words)."""
    found = [r for r in runs if r.dir is not None]
    if not found:
        return None, ""
    ranked = sorted(found, key=lambda r: (r.test_f1 if math.isfinite(r.test_f1) else math.inf,
                                          r.seed if r.seed is not None else -1, r.fold or 0))
    rep = ranked[(len(ranked) - 1) // 2]
    if len(found) == 1:
        why = f"{rep.name}, the only run" + (" found" if len(runs) > 1 else "")
    else:
        why = (f"{rep.name}, the median test F1 ({fnum(rep.test_f1)}) of {len(found)} "
               + ("runs (seeds x folds)" if rep.fold is not None else "seeds")
               + ("" if len(found) == len(runs) else f" with a run folder (of {len(runs)})"))
    return rep, why


def _sorted(is_pos, scores) -> tuple[np.ndarray, np.ndarray, int]:
    """Cumulative true / false positives at each distinct score, highest first, and the positive count."""
    y = np.asarray(is_pos, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each tie run
    tps = np.cumsum(y)[last].astype(np.float64)
    return tps, (last + 1 - tps), int(y.sum())


def roc(is_pos, scores) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve (false and true positive rate) and its area; NaN area when one class is absent."""
    tps, fps, n_pos = _sorted(is_pos, scores)
    n_neg = int(len(np.asarray(scores))) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0), math.nan
    fpr, tpr = np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr(is_pos, scores) -> tuple[np.ndarray, np.ndarray, float]:
    """Precision-recall curve and average precision (sum over thresholds of recall gained x precision there,
    the step-wise area torchmetrics and scikit-learn report); NaN when there is no positive."""
    tps, fps, n_pos = _sorted(is_pos, scores)
    if n_pos == 0:
        return np.zeros(0), np.zeros(0), math.nan
    recall, precision = tps / n_pos, tps / np.maximum(tps + fps, 1)
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return np.r_[0.0, recall], np.r_[1.0, precision], ap
