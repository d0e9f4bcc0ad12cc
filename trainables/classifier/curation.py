"""Curation of synthetic images before they enter a classifier's training set (ClassifierConfig.curation).

    none               every synthetic minority image of the folder is a candidate (the behaviour before curation)
    copies             drop near-copies of real TRAIN images: an image whose pixel RMS distance to its nearest real
                       train image of the minority class is <= the 5th percentile of the real train minority images'
                       own nearest-neighbour distances (the memorisation audit's pixel rule,
                       trainables.metrics.memorisation.pixel_near_copies)
    copies+off_class   then also drop images that a scorer - a classifier trained on the REAL train images only (the
                       classifier's own code path, synthetic ratio 0, the run's model settings) - scores as the other
                       class: minority log-odds below the threshold chosen on real VALIDATION (`off_class_threshold`)

    scorer = ensure_scorer("runs/clf/curation_scorer", "runs/demo/manifest.parquet", cfg)   # trained once, then read
    result = curate_rows(rows, manifest, "copies+off_class", image_size=32, channels=3, scorer=scorer)
    result.kept, result.counts(), save_dropped_grid(result, "runs/clf/curation_dropped.png")

Why pixel space only for copies: a near-copy that leaks a patient's image is close in pixels by definition; the
audit's second space (the sweep's domain feature network) exists only inside a sweep with quality metrics on,
would have to be trained for every classifier CLI run, and draws all images of a class together (a network
trained to tell the classes apart), so its 5th-percentile rule flags genuine images of the class by chance as
often as the pixel rule does: the union would drop about twice the genuine images (chance_rate reports ~10 %)
for copies that pixels already catch. Shifted or re-coloured copies that pixels miss are the audit's to report.

Why the off-class threshold is a low order statistic of the real val minority scores (OFF_CLASS_QUANTILE = 5 %,
`off_class_rank`): a genuine minority image is exchangeable with the real validation minority images, so it falls
below the k-th smallest of n with probability (k + 1) / (n + 1) <= 5 % (with fewer than 19 val minority images the
minimum, 1 / (n + 1), is the lowest there is; scorer.json says the rate), whatever the imbalance or the
calibration of the scorer (a max-F1 threshold
would drop every minority image the scorer is unsure of, i.e. the hard cases synthetic images are meant to
add). Validation, not train: the scorer has fit its training images, their scores are too high to calibrate.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep.errors import ConfigError, DataError
from trainables.classifier.config import CURATIONS  # the names and their steps: one home, the config

OFF_CLASS_QUANTILE = 0.05  # at most this share of real val minority images score below the off-class threshold
SCORER_FILE = "scorer.json"  # in a scorer folder beside the classifier run's files (checkpoints/best.pt)
GRID_FILE = "curation_dropped.png"  # in the classifier run folder
DROPPED_CSV = "curation_dropped.csv"
GRID_MAX_PER_STEP = 12  # dropped images shown per step in the grid


class CurationError(DataError):
    """Too few synthetic images are left after curation for the ratio asked; .counts: curation_summary's."""

    def __init__(self, message: str, counts: dict | None = None):
        super().__init__(message)
        self.counts = counts or {}


def curation_steps(curation: str) -> tuple[str, ...]:
    if curation not in CURATIONS:
        raise ConfigError(f"unknown curation {curation!r}; valid: {sorted(CURATIONS)}")
    return CURATIONS[curation]


# ------------------------------------------------------------------------------------------------ the scorer
@dataclass
class Scorer:
    """A classifier trained on real train images only, and its off-class threshold chosen on real val."""
    model: Any  # torch.nn.Module in eval mode, on the CPU
    threshold: float  # drop a synthetic minority image whose minority score is below this
    positive_label: int
    image_size: int
    channels: int
    info: dict = field(default_factory=dict)  # scorer.json: fingerprint, val score quantiles, run folder, config

    def minority_scores(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 (N, H, W, C) at the scorer's size -> each image's minority log-odds, log p(minority) -
        log p(any other class): a probability saturates at 1.0 in float32 when the classes separate cleanly,
        and ties at 1.0 would make a quantile of them meaningless; log-odds keep the order."""
        import torch

        from data_prep.arrays import normalize_batch

        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size].transpose(0, 3, 1, 2)))
                lp = torch.log_softmax(self.model(normalize_batch(x)).double(), 1)
                others = torch.cat([lp[:, :self.positive_label], lp[:, self.positive_label + 1:]], 1)
                out.append((lp[:, self.positive_label] - torch.logsumexp(others, 1)).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float64)


def off_class_rank(n: int, quantile: float = OFF_CLASS_QUANTILE) -> int:
    """The 0-based rank k of the real val minority score used as threshold: the largest with (k + 1) / (n + 1) <=
    quantile, the expected share of genuine (exchangeable) minority images below the k-th smallest of n scores;
    0 (the minimum, expected share 1 / (n + 1)) when n < 1 / quantile - 1 leaves no rank that low."""
    return max(0, int(math.floor(quantile * (n + 1) + 1e-9)) - 1)


def off_class_threshold(val_minority_scores, quantile: float = OFF_CLASS_QUANTILE) -> float:
    """The off_class_rank-th smallest real val minority score: "drop when score < it" drops a genuine minority
    image with probability (k + 1) / (n + 1) <= quantile (above it only for fewer than 19 val minority images)."""
    s = np.sort(np.asarray(val_minority_scores, np.float64))
    if not len(s):
        raise DataError("the off-class threshold needs real validation images of the minority class; there are none")
    return float(s[off_class_rank(len(s), quantile)])


def scorer_config(cfg):
    """The scorer's ClassifierConfig: cfg's model settings, no synthetic images, no curation, no folds."""
    return dataclasses.replace(cfg, synthetic_ratio=0.0, curation="none", num_folds=0)


def _load_model(run_dir: Path, cfg_values: dict, num_classes: int):
    import torch

    from trainables.classifier.config import classifier_config
    from trainables.classifier.models import build_model, input_normalisation

    cfg = classifier_config(cfg_values)
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    size, ch = int(ckpt["config"]["image_size"] or cfg_values["image_size"]), int(cfg_values["channels"])
    # the ImageNet normalisation is a forward hook, not state: add it as the run did (weights needed only for that)
    norm = "imagenet" if input_normalisation(cfg.input_norm, cfg.weights, ch) is not None else "none"
    model = build_model(cfg.model, num_classes, ch, size, input_norm=norm)
    model.load_state_dict(ckpt["model"])
    return model.eval(), size, ch


def load_scorer(folder, manifest) -> Scorer:
    """A scorer folder written by train_scorer; refused when it was trained on another manifest's split."""
    folder = Path(folder)
    info = json.loads((folder / SCORER_FILE).read_text())
    if manifest is not None and info.get("manifest_fingerprint") != manifest.fingerprint():
        raise ConfigError(f"{folder}: this curation scorer was trained on another split (manifest fingerprint "
                          f"{info.get('manifest_fingerprint')}, this manifest's {manifest.fingerprint()}); give "
                          f"an empty folder to train one for this manifest")
    model, size, ch = _load_model(folder, info["config"], len(info["classes"]))
    return Scorer(model=model, threshold=float(info["threshold"]), positive_label=int(info["positive_label"]),
                  image_size=size, channels=ch, info=info)


def train_scorer(folder, manifest_path, cfg, fit, log=None) -> Scorer:
    """Train the off-class scorer in `folder` (real train images only) with fit = run.run_classifier_local (passed
    in: the run module calls this one), choose its threshold on real val minority images, write folder/scorer.json
    (written last: a folder without it holds no finished scorer)."""
    from data_prep.arrays import load_split_arrays
    from data_prep.config import config_to_dict
    from data_prep.manifest import read_manifest

    folder = Path(folder)
    scfg = scorer_config(cfg)
    manifest = read_manifest(manifest_path)
    result = fit(manifest_path, folder, scfg, log=log)
    values = config_to_dict(scfg)
    size = int(scfg.image_size or manifest.meta.get("image_size", 64))
    ch = int(scfg.channels or manifest.meta.get("channels", 3))
    values.update(image_size=size, channels=ch)
    model, _, _ = _load_model(folder, values, len(manifest.classes))
    pos = manifest.positive_label
    val, _ = load_split_arrays(manifest, "val", size, ch, label=pos, include_synthetic=False)
    scorer = Scorer(model=model, threshold=0.0, positive_label=pos, image_size=size, channels=ch)
    val_scores = scorer.minority_scores(val)
    scorer.threshold = off_class_threshold(val_scores)
    scorer.info = {"threshold": scorer.threshold, "quantile": OFF_CLASS_QUANTILE, "n_val_minority": int(len(val)),
                   "n_val_minority_below": int((val_scores < scorer.threshold).sum()),
                   "expected_genuine_drop": (off_class_rank(len(val)) + 1) / (len(val) + 1),
                   "val_minority_score_quantiles": {q: float(np.quantile(val_scores, float(q)))
                                                    for q in ("0.05", "0.25", "0.5")},
                   "score": "minority log-odds",
                   "val_f1": float(result["val"]["f1"]), "manifest_fingerprint": manifest.fingerprint(),
                   "classes": list(manifest.classes), "positive_label": int(pos), "config": values,
                   "run_dir": str(folder)}
    tmp = folder / (SCORER_FILE + ".tmp")
    tmp.write_text(json.dumps(scorer.info, indent=2) + "\n")
    tmp.replace(folder / SCORER_FILE)
    return scorer


def ensure_scorer(folder, manifest_path, cfg, fit, log=None) -> Scorer:
    """The scorer in `folder`: read when folder/scorer.json exists (same manifest), else trained there."""
    from data_prep.manifest import read_manifest

    if (Path(folder) / SCORER_FILE).is_file():
        return load_scorer(folder, read_manifest(manifest_path))
    if log is not None:
        log(f"curation: training the off-class scorer (real train images only) in {folder}")
    return train_scorer(folder, manifest_path, cfg, fit, log=log)


# ------------------------------------------------------------------------------------------------ curation
@dataclass
class CurationResult:
    """What curation kept and dropped of one folder's candidate rows."""
    curation: str
    kept: pd.DataFrame
    dropped: pd.DataFrame  # the dropped rows + step ("copies" | "off_class"), nn_distance, nn_index, score
    n_candidates: int
    n_dropped_copies: int
    n_dropped_off_class: int
    copy_threshold: float = float("nan")  # pixel RMS, 0..1
    off_class_threshold: float = float("nan")
    dropped_pixels: np.ndarray | None = None  # uint8 (n_dropped, H, W, C), in `dropped` order
    train_pixels: np.ndarray | None = None  # the real train minority images (nn_index points into them)

    def counts(self) -> dict[str, Any]:
        return {"curation": self.curation, "candidates": self.n_candidates, "dropped_copies": self.n_dropped_copies,
                "dropped_off_class": self.n_dropped_off_class, "kept": int(len(self.kept)),
                "copy_threshold_pixel_rms": self.copy_threshold, "off_class_threshold": self.off_class_threshold}


def curate_rows(rows: pd.DataFrame, manifest, curation: str, image_size: int, channels: int,
                scorer: Scorer | None = None) -> CurationResult:
    """Candidate synthetic minority rows -> the rows curation keeps, the dropped ones and why (steps in order:
    copies first, then off_class on what copies left)."""
    from data_prep.arrays import decode_rows, load_split_arrays
    from trainables.metrics.memorisation import pixel_near_copies

    steps = curation_steps(curation)
    rows = rows.reset_index(drop=True)
    n = len(rows)
    empty = rows.iloc[:0].assign(step="", nn_distance=np.nan, nn_index=-1, score=np.nan)
    if not steps or not n:
        return CurationResult(curation, rows, empty, n, 0, 0)
    pixels = decode_rows(rows, image_size, channels)
    train, _ = load_split_arrays(manifest, "train", image_size, channels, label=manifest.positive_label,
                                 include_synthetic=False)
    copy, dist, idx, thr = pixel_near_copies(pixels, train)
    step = np.where(copy, "copies", "")
    score = np.full(n, np.nan)
    off_thr = float("nan")
    if "off_class" in steps:
        if scorer is None:
            raise ConfigError(f"curation {curation!r} needs the off-class scorer (a classifier trained on real train "
                              f"images only); pass one (--curation-scorer DIR, or let the run train it)")
        if (scorer.image_size, scorer.channels) != (image_size, channels):
            raise ConfigError(f"the curation scorer works at {scorer.image_size} px, {scorer.channels} channel(s); "
                              f"this classifier at {image_size} px, {channels}: train a scorer with its settings")
        left = ~copy
        score[left] = scorer.minority_scores(pixels[left])
        off_thr = scorer.threshold
        step = np.where(left & (score < off_thr), "off_class", step)
    drop = step != ""
    dropped = rows[drop].assign(step=step[drop], nn_distance=dist[drop], nn_index=idx[drop], score=score[drop])
    return CurationResult(curation, rows[~drop].reset_index(drop=True), dropped.reset_index(drop=True), n,
                          int((step == "copies").sum()), int((step == "off_class").sum()), float(thr), off_thr,
                          dropped_pixels=pixels[drop], train_pixels=train)


def too_few_error(where: str, needed: int, results: list[CurationResult], ratio: float) -> CurationError:
    """The error when the curated pool cannot supply the ratio's count: how many each step dropped, what to do."""
    r = results[-1]
    if len(r.kept):
        more = int(math.ceil(needed * r.n_candidates / len(r.kept) * 1.1))
        todo = (f"sample more images (python -m trainables.gan.sample --num-samples {more}: at this keep rate about "
                f"enough) or lower the ratio")
    else:
        todo = "sampling more will not help: the generator's images are all copies or off-class; use another GAN"
    return CurationError(
        f"{where}: synthetic_ratio {ratio:g} needs {needed} synthetic images but curation {r.curation!r} left "
        f"{len(r.kept)} of {r.n_candidates}: {r.n_dropped_copies} dropped as near-copies of real train images "
        f"(pixel RMS <= {r.copy_threshold:.4f}), {r.n_dropped_off_class} as off-class (the real-only scorer's "
        f"minority log-odds < {r.off_class_threshold:.4f}). What to do: {todo}",
        curation_summary(results, r.curation))


# ------------------------------------------------------------------------------------------------ run files
def save_dropped_grid(results: list[CurationResult], path, max_per_step: int = GRID_MAX_PER_STEP) -> Path | None:
    """PNG of dropped images (left) each beside its nearest real train minority image (right): copies closest
    first, then off-class lowest score first. None when nothing was dropped."""
    from trainables.metrics.memorisation import save_pairs_png

    items = []  # (synthetic image, nearest train image, title left, title right)
    for step in ("copies", "off_class"):
        picked = []
        for r in results:
            d = r.dropped
            for j in np.flatnonzero(d["step"].to_numpy() == step):
                key = float(d["nn_distance"].iloc[j]) if step == "copies" else float(d["score"].iloc[j])
                picked.append((key, r, j))
        for key, r, j in sorted(picked, key=lambda t: t[0])[:max_per_step]:
            left = f"copy d={key:.3f}" if step == "copies" else f"off-class lo={key:.1f}"
            nn = int(r.dropped["nn_index"].iloc[j])
            items.append((r.dropped_pixels[j], r.train_pixels[nn], left,
                          f"train d={float(r.dropped['nn_distance'].iloc[j]):.3f}"))
    if not items:
        return None
    total = {s: sum(getattr(r, f"n_dropped_{s}") for r in results) for s in ("copies", "off_class")}
    return save_pairs_png(items, f"dropped synthetic (left) / nearest real train minority (right): "
                                 f"{total['copies']} copies, {total['off_class']} off-class of "
                                 f"{sum(r.n_candidates for r in results)} candidates", path, left_color="firebrick")


def curation_summary(results: list[CurationResult], curation: str) -> dict[str, Any]:
    """The counts over every synthetic folder (a mix has several): metrics.json "curation" and the sweep's row."""
    out: dict[str, Any] = {"curation": curation, "candidates": 0, "dropped_copies": 0, "dropped_off_class": 0,
                           "kept": 0}
    for r in results:
        c = r.counts()
        for k in ("candidates", "dropped_copies", "dropped_off_class", "kept"):
            out[k] += int(c[k])
    if results:
        out["copy_threshold_pixel_rms"] = [r.copy_threshold for r in results]
        out["off_class_threshold"] = results[0].off_class_threshold
    return out


def write_curation_files(out_dir, results: list[CurationResult], curation: str) -> dict[str, Any]:
    """RUN/curation_dropped.png (the grid) and RUN/curation_dropped.csv (every dropped row and why) ->
    the summary with their paths ("grid": None when nothing was dropped)."""
    out_dir = Path(out_dir)
    summary = curation_summary(results, curation)
    if curation == "none" or not results:
        return summary
    dropped = pd.concat([r.dropped for r in results], ignore_index=True) if results else pd.DataFrame()
    cols = [c for c in ("image_id", "path", "generator", "step", "nn_distance", "nn_index", "score") if c in dropped]
    dropped[cols].to_csv(out_dir / DROPPED_CSV, index=False)
    grid = save_dropped_grid(results, out_dir / GRID_FILE)
    summary.update(dropped_csv=str(out_dir / DROPPED_CSV), grid=str(grid) if grid else None)
    return summary


def resolve_scorer(cfg, manifest_path, out_dir, curation_scorer, fit, log=None) -> Scorer | None:
    """The scorer a run with cfg.curation needs (None when it needs none): a Scorer given as is, a folder
    (read, or trained there when empty), or - not given - trained in RUN/curation_scorer."""
    if "off_class" not in curation_steps(cfg.curation) or not cfg.synthetic_ratio:
        return None
    if isinstance(curation_scorer, Scorer):
        return curation_scorer
    folder = Path(curation_scorer) if curation_scorer else Path(out_dir) / "curation_scorer"
    return ensure_scorer(folder, manifest_path, cfg, fit, log=log)

