"""Classifier datasets: real train + seeded synthetic minority rows, real val/test, folds, and the controls.

    data = build_classifier_data(read_manifest(M), cfg, synthetic_dir="runs/gan/samples")
    data.train_rows / data.val_rows / data.test_rows     # manifest rows; synthetic only in train

Synthetic count: n = round(synthetic_ratio * n_real_minority_train), rounding half up
(`n_synthetic_for`), drawn without replacement with `cfg.seed` from the generator's rows
(`data_prep.manifest.read_synthetic_rows`). They enter only through `add_synthetic_rows`, and
`check_no_leakage` runs on every dataset built here.

Generator mixing: `synthetic_dir` may be one folder or several with proportions,
`[(dir_a, 0.5), (dir_b, 0.25), (dir_c, 0.25)]` (proportions sum to 1). The n images are split by
largest remainder (`mix_counts`: floors of n * p, the leftover images to the largest fractional parts,
ties to the earlier folder), so the counts sum to n exactly; each row keeps its `generator` column and
`data.summary()["synthetic_sources"]` lists the folder, proportion and count of every source. A folder
from a class-conditional generator may hold several classes: only its minority-class rows are drawn.

Curation (cfg.curation, trainables.classifier.curation): none | copies | copies+off_class. Each folder's minority
rows are curated BEFORE the draw (near-copies of real train images, then images a real-only scorer calls the
other class), so the ratio's count comes from what is left; ClassifierData.curated holds what each step dropped.

Controls (tables in trainables.arms, same code path as the synthetic runs, freely combined with them), each
with its knob (trainables.arms.CONTROL_KNOBS; at the knob's default the behaviour is the one before knobs existed):
IMBALANCE_FIXES  none | class_weight (loss weights (n / (C * n_c)) ** class_weight_power) | oversample (each
                 epoch's images drawn with replacement: each class 1/C of the draws in expectation, or with
                 oversample_share s the minority class s and the other classes 1 - s in their own proportions)
AUGMENTS         none | a policy of trainables.arms.AUGMENT_POLICIES: standard (random h/v flips, rotation
                 within +-15 degrees, brightness and contrast jitter of +-20 %), xray (no flips, +-10 degrees,
                 +-10 %), dermoscopy, industrial; applied per image on normalised batches (after the
                 uint8 -> float conversion of each batch, on its device); augment_strength scales the rotation
                 (capped at 180 degrees), brightness and contrast, never the flips (`augment_for`)

Epoch size (`epoch_indices`): an epoch draws cfg.epoch_size images (0 = the training set's size), so a GAN arm
whose training set holds 10x the minority in synthetic images takes the same optimizer steps as the baseline.
Without resampling, epochs walk one seeded stream of permutations of the whole training set (every image seen
once before any repeats; epoch e is a pure function of seed and e, so a resumed run continues the stream).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from data_prep.arrays import decode_rows
from data_prep.errors import ConfigError, DataError
from data_prep.manifest import Manifest, add_synthetic_rows, check_no_leakage, read_synthetic_rows
from trainables.arms import AUGMENT_NAMES, AUGMENT_POLICIES, IMBALANCE_FIXES, MAX_ROTATION_DEG, AugmentPolicy


def n_synthetic_for(ratio: float, n_real_minority: int) -> int:
    """Number of synthetic images for `ratio` (bounded by ClassifierConfig): round(ratio * n_real_minority),
    halves rounded up."""
    return int(math.floor(ratio * n_real_minority + 0.5))


_PROPORTION_TOL = 1e-6


def synthetic_sources(synthetic_dir) -> list[tuple[str, float]]:
    """One folder, a list of (folder, proportion) pairs or a {folder: proportion} mapping -> checked pairs.

    Proportions must be finite, >= 0 and sum to 1 (within 1e-6); a folder may appear only once."""
    if synthetic_dir is None:
        return []
    if isinstance(synthetic_dir, (str, Path)):
        return [(str(synthetic_dir), 1.0)]
    items = list(synthetic_dir.items()) if isinstance(synthetic_dir, Mapping) else list(synthetic_dir)
    pairs: list[tuple[str, float]] = []
    for item in items:
        if isinstance(item, (str, Path)):
            if len(items) == 1:
                pairs.append((str(item), 1.0))
                continue
            raise ConfigError(f"synthetic folder {str(item)!r} has no proportion; mixing several generators needs "
                              f"(folder, proportion) pairs, e.g. [('dir_a', 0.5), ('dir_b', 0.5)] or --synthetic DIR:0.5")
        try:
            d, p = item
            p = float(p)
        except (TypeError, ValueError):
            raise ConfigError(f"synthetic source {item!r} is not a (folder, proportion) pair") from None
        if not math.isfinite(p) or p < 0:
            raise ConfigError(f"mixing proportion of {str(d)!r} must be a finite number >= 0, got {p}")
        pairs.append((str(d), p))
    if not pairs:
        raise ConfigError("synthetic_dir is an empty list; pass None (no synthetic images) or at least one folder")
    dup = sorted({d for d, _ in pairs if sum(1 for e, _ in pairs if Path(e).resolve() == Path(d).resolve()) > 1})
    if dup:
        raise ConfigError(f"synthetic folder(s) {dup} listed more than once in the mix")
    total = math.fsum(p for _, p in pairs)
    if abs(total - 1.0) > _PROPORTION_TOL:
        shown = ", ".join(f"{d}: {p:g}" for d, p in pairs)
        raise ConfigError(f"mixing proportions must sum to 1, got {' + '.join(f'{p:g}' for _, p in pairs)} = "
                          f"{total:g} ({shown})")
    return pairs


def parse_synthetic_arg(text: str) -> tuple[str, float | None]:
    """CLI 'DIR' -> (DIR, None), 'DIR:0.5' -> (DIR, 0.5) (the part after the last ':' when it is a number)."""
    head, sep, tail = str(text).rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return str(text), None


def mix_counts(n: int, proportions: Sequence[float]) -> list[int]:
    """Split n into integer counts by largest remainder: floor(n * p) each, the leftover to the largest
    fractional parts (ties: the earlier source). The counts sum to n exactly."""
    exact = [n * p for p in proportions]
    counts = [int(math.floor(x + 1e-9)) for x in exact]
    left = n - sum(counts)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:max(left, 0)]:
        counts[i] += 1
    return counts


def draw_synthetic_rows(synthetic: pd.DataFrame, n: int, positive_label: int, classes: list[str], seed: int,
                        where: str = "synthetic rows") -> pd.DataFrame:
    """Seeded draw of n rows without replacement; the drawn rows carry the minority label. A folder holding
    several classes (a class-conditional generator) contributes its minority-class rows only; a folder
    with no minority-class row is an error."""
    labels = synthetic["label"].astype(int)
    wrong = synthetic[labels != positive_label]
    if len(wrong) and len(wrong) < len(synthetic):
        synthetic = synthetic[labels == positive_label].reset_index(drop=True)
    elif len(wrong):
        got = sorted(set(int(x) for x in wrong["label"]))
        raise DataError(f"{where}: {len(wrong)} synthetic row(s) with label(s) {got} "
                        f"({[classes[g] if 0 <= g < len(classes) else '?' for g in got]}); synthetic images must "
                        f"be of the minority class {classes[positive_label]!r} (label {positive_label})")
    if n > len(synthetic):
        raise DataError(f"{where}: {n} synthetic images needed but only {len(synthetic)} available; sample more "
                        f"with python -m trainables.gan.sample --num-samples {n} or lower the ratio")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(synthetic), size=n, replace=False))
    return synthetic.iloc[pick].reset_index(drop=True)


@dataclass
class ClassifierData:
    """One classifier dataset: the (augmented) manifest and its three row sets."""
    manifest: Manifest
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    test_rows: pd.DataFrame
    image_size: int
    channels: int
    n_synthetic: int
    synthetic_sources: list[dict] = dataclasses.field(default_factory=list)  # [{dir, proportion, n, generators}]
    curated: list = dataclasses.field(default_factory=list)  # curation.CurationResult per synthetic folder
    curation: str = "none"

    @property
    def positive_label(self) -> int:
        return self.manifest.positive_label

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def num_classes(self) -> int:
        return len(self.manifest.classes)

    def summary(self) -> dict:
        def counts(df: pd.DataFrame) -> dict:
            return {self.classes[int(k)]: int(v) for k, v in df["label"].value_counts().sort_index().items()}
        return {"train": counts(self.train_rows), "val": counts(self.val_rows), "test": counts(self.test_rows),
                "n_synthetic": self.n_synthetic, "positive_class": self.classes[self.positive_label],
                "synthetic_sources": self.synthetic_sources, "curation": self.curation_counts()}

    def curation_counts(self) -> dict:
        """How many candidate synthetic images curation saw and dropped, by step (all folders together)."""
        from trainables.classifier.curation import curation_summary

        return curation_summary(self.curated, self.curation)


def build_classifier_data(manifest: Manifest, cfg, synthetic_dir=None, scorer=None) -> ClassifierData:
    """Real manifest (+ synthetic rows drawn for cfg.synthetic_ratio) -> guarded ClassifierData.

    synthetic_dir: None, one folder, or a mix [(folder, proportion), ...] / {folder: proportion} summing to 1.
    cfg.curation: each folder's minority rows are curated first (trainables.classifier.curation: near-copies,
    then off-class images by `scorer`), the ratio's count is then drawn from what is left (too few: CurationError)."""
    sources = synthetic_sources(synthetic_dir)
    pos, classes = manifest.positive_label, manifest.classes
    where = str(manifest.path or "manifest")
    check_no_leakage(manifest.df, where=f"input manifest {where}")  # before anything is dropped or added
    real = manifest.df[~manifest.df["is_synthetic"].astype(bool)]
    for s in ("val", "test"):
        if not ((real["split"] == s) & (real["label"] == pos)).any():
            raise DataError(f"{where}: the {s} split has no image of the minority class {classes[pos]!r}; "
                            f"F1/sensitivity would be undefined. Re-split with more minority images or other fractions")
    n_real_minority = int(((real["split"] == "train") & (real["label"] == pos)).sum())
    n = n_synthetic_for(cfg.synthetic_ratio, n_real_minority)
    m = Manifest(df=manifest.df[~manifest.df["is_synthetic"].astype(bool)].reset_index(drop=True),
                 meta=dict(manifest.meta), path=manifest.path)
    used: list[dict] = []
    curated: list = []
    size = int(cfg.image_size or manifest.meta.get("image_size", 64))
    channels = int(cfg.channels or manifest.meta.get("channels", 3))
    curation = getattr(cfg, "curation", "none")
    if n > 0:
        if not sources:
            raise DataError(f"synthetic_ratio {cfg.synthetic_ratio} needs synthetic images: pass --synthetic DIR "
                            f"(made by python -m trainables.gan.sample)")
        parts = []
        for i, ((d, p), k) in enumerate(zip(sources, mix_counts(n, [p for _, p in sources]))):
            # one source keeps the historical draw (seed = cfg.seed); each further source its own stream
            pool = read_synthetic_rows(d, classes, pos)
            if curation != "none":  # drop first, then draw the ratio's count from what is left
                from trainables.classifier.curation import curate_rows, too_few_error

                mine = pool[pool["label"].astype(int) == pos]
                curated.append(curate_rows(mine if len(mine) else pool, m, curation, size, channels, scorer))
                pool = curated[-1].kept
                if k > len(pool):
                    raise too_few_error(d, k, curated, cfg.synthetic_ratio)
            rows = draw_synthetic_rows(pool, k, pos, classes, cfg.seed + 1_000_003 * i, where=d)
            parts.append(rows)
            used.append({"dir": d, "proportion": p, "n": int(len(rows)),
                         "generators": sorted(set(rows["generator"].astype(str)))})
        m = add_synthetic_rows(m, pd.concat(parts, ignore_index=True))
    check_no_leakage(m.df, where=f"classifier dataset from {where}")
    return ClassifierData(manifest=m, train_rows=m.split("train"), val_rows=m.split("val"),
                          test_rows=m.split("test"),
                          image_size=size, channels=channels, n_synthetic=n, synthetic_sources=used,
                          curated=curated, curation=curation)


def kfold_manifests(manifest: Manifest, num_folds: int, seed: int) -> list[Manifest]:
    """k manifests whose real train+val rows are re-split into k stratified folds (test untouched).

    The unit of assignment is the patient group (or, without one, the pixel hash), so no patient or
    duplicate image straddles train and val; units are dealt to folds class by class after a seeded shuffle.
    """
    df = manifest.df[~manifest.df["is_synthetic"].astype(bool)].reset_index(drop=True)
    pool = df[df["split"].isin(["train", "val"])]
    unit = np.where(pool["group"].astype(str) != "", "g:" + pool["group"].astype(str), "h:" + pool["sha256"].astype(str))
    units = pd.DataFrame({"unit": unit, "label": pool["label"].to_numpy()}).groupby("unit")["label"].max()
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for lab in sorted(units.unique()):
        names = np.array(sorted(units.index[units == lab]))
        rng.shuffle(names)
        if len(names) < num_folds:
            raise DataError(f"{num_folds}-fold CV needs >= {num_folds} train+val units of class "
                            f"{manifest.classes[int(lab)]!r}; found {len(names)}")
        start = len(fold_of) % num_folds  # rotate so small folds are not always the same
        fold_of.update({u: (start + i) % num_folds for i, u in enumerate(names)})
    folds = np.array([fold_of[u] for u in unit])
    out = []
    for f in range(num_folds):
        d = df.copy()
        d.loc[pool.index, "split"] = np.where(folds == f, "val", "train")
        m = Manifest(df=d, meta=dict(manifest.meta), path=manifest.path)
        check_no_leakage(m.df, where=f"fold {f} of {manifest.path}")
        out.append(m)
    return out


def load_tensors(rows: pd.DataFrame, image_size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows -> (uint8 (N, C, S, S), int64 labels). The split stays uint8 (a quarter of float32's memory);
    the training loop normalises each batch on its device (data_prep.arrays.normalize_batch, same bits)."""
    x = decode_rows(rows, image_size, channels, channels_first=True)
    return torch.from_numpy(x), torch.as_tensor(rows["label"].to_numpy(np.int64).copy())


# ---- controls -------------------------------------------------------------------------------------------
def class_counts(labels, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)


def _balanced_loss_weights(labels, num_classes: int, power: float = 1.0) -> torch.Tensor:
    counts = class_counts(labels, num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    if power != 1.0:  # a softer weighting; at 1 the weights are exactly the inverse class frequencies of before
        w = w ** power
    return torch.as_tensor(w, dtype=torch.float32)


def _inverse_frequency_sample_weights(labels, num_classes: int) -> torch.Tensor:
    counts = class_counts(labels, num_classes).astype(np.float64)
    return torch.as_tensor(1.0 / counts[np.asarray(labels, np.int64)], dtype=torch.float64)


def _minority_share_sample_weights(labels, positive_label: int, share: float) -> torch.Tensor:
    """Per-image weights giving the minority class `share` of the draws and every other class its own proportion
    of the remaining 1 - share (a majority image keeps its natural weight relative to the other majority images)."""
    pos = np.asarray(labels, np.int64) == positive_label
    n_pos, n_other = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_other == 0:
        raise DataError(f"oversample_share {share:g} needs minority (label {positive_label}) and other images in the "
                        f"training set; it holds {n_pos} minority and {n_other} other image(s)")
    return torch.as_tensor(np.where(pos, share / n_pos, (1.0 - share) / n_other), dtype=torch.float64)


def loss_weights_for(fix: str, labels, num_classes: int, power: float = 1.0) -> torch.Tensor | None:
    """Cross-entropy class weights for `fix` (None = unweighted): (n / (C * n_c)) ** power under class_weight."""
    return _balanced_loss_weights(labels, num_classes, power) if IMBALANCE_FIXES[fix].loss_weights else None


def sample_weights_for(fix: str, labels, num_classes: int, share: float = 0.0,
                       positive_label: int | None = None) -> torch.Tensor | None:
    """Per-image sampling weights for `fix` (None = plain shuffling). share 0: each class 1/C of the draws;
    share s > 0: the positive (minority) class s, the other classes 1 - s in their own proportions."""
    if not IMBALANCE_FIXES[fix].resample:
        return None
    if share:
        if positive_label is None:
            raise ValueError("sample_weights_for: a minority share needs the positive label")
        return _minority_share_sample_weights(labels, positive_label, share)
    return _inverse_frequency_sample_weights(labels, num_classes)


def _permutation(n: int, seed: int, k: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + k))


def epoch_indices(n: int, sample_weights: torch.Tensor | None, seed: int, epoch: int,
                  epoch_size: int = 0) -> torch.Tensor:
    """One epoch's order of epoch_size (0 = n) image indices: weighted draws with replacement (oversampling), or
    positions [epoch * size, (epoch + 1) * size) of a stream of seeded permutations of all n images (permutation k
    seeded like epoch k: with size n, epoch e is the permutation it always was). A pure function of seed and epoch."""
    size = int(epoch_size) or n
    if sample_weights is not None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.multinomial(sample_weights, size, replacement=True, generator=g)
    start, stop = epoch * size, (epoch + 1) * size
    first, last = start // n, (stop - 1) // n
    stream = torch.cat([_permutation(n, seed, k) for k in range(first, last + 1)])
    return stream[start - first * n:stop - first * n]


def _policy_augment(x: torch.Tensor, g: torch.Generator, policy: AugmentPolicy) -> torch.Tensor:
    """Per-image random flips, rotation, brightness/contrast jitter of `policy` on [-1, 1] images."""
    n = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=g).to(x.device)  # noqa: E731
    hflip, vflip = u(n) < 0.5, u(n) < 0.5  # drawn whatever the policy: the random stream stays the same
    if policy.hflip:
        x = torch.where(hflip.view(n, 1, 1, 1), x.flip(3), x)
    if policy.vflip:
        x = torch.where(vflip.view(n, 1, 1, 1), x.flip(2), x)
    angle = (u(n) * 2 - 1) * math.radians(policy.max_rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = ((u(n) * 2 - 1) * 2 * policy.brightness).view(n, 1, 1, 1)  # a fraction of [0, 1] = 2x in [-1, 1]
    contrast = (1 + (u(n) * 2 - 1) * policy.contrast).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(-1, 1)


def scaled_policy(policy: AugmentPolicy, strength: float) -> AugmentPolicy:
    """`policy` with its rotation (capped at MAX_ROTATION_DEG), brightness and contrast scaled by `strength`;
    flips are on or off, nothing to scale."""
    if strength == 1.0:
        return policy
    return dataclasses.replace(policy, max_rotation_deg=min(MAX_ROTATION_DEG, policy.max_rotation_deg * strength),
                               brightness=policy.brightness * strength, contrast=policy.contrast * strength)


def augment_for(name: str, strength: float = 1.0):
    """The batch augmentation of policy `name` at `strength` (None for "none"); at strength 1 the AUGMENTS entry."""
    if AUGMENTS[name] is None or strength == 1.0:
        return AUGMENTS[name]
    return functools.partial(_policy_augment, policy=scaled_policy(AUGMENT_POLICIES[name], strength))


AUGMENTS = {  # the names and their meaning: trainables.arms.AUGMENT_NAMES / AUGMENT_POLICIES
    "none": None,
    **{name: functools.partial(_policy_augment, policy=p) for name, p in AUGMENT_POLICIES.items()},
}
assert set(AUGMENTS) == set(AUGMENT_NAMES), "trainables.arms.AUGMENT_NAMES and AUGMENTS must name the same augments"
