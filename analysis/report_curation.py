"""The report's "Curation" section (issue 24): what curating the synthetic images did to real val / test F1, and a
grid of the images it dropped. Only when the results hold a curated run (rows' `curation` other than none).

    curation_section(doc, out, df, hl, base)      # df: tidy rows; hl: the Headline (or None); base: results' folder

Tables: (1) F1 by curation choice, per sweep phase (search rows: one seed each, the runs the search chose on;
confirm rows: the picks' seeds), over the GAN-augmented classifier rows, with the mean candidates and drops per
run; (2) the effect of curation: val / test F1 of a curated run minus that of the run that differs from it ONLY in
curation (same phase, arm, GAN - gan_key holds its seed and fold -, ratio, classifier LR, fix, augmentation, knobs,
seed, fold), averaged over such pairs. The search draws the classifier LR from a continuous range, so such pairs
exist only where the search happened to repeat a config or a user ran them on purpose; the section says when there
are none rather than compare configs that differ in more. (3) The dropped-samples grid (the classifier run folder's
curation_dropped.png) of the headline GAN's run, else of the best curated run on validation. pandas/numpy only.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.document import Doc, fnum

GRID_FILE = "curation_dropped.png"  # trainables.classifier.curation.GRID_FILE (no torch import here)
PAIR_KEYS = ("sweep_phase", "arm", "gan_key", "synthetic_ratio", "clf_lr", "imbalance_fix", "augment",
             "class_weight_power", "oversample_share", "augment_strength", "seed", "fold")
COUNTS = ("curation_candidates", "curation_dropped_copies", "curation_dropped_off_class")


def _curation(df: pd.DataFrame) -> pd.Series:
    if "curation" not in df.columns:
        return pd.Series("none", index=df.index)
    c = df["curation"].astype("object").where(df["curation"].notna(), "none").astype(str).str.strip()
    return c.where(~c.isin(["", "nan", "None", "<NA>"]), "none")


def curation_section(doc: Doc, out: Path, df: pd.DataFrame, hl, base: Path) -> pd.DataFrame | None:
    """Write the section; -> the by-choice table (None when no row was curated: no section)."""
    cur = _curation(df)
    if not (cur != "none").any():
        return None
    ok = df[(df["stage"] == "classifier") & (df["status"] == "ok") & df["arm"].isin(["gan", "control+gan"])]
    ok = ok.assign(curation=cur.loc[ok.index], sweep_phase=ok.get("sweep_phase", pd.Series("", index=ok.index))
                   .astype(str).replace("", "n/a"))
    doc.h(2, "Curation of synthetic images")
    doc.p("Before a classifier draws its ratio's synthetic images, curation drops near-copies of real training "
          "images (`copies`: pixel RMS to the nearest real train minority image within the memorisation audit's "
          "5th-percentile threshold) and, for `copies+off_class`, images a classifier trained on the real training "
          "images only scores as the other class (threshold chosen on real validation minority images). One GAN "
          "serves every choice. F1 of the GAN-augmented runs by curation choice, per phase (mean over runs; search "
          "rows have one seed each and are the runs the search chose on, so their test F1 is optimistic):")
    by = _by_choice(ok)
    by.to_csv(out / "curation.csv", index=False)
    doc.table(by, "curation.csv")
    failed = df[(df["stage"] == "classifier") & (df["status"] != "ok")
                & df["error"].astype(str).str.startswith("curation:")]
    if len(failed):
        doc.p(f"{len(failed)} run(s) failed because curation left too few images for their ratio (their GAN's "
              "images were mostly copies or off-class; reasons in the failed trials' list).")
    effect = _effect(ok)
    if effect.empty:
        doc.p("Effect of curation: no curated run has a run that differs from it only in curation (same phase, arm, "
              "GAN and GAN seed, ratio, classifier LR, fix, augmentation, knobs, seed), so no difference is shown; "
              "the table above compares choices across otherwise different configurations.")
    else:
        effect.to_csv(out / "curation_effect.csv", index=False)
        doc.p("Effect of curation: F1 of a curated run minus that of the otherwise-equal run without curation (pairs "
              "that differ only in curation), mean over pairs:")
        doc.table(effect, "curation_effect.csv")
    _grid(doc, out, ok, hl, base)
    return by


def _by_choice(ok: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (phase, choice), g in ok.groupby(["sweep_phase", "curation"], sort=True):
        row = {"Phase": phase, "Curation": choice, "Runs": len(g), "Configs": g["config_id"].nunique(),
               "Val F1": fnum(g["val_f1"].mean()), "Test F1": fnum(g["test_f1"].mean())}
        for c, name in zip(COUNTS, ("Candidates", "Dropped copies", "Dropped off-class")):
            v = pd.to_numeric(g[c], errors="coerce").mean() if c in g else np.nan
            row[f"{name} (mean)"] = fnum(v, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def _effect(ok: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in PAIR_KEYS if k in ok.columns]
    if ok.empty:
        return pd.DataFrame()
    key = ok[keys].astype(object).map(str).agg("|".join, axis=1)
    none = ok[ok["curation"] == "none"].assign(_k=key).drop_duplicates("_k").set_index("_k")
    rows = []
    for choice, g in ok[ok["curation"] != "none"].groupby("curation", sort=True):
        for phase, gp in g.groupby("sweep_phase", sort=True):
            k = key.loc[gp.index]
            matched = k.isin(none.index)
            if not matched.any():
                continue
            cur, ref = gp[matched.to_numpy()], none.loc[k[matched].to_numpy()]
            dv = cur["val_f1"].to_numpy(float) - ref["val_f1"].to_numpy(float)
            dt = cur["test_f1"].to_numpy(float) - ref["test_f1"].to_numpy(float)
            rows.append({"Phase": phase, "Curation vs none": choice, "Pairs": int(matched.sum()),
                         "Δ val F1": fnum(float(np.nanmean(dv))), "Δ test F1": fnum(float(np.nanmean(dt)))})
    return pd.DataFrame(rows)


def _grid(doc: Doc, out: Path, ok: pd.DataFrame, hl, base: Path) -> None:
    from analysis.runs import _read, find_dir

    curated = ok[ok["curation"] != "none"]
    if curated.empty:
        doc.p("No curated run finished, so there is no dropped-samples grid.")
        return
    which, rows = "the best curated run on validation", curated.sort_values("val_f1", ascending=False)
    for key, label in (("stacked", "the headline's control + GAN arm"), ("gan", "the headline's GAN arm")):
        pick = getattr(hl, key, None) if hl is not None else None
        mine = curated[curated["config_id"] == getattr(pick, "config_id", None)] if pick is not None else curated[:0]
        if len(mine):  # its runs first, then (no grid there) the other curated runs, best on validation first
            which, rows = label, pd.concat([mine.sort_values("val_f1", ascending=False), rows.drop(mine.index)])
            break
    problems = []
    for _, r in rows.iterrows():
        folder, why = find_dir(str(r.get("clf_run_dir") or ""), base)
        if folder is None:
            problems.append(why)
            continue
        try:
            data = _read(folder, GRID_FILE)
        except FileNotFoundError:
            problems.append(f"{folder}: no {GRID_FILE} (nothing was dropped)")
            continue
        except OSError as exc:
            problems.append(f"{folder}: {type(exc).__name__}")
            continue
        if r["config_id"] not in set(rows["config_id"].iloc[:1]):
            which = "the best curated run on validation with a grid"
        path = out / GRID_FILE
        path.write_bytes(data)
        drops = ", ".join(f"{int(r[c])} {n}" for c, n in (("curation_dropped_copies", "copies"),
                                                           ("curation_dropped_off_class", "off-class"))
                          if c in r and not _nan(r[c]))
        doc.image(path, f"Synthetic images curation dropped ({r['curation']}; {drops}), each beside its nearest "
                        f"real training image: {which}, config `{r['config_id']}`, seed {r.get('seed')}, trial "
                        f"`{r['trial_id']}`")
        return
    doc.p(f"No dropped-samples grid found for {which}: " + "; ".join(dict.fromkeys(problems))[:600])


def _nan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True

