"""Tables built from the tidy results DataFrame: per-config summaries, val-based selection, per-loss and
per-variant tables, Pareto front, failures. pandas/numpy only. The headline and its verdict (the confirm
phase's baseline vs GAN vs best classical control) are in analysis.verdict.

Selection rule (DESIGN.md rule 2): configs are ranked by mean REAL-VALIDATION F1 over their
seeds, ties broken by mean validation sensitivity, then by config_id for determinism. Test
metrics are carried along for reporting and never enter the ranking.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.schema import GAN_COLUMNS, METRIC_NAMES
from analysis.stats import mean_ci

SELECT_BY = [("val_f1", "max"), ("val_sensitivity", "max")]
DESCRIPTIVE = ["sweep_phase", "arm", "gan_loss", "gan_key", "synthetic_ratio", "gan_lr_g", "gan_lr_d", "diffaugment",
               "n_critic", "conditional", "feature_matching", "perceptual", "synthetic_mix", "clf_lr",
               "imbalance_fix", "augment", "external"]
METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
                 "sensitivity": "Sensitivity", "specificity": "Specificity", "precision": "Precision",
                 "f1": "F1", "macro_f1": "Macro F1", "weighted_precision": "Weighted precision",
                 "weighted_recall": "Weighted recall", "weighted_f1": "Weighted F1", "roc_auc": "ROC-AUC",
                 "pr_auc": "PR-AUC"}


def confirm_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The confirm phase's rows (fresh seeds) -> (rows, phase_recorded). Results that record no phase at all
    (written before phases existed, or made by hand) are used whole, and phase_recorded is False."""
    phase = rows["sweep_phase"] if "sweep_phase" in rows else pd.Series("", index=rows.index)
    if (phase != "").any():
        return rows[phase == "confirm"], True
    return rows, False


def classifier_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Successful classifier-stage rows, with GAN quality metrics filled in from the GAN stage.

    A classifier row may leave gan_* empty; the GAN-stage row(s) with the same gan_key supply them
    (mean over ok GAN rows of that key), as well as gan_run_dir when the classifier row lacks it.
    """
    clf = df[(df["stage"] == "classifier") & (df["status"] == "ok")].copy()
    gan = df[(df["stage"] == "gan") & (df["status"] == "ok") & (df["gan_key"] != "")]
    if len(clf) and len(gan):
        per_key = gan.groupby("gan_key")[[c for c in GAN_COLUMNS]].mean(numeric_only=True)
        dirs = gan[gan["gan_run_dir"] != ""].groupby("gan_key")["gan_run_dir"].first()
        for c in per_key.columns:
            fill = clf["gan_key"].map(per_key[c])
            clf[c] = clf[c].where(clf[c].notna(), fill).astype(clf[c].dtype) if c in clf else fill
        fill_dir = clf["gan_key"].map(dirs)
        clf["gan_run_dir"] = clf["gan_run_dir"].where((clf["gan_run_dir"] != "") | fill_dir.isna(),
                                                      fill_dir).astype("str")
    return clf


def per_seed(clf: pd.DataFrame, column: str) -> pd.DataFrame:
    """config_id x seed table of one column (duplicate rows for a seed are averaged)."""
    x = clf[["config_id", "seed", column]].dropna(subset=["seed"])
    return x.groupby(["config_id", "seed"])[column].mean().unstack("seed")


def summarize_configs(clf: pd.DataFrame) -> pd.DataFrame:
    """One row per config_id: descriptive columns, n_seeds, and for every val_/test_/gan_ metric
    the mean over seeds (column named like the metric), plus `<metric>_lo`/`_hi` 95% t-CI bounds
    for test metrics. Seeds with several rows are averaged first. Sorted by the selection rule."""
    if clf.empty:
        cols = ["config_id", *DESCRIPTIVE, "n_seeds", "seeds"]
        return pd.DataFrame(columns=cols)
    rows = []
    metric_cols = [f"{s}_{m}" for s in ("val", "test") for m in METRIC_NAMES] + list(GAN_COLUMNS)
    for cid, g in clf.groupby("config_id", sort=True):
        first = g.iloc[0]
        seeds = sorted(int(s) for s in g["seed"].dropna().unique())
        row = {"config_id": cid, **{c: first[c] for c in DESCRIPTIVE}, "n_seeds": len(seeds) or len(g),
               "seeds": ",".join(str(s) for s in seeds)}
        by_seed = g.groupby(g["seed"].astype("float64").fillna(-1.0))[metric_cols].mean(numeric_only=True)
        for c in metric_cols:
            if c.startswith("test_"):
                ci = mean_ci(by_seed[c], bounds=(0.0, 1.0))
                row[c], row[c + "_lo"], row[c + "_hi"] = ci.mean, ci.lo, ci.hi
            else:
                vals = by_seed[c].dropna()
                row[c] = float(vals.mean()) if len(vals) else math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    return rank_by_val(out)


def rank_by_val(configs: pd.DataFrame) -> pd.DataFrame:
    """Sort configs by the selection rule (val F1 desc, val sensitivity desc, config_id); NaN last."""
    if configs.empty:
        return configs
    key = configs.assign(_f1=-configs["val_f1"].fillna(-np.inf), _sens=-configs["val_sensitivity"].fillna(-np.inf))
    return key.sort_values(["_f1", "_sens", "config_id"], kind="mergesort").drop(columns=["_f1", "_sens"]).reset_index(drop=True)


def select_best(configs: pd.DataFrame, arms) -> pd.Series | None:
    """The config among `arms` with the best mean validation F1 (sensitivity breaks ties); None if none.
    Configs without any validation F1 cannot be ranked and are never chosen.

    Only configs run with the most seeds among the candidates compete: the sweep re-runs its best
    search configs with several seeds, and a one-seed config must not win on a lucky draw over those."""
    arms = [arms] if isinstance(arms, str) else list(arms)
    cand = configs[configs["arm"].isin(arms) & configs["val_f1"].notna()] if len(configs) else configs
    if cand.empty:
        return None
    if "n_seeds" in cand.columns and cand["n_seeds"].notna().any():
        cand = cand[cand["n_seeds"] == cand["n_seeds"].max()]
    return rank_by_val(cand).iloc[0]


def pareto_mask(df: pd.DataFrame, objectives=None) -> pd.Series:
    """Boolean Series (aligned with df.index): True where no other row is at least as good in every
    objective and strictly better in one. Rows with a NaN objective are never on the front."""
    objectives = list(objectives or SELECT_BY)
    if df.empty:
        return pd.Series([], index=df.index, dtype=bool)
    cols = []
    for col, sense in objectives:
        if sense not in ("max", "min"):
            raise ValueError(f"objective sense must be 'max' or 'min', got {sense!r} for {col!r}")
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        cols.append(v if sense == "max" else -v)
    x = np.column_stack(cols)
    ok = np.isfinite(x).all(axis=1)
    mask = np.zeros(len(df), dtype=bool)
    xs = x[ok]
    for i in np.flatnonzero(ok):
        ge = (xs >= x[i]).all(axis=1)
        gt = (xs > x[i]).any(axis=1)
        mask[i] = not np.any(ge & gt)
    return pd.Series(mask, index=df.index)


def pareto_front(df: pd.DataFrame, objectives=(("val_f1", "max"), ("val_sensitivity", "max"))) -> pd.DataFrame:
    """The Pareto-optimal rows of df for the objectives [(column, "max"|"min"), ...], sorted by the
    first objective (best first). Ties (identical points) are all kept."""
    objectives = list(objectives)
    front = df[pareto_mask(df, objectives)]
    col, sense = objectives[0]
    return front.sort_values(col, ascending=(sense == "min"), kind="mergesort")


def per_loss(configs: pd.DataFrame) -> pd.DataFrame:
    """For each gan_loss among GAN configs: the best config by validation, with val/test/GAN metrics."""
    return per_group(configs, "gan_loss")


def gan_variant(row) -> str:
    """A GAN config's variant in words: conditioning, extra G terms, one GAN or a mix of losses."""
    cond = row.get("conditional")
    cond = cond is not None and not pd.isna(cond) and bool(cond)
    parts = ["mix of losses" if row.get("synthetic_mix") == "mix_losses" else "single GAN",
             "conditional" if cond else "minority-only"]
    for col, name in (("feature_matching", "feature matching"), ("perceptual", "perceptual")):
        w = row.get(col)
        if w is not None and w == w and w > 0:
            parts.append(f"+{name} {w:g}")
    return ", ".join(parts)


def per_variant(configs: pd.DataFrame) -> pd.DataFrame:
    """For each GAN variant (see gan_variant): the best config by validation, with val/test/GAN metrics."""
    if configs.empty:
        return pd.DataFrame()
    return per_group(configs.assign(gan_variant=[gan_variant(r) for r in configs.to_dict("records")]), "gan_variant")


def per_group(configs: pd.DataFrame, column: str) -> pd.DataFrame:
    """For each value of `column` among GAN configs: the best config by validation."""
    gan = configs[configs["arm"] == "gan"] if len(configs) else configs
    rows = []
    for value, g in gan.groupby(gan[column].replace("", "(unknown)"), sort=True) if len(gan) else []:
        best = select_best(g, "gan")
        if best is None:
            continue
        rows.append({**best.to_dict(), column: value, "n_configs": len(g)})
    return rank_by_val(pd.DataFrame(rows)) if rows else pd.DataFrame()


def status_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per stage and status (ok / failed / stopped / anything else), with totals."""
    if df.empty:
        return pd.DataFrame({"stage": [], "ok": [], "failed": [], "stopped": [], "total": []})
    t = pd.crosstab(df["stage"].replace("", "(none)"), df["status"].replace("", "(none)"))
    for s in ("ok", "failed", "stopped"):
        if s not in t.columns:
            t[s] = 0
    others = [c for c in t.columns if c not in ("ok", "failed", "stopped")]
    t = t[["ok", "failed", "stopped", *others]]
    t["total"] = t.sum(axis=1)
    t.loc["all stages"] = t.sum(axis=0)
    t.columns.name = None
    return t.reset_index().rename(columns={"index": "stage"}).rename(columns={t.index.name or "stage": "stage"})


def not_ok(df: pd.DataFrame) -> pd.DataFrame:
    """Every row whose status is not "ok", with its reason; nothing is dropped."""
    cols = ["trial_id", "stage", "arm", "gan_loss", "synthetic_ratio", "seed", "config_id", "status", "error"]
    bad = df[df["status"] != "ok"][cols].copy()
    bad["error"] = bad["error"].where(bad["error"] != "", "(no reason recorded)")
    order = {"failed": 0, "stopped": 1}
    return bad.sort_values(["status", "stage", "trial_id"], key=lambda s: s.map(order).fillna(2) if s.name == "status" else s,
                           kind="mergesort").reset_index(drop=True)
