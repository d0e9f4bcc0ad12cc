"""The headline: baseline vs the GAN vs the best classical control on real test, from the confirm phase
only, with its claims (paired t-tests, Holm-corrected) and the plain-language verdict. pandas/numpy only.

    h = headline(df)          # df: analysis.load(...); -> Headline (picks, table, tests, messages, context)
    decide(ok, every)         # the choices and the tests only (tests/verdict_sim.py simulates through this)

Each arm's classifier LR is chosen on real validation within the confirm phase; the GAN is the configuration
the search ranked first (confirm_rank 1); the best control is chosen on validation among
trainables.arms.CLASSICAL_CONTROLS. Test metrics never enter a choice.

K-fold confirm phase (rows carry `fold`): each seed's K folds are averaged first (analysis.stats.seed_means), and
a seed counts only with all K folds ok; the LR choice on validation, the intervals and the paired test then work
on those per-seed means: the unit is the seed (n = seeds, not seeds x folds), since a seed's folds share its
training seed and most of their images and are not independent replicates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.stats import holm, mean_ci, num_folds, paired_test, seed_means
from analysis.tables import METRIC_LABELS, classifier_rows, summarize_configs
from trainables.arms import CLASSICAL_CONTROLS

HEADLINE_METRICS = ["accuracy", "sensitivity", "specificity", "f1", "roc_auc"]
CLAIM_METRICS = ("f1", "sensitivity")      # the headline's claims: these metrics ...
COMPARISONS = ("baseline", "control")      # ... x GAN vs these arms = the Holm family (4 claims)
ALPHA = 0.05
PROPORTION = (0.0, 1.0)                    # every metric in METRIC_NAMES is a proportion
DIFFERENCE = (-1.0, 1.0)


@dataclass
class Pick:
    """The configuration that stands for one arm in the headline (confirm-phase rows only)."""
    arm: str                 # "baseline" | "gan" | a control arm
    setup_id: str            # the arm's setup (every classifier LR of its grid)
    config_id: str           # the setup's LR chosen on real validation
    n_lrs: int               # classifier LRs the setup tried (its tuning budget)
    seeds_ok: list[int]      # seeds of the chosen config with a result
    seeds_failed: list[int]  # seeds of the setup that failed or stopped at any of its LRs
    failures: list[str]      # their reasons, one per failed row
    rows: int                # confirm rows of the setup, any status
    summary: pd.Series       # the chosen config's row of summarize_configs (means, CIs, descriptors)


@dataclass
class Headline:
    baseline: Pick | None
    gan: Pick | None
    control: Pick | None
    table: pd.DataFrame                        # numbers, one row per metric (for CSV)
    tests: pd.DataFrame                        # one row per comparison x metric
    single_seed: bool                          # every chosen config has < 2 seeds
    confirm_only: bool = True                  # False: the rows record no sweep phase (legacy results)
    gan_preregistered: bool = True             # the GAN was fixed by the search before the confirm phase
    folds: int = 0                             # K of a K-fold confirm phase (averaged per seed), 0 = one split
    messages: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)  # what the intervals cover, detectable sizes, budgets


def confirm_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The confirm phase's rows (fresh seeds) -> (rows, phase_recorded). Results that record no phase at all
    (written before phases existed, or made by hand) are used whole, and phase_recorded is False."""
    phase = rows["sweep_phase"] if "sweep_phase" in rows else pd.Series("", index=rows.index)
    if (phase != "").any():
        return rows[phase == "confirm"], True
    return rows, False


def _setup(rows: pd.DataFrame) -> pd.Series:
    sid = rows["setup_id"] if "setup_id" in rows else pd.Series("", index=rows.index)
    return sid.where(sid != "", rows["config_id"])


def _records(rows: pd.DataFrame, columns) -> list[dict]:
    cols = [c for c in (*columns, "fold") if c in rows.columns]
    out = rows[cols].to_dict("records")
    setups = _setup(rows).tolist()
    for r, sid in zip(out, setups):
        r["_setup"] = sid
        seed = r.get("seed")
        r["_seed"] = -1.0 if seed is None or pd.isna(seed) else float(seed)  # no seed: its own seed (-1)
        rank = r.get("confirm_rank")
        r["confirm_rank"] = None if rank is None or pd.isna(rank) else int(rank)
        fold = r.get("fold")
        r["_fold"] = None if fold is None or pd.isna(fold) else int(fold)
    return out


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def _pick(ok: list[dict], every: list[dict], arms, only_rank: int | None = None, folds: int = 0) -> Pick | None:
    """Best setup among `arms` by validation: within each setup the classifier LR with the best mean val F1
    over its seeds (each seed the mean of its folds), then the setup whose chosen LR is best. only_rank: GAN
    setups of that confirm_rank only."""
    arms = set(arms)
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        if r["arm"] not in arms or not np.isfinite(r.get("val_f1", math.nan)):
            continue
        if only_rank is not None and r.get("confirm_rank") != only_rank:
            continue
        groups.setdefault((r["_setup"], r["config_id"]), []).append(r)
    if not groups:
        return None

    def key(item):  # val F1 desc, val sensitivity desc (NaN last), config_id
        (setup, cid), rs = item
        f1 = _mean(_by_seed(rs, cid, "val_f1", folds).values())
        sens = _mean(_by_seed(rs, cid, "val_sensitivity", folds).values())
        return (-f1 if np.isfinite(f1) else np.inf, -sens if np.isfinite(sens) else np.inf, cid)

    (setup, cid), chosen = min(groups.items(), key=key)
    mine = [r for r in every if r["_setup"] == setup]
    bad = [r for r in mine if r["status"] != "ok"]
    return Pick(arm=str(chosen[0]["arm"]), setup_id=str(setup), config_id=str(cid),
                n_lrs=len({r["config_id"] for r in mine}),
                seeds_ok=sorted(int(s) for s in _by_seed(chosen, cid, "val_f1", folds)),
                seeds_failed=sorted({int(r["_seed"]) for r in bad}),
                failures=[f"seed {int(r['_seed'])}" + (f" fold {r['_fold']}" if r.get("_fold") is not None else "")
                          + f": {r['status']}" + (f" ({r['error'][:160]})" if r["error"] else "") for r in bad],
                rows=len(mine), summary=pd.Series({"config_id": cid}, dtype=object))


def _by_seed(ok: list[dict], config_id: str, column: str, folds: int = 0) -> dict[float, float]:
    """seed -> mean of `column` over the config's rows of that seed (finite values only); with K folds, the mean
    of its K folds, and only seeds with all K (analysis.stats.seed_means: the seed is the unit)."""
    return seed_means(((r["_seed"], r.get("_fold"), r.get(column)) for r in ok if r["config_id"] == config_id),
                      folds)


def decide(ok: pd.DataFrame, every: pd.DataFrame, metrics=HEADLINE_METRICS):
    """The headline's choices and claims, nothing else (the report adds words; tests simulate through this).

    ok: successful classifier rows (classifier_rows); every: classifier rows of any status.
    -> (baseline Pick, GAN Pick, control Pick, tests DataFrame, phase_recorded, gan_preregistered)."""
    every, phase_recorded = confirm_rows(every)
    folds = num_folds(every)  # K-fold confirm phase: every per-seed number is the mean of the seed's K folds
    every = _records(every, ["arm", "config_id", "seed", "status", "error"])
    if phase_recorded:
        ok = confirm_rows(ok)[0]
    ok = _records(ok, ["arm", "config_id", "seed", "val_f1", "val_sensitivity", "confirm_rank",
                       *(f"test_{m}" for m in metrics)])
    ranks = [r["confirm_rank"] for r in ok if r["arm"] == "gan" and r["confirm_rank"] is not None]
    preregistered = bool(ranks)
    base = _pick(ok, every, ["baseline"], folds=folds)
    gan = _pick(ok, every, ["gan"], only_rank=min(ranks) if preregistered else None, folds=folds)
    ctrl = _pick(ok, every, list(CLASSICAL_CONTROLS), folds=folds)
    tests = []
    for m in metrics:
        col = f"test_{m}"
        for other_name, other in (("baseline", base), ("control", ctrl)):
            if gan is None or other is None:
                res = paired_test({}, {})
                note = f"no test: no {'GAN' if gan is None else other_name} configuration in the confirm phase"
            else:
                res = paired_test(_by_seed(ok, gan.config_id, col, folds), _by_seed(ok, other.config_id, col, folds),
                                  bounds=DIFFERENCE)
                note = res.note + (f"; each seed the mean of its {folds} CV folds (folds are not independent "
                                   f"replicates: n = seeds)" if folds else "")
            claim = m in CLAIM_METRICS and other_name in COMPARISONS
            tests.append({"comparison": f"GAN - {other_name}", "metric": m, "claim": claim,
                          "mean_diff": res.mean_diff, "ci_lo": res.lo, "ci_hi": res.hi, "sd_diff": res.sd_diff,
                          "t": res.t, "df": res.df, "p_value": res.p_t if claim else math.nan,
                          "p_sign_flip": res.p_sign_flip if claim else math.nan, "p_floor": res.p_floor,
                          "n_paired": res.n, "tested": res.tested, "method": note,
                          "mde": res.mde(ALPHA / (len(CLAIM_METRICS) * len(COMPARISONS)))})
    fam = [i for i, t in enumerate(tests) if t["claim"] and t["tested"]]
    adjusted = holm([tests[i]["p_value"] for i in fam])
    for t in tests:
        t["p_holm"] = math.nan
    for i, p in zip(fam, adjusted):
        tests[i]["p_holm"] = p
    for t in tests:
        t["verdict"] = _claim_word(t)
    return base, gan, ctrl, pd.DataFrame(tests), phase_recorded, preregistered


def headline(df: pd.DataFrame, metrics=HEADLINE_METRICS, configs: pd.DataFrame | None = None) -> Headline:
    """Baseline vs the GAN vs the best classical control on real test, from the confirm phase only.

    df: the tidy results (analysis.load). Each arm's classifier LR is chosen on real validation within the
    confirm phase (every arm has the same grid: the same tuning budget); the GAN is the configuration the
    search ranked first on validation (confirm_rank 1), fixed before any confirm seed ran, so choosing it
    adds no luck to its test numbers; the best control is chosen on validation among the controls. Claims:
    paired t-tests over the shared seeds, Holm-corrected over F1 and sensitivity x (baseline, best control)."""
    every = df[df["stage"] == "classifier"]
    ok = classifier_rows(df)
    base, gan, ctrl, t, phase_recorded, preregistered = decide(ok, every, metrics)
    picks = [p for p in (base, gan, ctrl) if p is not None]
    ok = confirm_rows(ok)[0] if phase_recorded else ok
    folds = num_folds(confirm_rows(every)[0])
    if configs is None:  # only the chosen configs' summaries are needed here
        configs = summarize_configs(ok[ok["config_id"].isin([p.config_id for p in picks])])
    by_id = configs.set_index("config_id") if len(configs) else None
    for p in picks:
        if by_id is not None and p.config_id in by_id.index:
            p.summary = by_id.loc[p.config_id].copy()
            p.summary["config_id"] = p.config_id
    recs = _records(ok[ok["config_id"].isin([p.config_id for p in picks])],
                    ["config_id", "seed", *(f"{s}_{m}" for s in ("val", "test") for m in metrics)])
    rows = []
    for m in metrics:
        row = {"metric": m}
        for name, pick in (("baseline", base), ("gan", gan), ("control", ctrl)):
            test = list(_by_seed(recs, pick.config_id, f"test_{m}", folds).values()) if pick else []
            val = list(_by_seed(recs, pick.config_id, f"val_{m}", folds).values()) if pick else []
            ci = mean_ci(test, bounds=PROPORTION)
            row.update({f"{name}_mean": ci.mean, f"{name}_lo": ci.lo, f"{name}_hi": ci.hi, f"{name}_n": ci.n,
                        f"{name}_val_mean": float(np.mean(val)) if val else math.nan})
        vs_base = t[(t["metric"] == m) & (t["comparison"] == "GAN - baseline")].iloc[0]
        row.update({"improvement": vs_base["mean_diff"], "improvement_lo": vs_base["ci_lo"],
                    "improvement_hi": vs_base["ci_hi"], "improvement_p": vs_base["p_value"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    ns = [len(p.seeds_ok) for p in (base, gan, ctrl) if p is not None]
    h = Headline(base, gan, ctrl, table, t, bool(ns) and max(ns) < 2, confirm_only=phase_recorded,
                 gan_preregistered=preregistered, folds=folds)
    h.messages = verdict(h)
    h.context = context(h, df)
    return h


def _claim_word(t: dict) -> str:
    if not t["claim"]:
        return "descriptive"
    if not t["tested"]:
        return "no test"
    if t["p_holm"] < ALPHA:
        return "helps" if t["mean_diff"] > 0 else "worse"
    return "no evidence"


def _fmt(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_eq(p: float) -> str:
    s = fmt_p(p)
    return s if s.startswith("<") else f"= {s}"


OTHER_TEXT = {"baseline": "the baseline (no augmentation)", "control": "the best classical control"}


def verdict(h: Headline) -> list[str]:
    """Plain-language conclusions: the answer first, then one sentence per claim (F1 and sensitivity vs the
    baseline and vs the best control), then failed seeds and cautions. A claim is made only when its
    Holm-adjusted paired t-test p < 0.05; an interval that holds 0 reads "no evidence of a difference", never
    "does not help"."""
    if h.gan is None:
        return ["**No answer**: no successful GAN-augmented configuration in the confirm phase, so the GAN "
                "cannot be assessed."]
    claims = h.tests[h.tests["claim"]].sort_values(
        "metric", key=lambda m: m.map({k: i for i, k in enumerate(CLAIM_METRICS)}), kind="mergesort")
    n_tested = int(claims["tested"].sum())
    return [_answer(claims), *_missing_arms(h), *(_claim_sentence(r, n_tested) for r in claims.itertuples()
                                                  if np.isfinite(r.mean_diff)), *_cautions(h)]


def _claim_list(rows: pd.DataFrame) -> str:
    """'F1 vs the baseline (no augmentation); Sensitivity vs ...' of some claim rows."""
    return "; ".join(f"{METRIC_LABELS[r.metric]} vs {OTHER_TEXT[r.comparison.split(' - ')[1]]}"
                     for r in rows.itertuples())


def _answer(claims: pd.DataFrame) -> str:
    """The verdict's first sentence: helps, worse, mixed, no evidence, or no answer (nothing tested)."""
    helps = claims[claims["verdict"] == "helps"]
    worse = claims[claims["verdict"] == "worse"]
    tested = claims[claims["tested"]]
    fam = f"Holm-corrected over the {len(tested)} claim(s) tested"
    if tested.empty:
        return ("**No answer**: no comparison has the 3 paired seeds a test needs, so no claim is made "
                "either way. Run the confirm phase with more seeds (--num-seeds).")
    if len(helps) and len(worse):
        return (f"**Answer: mixed.** The GAN helps on {_claim_list(helps)}, but is worse on {_claim_list(worse)} "
                f"({fam}).")
    if len(helps):
        return f"**Answer: the GAN helps** on {_claim_list(helps)} ({fam}, 5% level)."
    if len(worse):
        return f"**Answer: the GAN makes things worse** on {_claim_list(worse)} ({fam}, 5% level)."
    return (f"**Answer: no evidence that the GAN helps.** None of the {len(tested)} claim(s) tested "
            f"(F1 and sensitivity vs the baseline and vs the best classical control) holds at the 5% level "
            f"after Holm correction. This is not evidence that it does not help: see the smallest "
            f"difference this sweep could detect.")


def _missing_arms(h: Headline) -> list[str]:
    out = []
    if h.baseline is None:
        out.append("No successful baseline (no augmentation) configuration: the GAN cannot be compared with it.")
    if h.control is None:
        out.append("No successful classical control (class weighting, oversampling, standard augmentation): "
                   "the GAN is not compared with the classical fixes for imbalance.")
    return out


def _claim_sentence(r, n_tested: int) -> str:
    """One claim (a row of Headline.tests) in words, with its numbers."""
    other = OTHER_TEXT[r.comparison.split(" - ")[1]]
    label = METRIC_LABELS[r.metric]
    if not r.tested:
        return (f"Test {label}, GAN vs {other}: observed difference {_fmt(r.mean_diff, signed=True)}; "
                f"{r.method}; no claim.")
    nums = (f"difference {_fmt(r.mean_diff, signed=True)} (95% t-CI {_fmt(r.ci_lo, signed=True)} to "
            f"{_fmt(r.ci_hi, signed=True)}; paired t-test over {r.n_paired} seeds p {_p_eq(r.p_value)}, "
            f"Holm-adjusted p {_p_eq(r.p_holm)}; sign-flip p {_p_eq(r.p_sign_flip)}, "
            f"the least it can be at {r.n_paired} seeds being {r.p_floor:.3g})")
    if r.verdict == "helps":
        return f"Test {label}: the GAN helps compared with {other}: {nums}."
    if r.verdict == "worse":
        return f"Test {label}: the GAN is worse than {other}: {nums}."
    if r.ci_lo > 0 or r.ci_hi < 0:
        return (f"Test {label}: no evidence of a difference from {other} once the {n_tested} claims are "
                f"corrected for: {nums}.")
    return f"Test {label}: no evidence of a difference from {other}: {nums}; the interval includes 0."


def _cautions(h: Headline) -> list[str]:
    """Seeds that failed in the confirm phase, and results whose GAN was not fixed before it."""
    out = []
    for name, pick in (("GAN", h.gan), ("baseline", h.baseline), ("best control", h.control)):
        if pick is not None and pick.seeds_failed:
            out.append(f"{name}: {len(pick.seeds_failed)} seed(s) failed or stopped in the confirm phase and are "
                       f"not in its numbers ({'; '.join(pick.failures[:3])}{' ...' if len(pick.failures) > 3 else ''}).")
    if not h.confirm_only:
        out.append("Caution: these results record no sweep phase, so search runs (including the search winner's "
                   "own lucky run) may be in the numbers above; rerun the sweep to get a confirm phase.")
    elif not h.gan_preregistered:
        out.append("Caution: no GAN configuration was fixed before the confirm phase; the GAN was chosen among the "
                   "confirmed ones on the same runs' validation, which flatters its test numbers.")
    return out


def context(h: Headline, df: pd.DataFrame) -> list[str]:
    """What the intervals cover, how large a difference the sweep could detect, and each arm's budget."""
    out = []
    seeds = sorted({s for p in (h.baseline, h.gan, h.control) if p for s in p.seeds_ok})
    span = (f" (seeds {seeds[0]}-{seeds[-1]}{', none of them used by the search' if h.confirm_only else ''})"
            if seeds else "")
    if h.folds:
        out.append(f"{h.folds} folds averaged per seed; n = seeds. Each confirm seed ran {h.folds}-fold "
                   "cross-validation of the real train+val images (the GAN retrained on each fold's training part "
                   "only, the classifier validated on the fold's held-out part); a seed's folds share its seed "
                   "and overlap in their training images, so they are not independent replicates: each seed's fold "
                   f"mean is one observation, and the intervals and paired tests are over seeds{span}, never seeds "
                   "x folds. "
                   "Every fold is tested on the same fixed test split, so the intervals do not cover which images "
                   "happened to land in the test set.")
    else:
        out.append("The intervals and tests cover the variation between training seeds (every confirm seed "
                   "retrains the GAN and the classifier) on one fixed data split" + span
                   + ". They do not cover which images happened to land in the test set.")
    n_pos = pd.to_numeric(df.get("n_test_positive", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(n_pos):
        n = int(n_pos.iloc[0])
        sens = h.table.set_index("metric")["gan_mean"].get("sensitivity", math.nan) if len(h.table) else math.nan
        p = sens if np.isfinite(sens) else 0.5
        out.append(f"The test set holds {n} real minority images: a sensitivity measured on them is itself uncertain "
                   f"by about ±{1.96 * math.sqrt(max(p * (1 - p), 1e-9) / max(n, 1)):.3f} (binomial 95%), "
                   "which no number of seeds removes.")
    claims = h.tests[h.tests["claim"] & h.tests["tested"]]
    if len(claims):
        parts = [f"{METRIC_LABELS[r.metric]} vs {r.comparison.split(' - ')[1]} "
                 + (f"{r.mde:.3f}" if r.mde <= 1 else "none within the metric's range")
                 for r in claims.itertuples() if np.isfinite(r.mde)]
        m = len(CLAIM_METRICS) * len(COMPARISONS)
        out.append(f"Smallest true difference this sweep would detect with 80% power, from the observed spread of "
                   f"the per-seed differences (two-sided, alpha 0.05/{m}, Holm's strictest step): "
                   + ", ".join(parts) + ".")
    budgets = [f"{name} {p.n_lrs} classifier LR(s) x {len(p.seeds_ok) + len(p.seeds_failed)} seed(s)"
               for name, p in (("GAN", h.gan), ("baseline", h.baseline), ("best control", h.control)) if p]
    if budgets:
        out.append("Tuning budget per arm in the confirm phase (LR chosen on real validation within each arm): "
                   + "; ".join(budgets) + ".")
    return out
