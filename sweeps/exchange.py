"""The exchange-rate phase (--exchange-rate): how many real minority images is the synthetic set worth?

After the confirm phase, two arms are retrained on subsets of the REAL minority training images, with the confirm
phase's seeds and each arm's classifier LR (and ratio) chosen on validation there:
  curve arm  C, the best control (the baseline when no classical fix is allowed): the no-synthetic learning curve;
  arm        the headline's arm, C + the rank-1 GAN (the GAN alone when there is no C).
Fraction 1.0 is the confirm phase's own rows (not rerun). Each (seed, fraction < 1) trains on a derived manifest
(subset_manifest): a seeded, patient-grouped subsample of the real minority TRAIN images stays in train, the rest
are removed from the manifest altogether (never moved to val or test: every fraction is judged on the same fixed
test set and validated on the same val set); majority and held-out images are untouched. The subsets of one seed
are NESTED (the 0.25 subset lies inside the 0.5 one: one permutation of the minority groups, cut at each
fraction), so a seed's learning curve is its own and smooth; the seeds draw different subsets, so the curve's
spread covers which images a data owner happens to have. The GAN of a fraction trains on its subset only: the
fraction is part of gan_key (sweeps/gans.py), so it never shares a cache entry with the full-data GAN and the
held-out minority images cannot leak in through it. Every classifier keeps the full data's step budget (epoch
size = the full split's real training images), so a fraction differs in its data only.

The rows carry minority_fraction (a row value, not part of config_id: a fraction's rows share the confirm
config's id) and n_train_positive, and sweep_phase "exchange": the headline never reads them
(analysis.tables.confirm_rows), analysis/exchange.py turns them into the worth of the synthetic set.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

PHASE = "exchange"  # the Tune phase and its rows' sweep_phase
SALT = 243  # mixed into the subsample's seed: another stream than the split's and the classifier's
NO_GROUP = ("", "nan", "none")  # group cells that mean "no patient id": the image is its own group


def fractions_below_one(sweep) -> list[float]:
    return [f for f in sweep.exchange_fractions if f < 1]


def subset_path(work_dir: str | Path, seed: int, fraction: float) -> Path:
    return Path(work_dir) / "data" / "exchange" / f"seed_{int(seed)}" / f"fraction_{fraction:g}" / "manifest.parquet"


def minority_order(df, positive_label: int, seed: int, split_seed: int) -> list[list[int]]:
    """The real minority TRAIN rows of a manifest as patient groups (row indices) in a seeded random order: the
    subsets of every fraction are prefixes of it. Rows without a group are their own group."""
    import numpy as np

    pos = df[(df["split"] == "train") & (df["label"] == positive_label) & ~df["is_synthetic"].astype(bool)]
    group = pos["group"].fillna("").astype(str).str.strip()
    key = group.where(~group.str.lower().isin(NO_GROUP), "\0" + pos["image_id"].astype(str))
    groups = sorted(key.unique())
    rng = np.random.default_rng([SALT, int(split_seed), int(seed)])
    members = {g: list(idx) for g, idx in pos.groupby(key).groups.items()}
    return [sorted(members[groups[i]]) for i in rng.permutation(len(groups))]


def kept_rows(order: list[list[int]], fraction: float) -> list[int]:
    """The rows a fraction keeps: the prefix of whole groups whose image count is closest to fraction x all
    (at least one group; ties: the smaller prefix). Prefixes of one order nest across fractions."""
    if fraction >= 1:
        return [i for g in order for i in g]
    total = sum(len(g) for g in order)
    target, best, best_gap, n = fraction * total, 1, math.inf, 0
    for k, g in enumerate(order, start=1):
        n += len(g)
        gap = abs(n - target)
        if gap < best_gap:
            best, best_gap = k, gap
        if n > target:
            break
    return [i for g in order[:best] for i in g]


def subset_manifest(m, seed: int, fraction: float, split_seed: int):
    """The Manifest of one (seed, fraction): the kept minority train rows, every other row as it was."""
    from data_prep.manifest import Manifest

    df = m.df
    order = minority_order(df, m.positive_label, seed, split_seed)
    keep = set(kept_rows(order, fraction))
    dropped = [i for g in order for i in g if i not in keep]
    meta = {**m.meta, "exchange": {"seed": int(seed), "fraction": float(fraction), "split_seed": int(split_seed),
                                   "minority_train_kept": len(keep), "minority_train_all": len(keep) + len(dropped)}}
    return Manifest(df=df.drop(index=dropped).reset_index(drop=True), meta=meta)


def ensure_subset(manifest: str | Path, work_dir: str | Path, seed: int, fraction: float, split_seed: int) -> Path:
    """The (seed, fraction) manifest under work_dir, written once (under a node lock; a pure function of the
    sweep's manifest, seed, fraction and split seed, so the driver and any node write the same file)."""
    from data_prep import read_manifest
    from data_prep.manifest import write_manifest
    from sweeps.artifacts import node_lock

    path = subset_path(work_dir, seed, fraction)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with node_lock(path.with_name(".write.lock")):
        if not path.is_file():
            write_manifest(subset_manifest(read_manifest(manifest), seed, fraction, split_seed), path)
    return path


def write_subsets(sweep, data, seeds) -> dict[float, list[int]]:
    """Driver: every (seed, fraction < 1) manifest written once (a resumed sweep keeps them) -> fraction -> real
    minority train images kept per seed (for the console)."""
    from data_prep import read_manifest

    out: dict[float, list[int]] = {}
    if data.storage:  # remote storage: each node writes the subsets it needs (in its scratch); only count here
        from sweeps.artifacts import store_of

        main = read_manifest(store_of(data).local(data.manifest))
        for f in fractions_below_one(sweep):
            out[f] = [len(kept_rows(minority_order(main.df, main.positive_label, s, sweep.split_seed), f))
                      for s in seeds]
        return out
    for f in fractions_below_one(sweep):
        for s in seeds:
            m = read_manifest(ensure_subset(data.manifest, data.work_dir, s, f, sweep.split_seed))
            out.setdefault(f, []).append(int(m.meta["exchange"]["minority_train_kept"]))
    return out


def subset_data(config: Mapping[str, Any], data, sweep):
    """A trial's data: its (seed, fraction)'s subset (counts of that manifest, the full split's epoch size),
    or `data` itself for a trial without a fraction below 1."""
    f = config.get("minority_fraction")
    if f is None or (isinstance(f, float) and math.isnan(f)) or float(f) >= 1:
        return data
    from data_prep import read_manifest

    path = ensure_subset(data.manifest, data.work_dir, int(config["seed"]), float(f), sweep.split_seed)
    kept = int(read_manifest(path).meta["exchange"]["minority_train_kept"])  # val and test: as in `data`
    return dataclasses.replace(data, manifest=str(path.resolve()), n_train_positive=kept)


def arms(ok: list[dict], every: list[dict]) -> tuple[Any, Any]:
    """(curve pick, arm pick) from the confirm phase's records, as the headline chooses them (analysis.picks)."""
    from analysis.picks import choose

    picks, _ = choose(ok, every, 0)
    curve = picks.get("control") if picks.get("control") is not None and picks["control"].config_id else None
    curve = curve or (picks.get("baseline") if picks.get("baseline") is not None and picks["baseline"].config_id
                      else None)
    arm = next((picks[k] for k in ("stacked", "gan") if picks.get(k) is not None and picks[k].config_id), None)
    return curve, arm


def exchange_configs(sweep, df, best: list, control: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], str]:
    """The phase's trials from the results so far: the curve arm and the headline's arm, each at its confirm-chosen
    config (the confirm phase's own trial values: sweeps.controls.confirm_configs of the saved picks and C, so the
    ids match), x fractions < 1 x the confirm seeds -> (configs, why none: "" when there are some)."""
    from analysis.picks import records
    from analysis.tables import confirm_rows
    from sweeps.controls import confirm_configs
    from sweeps.space import ROW_KEYS, TRIAL_KEYS, config_id, confirm_seeds, knob_values

    rows = confirm_rows(df[df["stage"] == "classifier"])[0] if len(df) else df
    if not len(rows):
        return [], "no confirm-phase rows"
    cols = [*TRIAL_KEYS, *ROW_KEYS, *knob_values({}), "config_id", "setup_id", "status", "error", "trial_id",
            "val_f1", "val_sensitivity", "clf_threshold"]
    every = records(rows, cols)
    ok = [r for r in every if r["status"] == "ok"]
    curve, arm = arms(ok, every)
    if curve is None:
        return [], "no control (nor baseline) arm finished in the confirm phase: there is no learning curve to read"
    if arm is None:
        return [], "no GAN arm finished in the confirm phase: there is no synthetic set to value"
    planned = {config_id(c): c for c in confirm_configs(sweep, best, control)}
    configs = []
    for pick in (curve, arm):
        if pick.config_id not in planned:
            return [], (f"the confirm phase's chosen {pick.arm} config {pick.config_id} is not among the configs the "
                        "saved picks plan (sweep_state.json changed?)")
        values = {k: v for k, v in planned[pick.config_id].items() if k not in ("seed", "fold")}
        for f in fractions_below_one(sweep):
            configs += [{**values, "seed": s, "minority_fraction": f} for s in confirm_seeds(sweep.num_seeds)]
    return configs, ""


def resume_phase(sweep, phase: str, df) -> str:
    """The phase a sweep goes on at: a finished sweep given --exchange-rate (--resume) without exchange rows gets
    the phase added; a sweep saved at the phase but resumed without the flag is done."""
    if phase == "done" and sweep.exchange_rate and PHASE not in set(df.get("sweep_phase", [])):
        return PHASE
    return "done" if phase == PHASE and not sweep.exchange_rate else phase


def prepare(sweep, data, df, best: list, control: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Driver: the phase's configs with their subsets written (and its console line printed); [] (and why, said)
    when there is nothing to run."""
    from sweeps.space import confirm_seeds

    configs, why = exchange_configs(sweep, df, best, control)
    if why:
        print(f"[{PHASE}] not run: {why}", flush=True)
        return []
    kept = write_subsets(sweep, data, confirm_seeds(sweep.num_seeds))
    print(line(sweep, configs, kept, data.n_train_positive), flush=True)
    return configs


def line(sweep, configs: list, kept: dict[float, list[int]], n_all: int) -> str:
    """The console line before the phase: its trials, arms, fractions and the images each keeps."""
    fr = ", ".join(f"{f:g} ({min(kept[f])}-{max(kept[f])} of {n_all})" if min(kept[f]) != max(kept[f]) else
                   f"{f:g} ({kept[f][0]} of {n_all})" for f in sorted(kept))
    arms_ = sorted({c["arm"] for c in configs}, key=lambda a: a != "control" and a != "baseline")
    return (f"[{PHASE}] {len(configs)} trials: arms {arms_} at their confirm-chosen LR x real minority train fractions "
            f"{fr} (seeded, patient-grouped, nested per seed) x the confirm seeds; fraction 1 = the confirm rows; "
            f"each fraction's GAN trains on its subset only; same test set, same optimizer steps")


def plan_line(sweep) -> str:
    """The dry run's line for the phase (or that it is off)."""
    if not sweep.exchange_rate:
        return "exchange: off (--exchange-rate runs it after confirm)"
    below = fractions_below_one(sweep)
    n = 2 * len(below) * sweep.num_seeds
    return (f"exchange: {n} trial(s) = 2 arm(s) [C (or baseline), the headline arm] x {len(below)} fraction(s) "
            f"{[f'{f:g}' for f in below]} of the real minority train images x {sweep.num_seeds} seed(s), up to "
            f"{len(below) * sweep.num_seeds} GAN training(s) (one per seed and fraction, on its subset); fraction 1 "
            "is the confirm phase's rows")
