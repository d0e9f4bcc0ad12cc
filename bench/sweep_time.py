"""Where a finished sweep's time went, per phase, from its results.parquet (no rerun needed).

    python bench/sweep_time.py results/augment_ratio/results.parquet [--slots 2]

Per phase (search, guard, controls, confirm): trials, wall time (first trial start to last trial end, from each
row's finished_at - time_total_s), and the slot-seconds it held (slots x wall) split into GAN training (the rows
that trained a GAN: time_gan_s), classifier training (time_classifier_s), the rest of the trials' own time
(data, quality evaluation, sampling, a GAN's reuse: time_total_s - the two) and what no trial used (waiting,
Tune's scheduling, process start: slots x wall - the trials' total). The largest term is the one to attack.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def breakdown(df: pd.DataFrame, slots: int) -> pd.DataFrame:
    df = df.copy()
    df["end"] = pd.to_datetime(df["finished_at"], errors="coerce")
    total = pd.to_numeric(df["time_total_s"], errors="coerce").fillna(0.0)
    df["start"] = df["end"] - pd.to_timedelta(total, unit="s")
    gan_rows = df[df["stage"] == "gan"]
    clf = df[df["stage"] == "classifier"]
    out = []
    for phase in ("search", "guard", "controls", "confirm"):
        rows = clf[clf["sweep_phase"] == phase] if phase != "guard" else gan_rows[gan_rows["sweep_phase"] == phase]
        if rows.empty or rows["end"].isna().all():
            continue
        wall = (rows["end"].max() - rows["start"].min()).total_seconds()
        trained = gan_rows[(gan_rows["sweep_phase"] == phase)]
        gan_s = float(pd.to_numeric(trained["time_gan_s"], errors="coerce").fillna(0).sum())
        clf_s = float(pd.to_numeric(rows.get("time_classifier_s"), errors="coerce").fillna(0).sum())
        own = float(pd.to_numeric(rows["time_total_s"], errors="coerce").fillna(0).sum())
        if phase == "guard":
            own = gan_s
        held = slots * wall
        out.append({"phase": phase, "trials": len(rows), "wall_s": round(wall), "GAN_s": round(gan_s),
                    "classifier_s": round(clf_s), "other_trial_s": round(max(0.0, own - gan_s - clf_s)),
                    "idle_slot_s": round(max(0.0, held - own)), "slot_s": round(held)})
    return pd.DataFrame(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--slots", type=int, default=2, help="trials the sweep ran at once (its console says)")
    args = p.parse_args(argv)
    import analysis

    t = breakdown(analysis.load(args.results), args.slots)
    print(t.to_string(index=False))
    if len(t):
        print(f"all phases: wall {t['wall_s'].sum() / 60:.1f} min; of {t['slot_s'].sum()} slot-s: GAN "
              f"{t['GAN_s'].sum()}, classifier {t['classifier_s'].sum()}, other trial time "
              f"{t['other_trial_s'].sum()}, idle {t['idle_slot_s'].sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
