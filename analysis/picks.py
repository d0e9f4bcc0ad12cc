"""Which configuration stands for each arm of the headline: confirm-phase rows, each arm's classifier LR chosen on
real validation, the search's rank-1 GAN and never another in its place. pandas/numpy only.

    picks, preregistered = choose(records(ok_df, cols), records(every_df, cols), folds)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.stats import seed_means
from trainables.arms import CLASSICAL_CONTROLS

ARM_KEYS = ("baseline", "control", "stacked", "gan")  # Headline attributes, in table order
ARMS_OF = {"baseline": ("baseline",), "control": ("control",), "stacked": ("control+gan",), "gan": ("gan",)}
GAN_KEYS = ("stacked", "gan")  # arms whose failed / stopped / gated seeds count as no help (external sets' too)
EXTERNAL = "ext:"  # an external set's key among the picks: "ext:<name>" (rows: arm "external", external <name>)


def external_key(name: str) -> str:
    return f"{EXTERNAL}{name}"


def external_names(every: list[dict]) -> list[str]:
    """The external sets with confirm rows, in the order given to the sweep (their confirm_rank), then by name."""
    seen: dict[str, tuple] = {}
    for r in every:
        name = r.get("external")
        if r["arm"] == "external" and isinstance(name, str) and name:
            rank = r.get("confirm_rank")
            seen[name] = min(seen.get(name, (math.inf, name)), (rank if rank is not None else math.inf, name))
    return sorted(seen, key=lambda n: seen[n])


@dataclass
class Pick:
    """The configuration that stands for one arm in the headline (confirm-phase rows only)."""
    arm: str                 # the rows' arm ("baseline", "control", "control+gan", "gan", or an old control arm)
    setup_id: str            # the arm's setup (every classifier LR of its grid)
    config_id: str           # the setup's LR chosen on real validation ("" when every run of the arm failed)
    n_lrs: int               # classifier LRs the setup tried (its tuning budget)
    seeds_ok: list[int]      # seeds of the chosen config with a result (all folds)
    seeds_failed: list[int]  # seeds of the setup that failed, stopped or were gated at any of its LRs
    failures: list[str]      # their reasons, one per bad row
    rows: int                # confirm rows of the setup, any status
    summary: pd.Series       # the chosen config's row of summarize_configs (means, CIs, descriptors)
    lost: dict = field(default_factory=dict)  # seed -> status of the chosen config's seeds that have no result
    seeds_gated: list[int] = field(default_factory=list)  # seeds whose GAN failed the quality gate (status gated)


def _setup(rows: pd.DataFrame) -> pd.Series:
    sid = rows["setup_id"] if "setup_id" in rows else pd.Series("", index=rows.index)
    return sid.where(sid != "", rows["config_id"])


def records(rows: pd.DataFrame, columns) -> list[dict]:
    cols = [c for c in dict.fromkeys((*columns, "fold")) if c in rows.columns]
    out = rows[cols].to_dict("records")
    for r, sid in zip(out, _setup(rows).tolist()):
        r["_setup"] = sid
        seed = r.get("seed")
        r["_seed"] = -1.0 if seed is None or pd.isna(seed) else float(seed)  # no seed: its own seed (-1)
        rank = r.get("confirm_rank")
        r["confirm_rank"] = None if rank is None or pd.isna(rank) else int(rank)
        fold = r.get("fold")
        r["_fold"] = None if fold is None or pd.isna(fold) else int(fold)
    return out


def num(x) -> float:
    """A number from a row value that may be None, NaN or pandas' NA -> float (NaN when not a number)."""
    try:
        return float(x) if x is not None and not pd.isna(x) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def by_seed(ok: list[dict], config_id: str, column: str, folds: int = 0) -> dict[float, float]:
    """seed -> mean of `column` over the config's rows of that seed; with K folds the mean of its K folds, and only
    seeds with all K (analysis.stats.seed_means: the seed is the unit)."""
    return seed_means(((r["_seed"], r.get("_fold"), r.get(column)) for r in ok if r["config_id"] == config_id),
                      folds)


def _failures(bad: list[dict]) -> list[str]:
    return [f"seed {int(r['_seed'])}" + (f" fold {r['_fold']}" if r.get("_fold") is not None else "")
            + f": {r['status']}" + (f" ({str(r.get('error') or '')[:160]})" if r.get("error") else "") for r in bad]


def _gated(rows: list[dict]) -> list[int]:
    return sorted({int(r["_seed"]) for r in rows if r["status"] == "gated"})


def _pick(ok: list[dict], every: list[dict], arms, only_rank: int | None = None, folds: int = 0,
          only_external: str | None = None) -> Pick | None:
    """Best setup among `arms` by validation: within each setup the classifier LR with the best mean val F1 over
    its seeds, then the setup whose chosen LR is best (an external set: its synthetic ratio too). only_rank: GAN
    setups of that confirm_rank only; only_external: that external set's rows only. An arm with rows but no
    successful one is a Pick without a config: every one of its seeds is lost."""
    arms = set(arms)

    def mine(r) -> bool:
        return (r["arm"] in arms and (only_rank is None or r.get("confirm_rank") == only_rank)
                and (only_external is None or r.get("external") == only_external))

    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        if mine(r) and np.isfinite(r.get("val_f1", math.nan)):
            groups.setdefault((r["_setup"], r["config_id"]), []).append(r)
    rows = [r for r in every if mine(r)]
    if not groups:
        if not rows:
            return None
        setup = rows[0]["_setup"]
        mine_rows = [r for r in rows if r["_setup"] == setup]
        seeds = sorted({int(r["_seed"]) for r in mine_rows})
        return Pick(arm=str(mine_rows[0]["arm"]), setup_id=str(setup), config_id="",
                    n_lrs=len({r["config_id"] for r in mine_rows}), seeds_ok=[], seeds_failed=seeds,
                    failures=_failures(mine_rows), rows=len(mine_rows), summary=pd.Series(dtype=object),
                    lost={s: next(r["status"] for r in mine_rows if int(r["_seed"]) == s) for s in seeds},
                    seeds_gated=_gated(mine_rows))

    def key(item):  # val F1 desc, val sensitivity desc (NaN last), config_id
        (_, cid), rs = item
        f1 = _mean(by_seed(rs, cid, "val_f1", folds).values())
        sens = _mean(by_seed(rs, cid, "val_sensitivity", folds).values())
        return (-f1 if np.isfinite(f1) else np.inf, -sens if np.isfinite(sens) else np.inf, cid)

    (setup, cid), chosen = min(groups.items(), key=key)
    mine_rows = [r for r in every if r["_setup"] == setup]
    bad = [r for r in mine_rows if r["status"] != "ok"]
    seeds_ok = sorted(int(s) for s in by_seed(chosen, cid, "val_f1", folds))
    lost = {}
    for r in (r for r in mine_rows if r["config_id"] == cid and r["status"] != "ok"):
        if int(r["_seed"]) not in seeds_ok:
            lost.setdefault(int(r["_seed"]), r["status"])
    return Pick(arm=str(chosen[0]["arm"]), setup_id=str(setup), config_id=str(cid),
                n_lrs=len({r["config_id"] for r in mine_rows}), seeds_ok=seeds_ok,
                seeds_failed=sorted({int(r["_seed"]) for r in bad}), failures=_failures(bad), rows=len(mine_rows),
                summary=pd.Series({"config_id": cid}, dtype=object), lost=lost, seeds_gated=_gated(bad))


def choose(ok: list[dict], every: list[dict], folds: int) -> tuple[dict, bool]:
    """The four arms' picks (legacy results: the best old per-fix control as `control`, no stacked arm), and one
    per external set under external_key(name)."""
    ranks = sorted({r["confirm_rank"] for r in every if r["arm"] == "gan" and r["confirm_rank"] is not None})
    rank = ranks[0] if ranks else None  # rank 1 failing on every seed stays rank 1: never a silent rank 2
    picks = {k: _pick(ok, every, ARMS_OF[k], only_rank=rank if k in GAN_KEYS else None, folds=folds)
             for k in ARM_KEYS}
    if picks["control"] is None:
        picks["control"] = _pick(ok, every, CLASSICAL_CONTROLS, folds=folds)
    for name in external_names(every):  # each external set: its ratio and LR chosen on validation
        picks[external_key(name)] = _pick(ok, every, ("external",), folds=folds, only_external=name)
    return picks, bool(ranks)


