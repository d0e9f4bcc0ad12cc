"""The verdict's numbers: the practitioner's comparison on real test, from the confirm phase only, with uncertainty
that covers the training seeds AND the test images. pandas/numpy/scipy only (analysis.verdict.headline puts them
together with the words of analysis.claims).

    d = decide(ok, every, scores=source)   # the choices and the tests only (tests/image_sim.py simulates this)

The arms (picks; each arm's classifier LR chosen on real validation within the confirm phase):
  baseline  no fix, no synthetic images;
  control   C, the best classical pipeline (fix + augmentation + knobs), fixed on validation by the search;
  stacked   C + the headline's GAN (C's settings, the search's rank-1 GAN config and ratio): "control+gan" rows;
  gan       the search's rank-1 GAN config as searched (confirm_rank 1; never a lower rank in its place).
Results from before the tuned control pick the best of the old per-fix control arms instead (no stacked arm).

The claims (Holm over the four): F1 and sensitivity of stacked vs control (the PRIMARY claim: does adding the GAN to
the best tuned classical fix beat that fix?), and of gan vs baseline. Each is a test of the seed-averaged difference
with a combined standard error: the spread between seeds plus the test-image term of a stratified paired bootstrap
over the fixed test set (analysis/uncertainty.py says why and how). A seed of a GAN arm that failed, was stopped or
was gated counts as no help (difference 0 against its pair): the estimate is the effect including failures, and
the complete-case estimate is reported beside it. A sensitivity gain is a claim only when specificity is
non-inferior (one-sided lower bound of its difference above -margin); otherwise it is a trade-off.
K-fold confirm phase (rows carry `fold`): each seed's K folds are averaged first; the unit is the seed.
The words (answer line, sentences, cautions, what the intervals cover) are in analysis/claims.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.picks import ARM_KEYS, EXTERNAL, GAN_KEYS, Pick, by_seed, choose, num, records
from analysis.stats import mean_ci, num_folds
from analysis.tables import confirm_rows
from analysis.uncertainty import (BOOT_METRICS, BOOTSTRAP_DRAWS, Bootstrap, ScoresError, TestScores, combined_test,
                                  min_detectable, spread_upper)

HEADLINE_METRICS = ["accuracy", "sensitivity", "specificity", "f1", "macro_f1", "weighted_f1", "roc_auc"]
CLAIM_METRICS = ("f1", "sensitivity")
COMPARISONS = (("stacked", "control"), ("gan", "baseline"))  # a - b; the first is the primary claim
ALPHA = 0.05
DEFAULT_MARGIN = 0.05  # non-inferiority margin of specificity for a sensitivity claim
FAMILY = len(CLAIM_METRICS) * len(COMPARISONS)
MIN_PAIRED_SEEDS = 3
PROPORTION = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)


@dataclass
class Decision:
    picks: dict              # ARM_KEYS -> Pick | None
    tests: pd.DataFrame      # one row per comparison x metric (claims and descriptive rows)
    phase_recorded: bool     # False: the rows record no sweep phase (legacy/hand-made results): no claims
    preregistered: bool      # the GAN was fixed by the search (confirm_rank) before the confirm phase
    folds: int
    covers_test_images: bool  # the intervals include the bootstrap over test images
    n_test_positive: int     # minority images in the test set (0: unknown)
    n_test: int
    draws: int               # bootstrap resamples
    scores_missing: list     # runs whose test scores could not be read
    arm_tests: dict          # (arm key, metric) -> CombinedTest of the arm's mean (table intervals)
    externals: list = field(default_factory=list)  # keys ("ext:<name>") of the external sets judged as secondary
    primary_external: str = ""  # the external set in the GAN's place in the primary claim (no GAN in the sweep)
    comparisons: list = field(default_factory=lambda: list(COMPARISONS))  # (a, b) of every comparison made


@dataclass
class Headline:
    baseline: Pick | None
    control: Pick | None
    stacked: Pick | None
    gan: Pick | None
    table: pd.DataFrame                        # numbers, one row per metric (for CSV)
    tests: pd.DataFrame                        # one row per comparison x metric
    single_seed: bool                          # every chosen config has < 2 seeds
    confirm_only: bool = True                  # False: the rows record no sweep phase (legacy results): no claims
    gan_preregistered: bool = True             # the GAN was fixed by the search before the confirm phase
    folds: int = 0                             # K of a K-fold confirm phase (averaged per seed), 0 = one split
    covers_test_images: bool = False           # the intervals include the sampling of the test images
    n_test_positive: int = 0
    n_test: int = 0
    draws: int = 0
    scores_missing: list = field(default_factory=list)
    margin: float = DEFAULT_MARGIN
    externals: dict = field(default_factory=dict)  # "ext:<name>" -> Pick of each secondary external set
    primary_external: str = ""  # the external set standing in the primary claim (a sweep with no GAN), or ""
    comparisons: list = field(default_factory=lambda: list(COMPARISONS))
    messages: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)  # what the intervals cover, detectable sizes, budgets

    def pick(self, key: str) -> Pick | None:
        return self.externals.get(key) if key.startswith(EXTERNAL) else getattr(self, key)


class _Values:
    """Per-seed values of the picked configs: observed (row 0) and, with test scores, one row per bootstrap draw."""

    def __init__(self, ok: list[dict], picks: dict, folds: int, boot: Bootstrap | None, scores: TestScores | None):
        self.ok, self.picks, self.folds, self.boot, self.scores = ok, picks, folds, boot, scores
        self._cache: dict = {}

    def of(self, key: str, metric: str) -> dict[int, np.ndarray]:
        """seed -> (draws + 1,) values of `metric` for the arm's chosen config (fold means); observed only for
        metrics the bootstrap cannot recompute (AUC) or without scores."""
        if (key, metric) in self._cache:
            return self._cache[key, metric]
        pick = self.picks.get(key)
        out: dict[int, np.ndarray] = {}
        if pick is not None and pick.config_id:
            recs = [r for r in self.ok if r["config_id"] == pick.config_id]
            if self.boot is not None and metric in BOOT_METRICS:
                m = self.boot.metric_draws(self.scores.predictions([r["trial_id"] for r in recs],
                                                                   [r["clf_threshold"] for r in recs]), metric)
                per: dict = {}
                for j, r in enumerate(recs):
                    per.setdefault(r["_seed"], {}).setdefault(r.get("_fold"), []).append(m[:, j])
                out = {int(s): np.mean([np.mean(v, axis=0) for v in by.values()], axis=0) for s, by in per.items()
                       if not self.folds or len(by) >= self.folds}
            else:
                out = {int(s): np.array([v]) for s, v in by_seed(recs, pick.config_id, f"test_{metric}",
                                                                  self.folds).items()}
        self._cache[key, metric] = out
        return out


def _diffs(values: _Values, a: str, b: str, metric: str, count_failures: bool) -> tuple[np.ndarray, list, list]:
    """(draws + 1, n) per-seed differences a - b over the seeds b has; a's lost seeds are 0 (no help) when
    count_failures, left out otherwise. -> (diffs, seeds, seeds counted as 0)."""
    va, vb = values.of(a, metric), values.of(b, metric)
    lost = values.picks[a].lost if values.picks.get(a) is not None else {}
    cols, seeds, zeros = [], [], []
    for s in sorted(vb):
        if s in va:
            cols.append(va[s] - vb[s])
        elif count_failures and s in lost:
            cols.append(np.zeros_like(vb[s]))
            zeros.append(s)
        else:
            continue
        seeds.append(s)
    width = max((len(c) for c in cols), default=1)
    cols = [np.broadcast_to(c, (width,)) if len(c) == 1 else c for c in cols]
    return (np.stack(cols, axis=1) if cols else np.zeros((1, 0))), seeds, zeros


def _compare(values: _Values, a: str, b: str, metric: str, n_pos: int, count_failures: bool, claim: bool,
             why_not: str) -> dict:
    d, seeds, zeros = _diffs(values, a, b, metric, count_failures)
    row = {"comparison": f"{a} - {b}", "a": a, "b": b, "metric": metric, "claim": claim, "n_paired": len(seeds),
           "n_as_no_help": len(zeros), "seeds_as_no_help": ",".join(map(str, zeros)),
           "covers_test_images": d.shape[0] > 1}
    res = combined_test(d, n_pos, bounds=DIFFERENCE)
    cc = combined_test(d[:, [i for i, s in enumerate(seeds) if s not in zeros]], n_pos, bounds=DIFFERENCE)
    tested = not why_not and len(seeds) >= MIN_PAIRED_SEEDS and np.isfinite(res.p)
    if why_not:
        method = why_not
    elif len(seeds) < MIN_PAIRED_SEEDS:
        method = f"no test: {len(seeds)} paired seed(s), a test needs at least {MIN_PAIRED_SEEDS}"
    elif not np.isfinite(res.p):
        method = "no test: every per-seed difference is identical and the test images add no spread"
    else:
        method = ("seeds and test images" if row["covers_test_images"] else "seeds only") + \
                 f" (combined t, df {res.df:.1f})"
    row.update(mean_diff=res.mean_diff, ci_lo=res.lo, ci_hi=res.hi,
               se=res.se, se_seeds=res.se_seeds, se_test=res.se_test, df=res.df, t=res.t,
               p_value=res.p if (claim and tested) else math.nan, tested=tested, method=method,
               lower_bound=res.lower_bound(ALPHA), cc_mean_diff=cc.mean_diff, cc_lo=cc.lo, cc_hi=cc.hi, cc_n=cc.n)
    return row


def decide(ok: pd.DataFrame, every: pd.DataFrame, metrics=HEADLINE_METRICS, scores=None, *,
           cover_test_images: bool = True, count_failures: bool = True, margin: float = DEFAULT_MARGIN,
           draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> Decision:
    """The headline's choices and claims, nothing else (the report adds words; tests simulate through this).

    ok: successful classifier rows (classifier_rows); every: classifier rows of any status. scores: a callable
    records -> {trial_id: (is_positive, score)} giving each run's test scores (analysis.scores.RunScores); None or
    cover_test_images=False: the intervals cover the seeds only (and then no claim is made unless
    cover_test_images=False asks for exactly that, as the simulations of the old rule do)."""
    every, phase_recorded = confirm_rows(every)
    folds = num_folds(every)
    cols = ["arm", "config_id", "seed", "status", "error", "trial_id", "confirm_rank", "clf_threshold",
            "clf_run_dir", "n_test_positive", "external"]
    every = records(every, cols)
    ok = records(confirm_rows(ok)[0] if phase_recorded else ok,
                  [*cols, "val_f1", "val_sensitivity", *(f"test_{m}" for m in (*metrics, *CLAIM_METRICS))])
    picks, preregistered = choose(ok, every, folds)
    externals, primary_external, comparisons = _external_arms(picks, every)
    chosen = [r for r in ok if any(p is not None and r["config_id"] == p.config_id for p in picks.values())]
    boot = test_scores = None
    missing: list[str] = []
    known = [num(r.get("n_test_positive")) for r in every]
    n_pos, n_test = next((int(x) for x in known if np.isfinite(x)), 0), 0
    if cover_test_images and scores is not None and chosen:
        got = scores(chosen)
        missing = [r["trial_id"] for r in chosen if r["trial_id"] not in got
                   or not np.isfinite(num(r.get("clf_threshold")))]
        if not missing:
            try:
                test_scores = TestScores.from_runs({r["trial_id"]: got[r["trial_id"]] for r in chosen})
                boot = Bootstrap(test_scores.is_pos, draws, seed)
                n_pos, n_test = boot.n_pos, len(test_scores.is_pos)
            except ScoresError as exc:
                missing = [str(exc)]
    values = _Values(ok, picks, folds, boot, test_scores)
    why_not = ""
    if not phase_recorded:
        why_not = "no claim: these results record no confirm phase (fresh seeds, choices fixed beforehand)"
    elif cover_test_images and boot is None:
        why_not = ("no claim: the test scores of the chosen runs could not be read, so the interval cannot cover "
                   "the test images" + (f" ({len(missing)} run(s), e.g. {missing[0]})" if missing else ""))
    tests = []
    for a, b in comparisons:
        for m in dict.fromkeys((*CLAIM_METRICS, *metrics)):
            if picks.get(a) is None or picks.get(b) is None:
                absent = a if picks.get(a) is None else b
                tests.append({**_compare(values, a, b, m, n_pos, count_failures, m in CLAIM_METRICS, ""),
                              "tested": False, "p_value": math.nan,
                              "method": f"no test: no {absent} arm in the confirm phase"})
                continue
            tests.append(_compare(values, a, b, m, n_pos, count_failures, m in CLAIM_METRICS, why_not))
    t = pd.DataFrame(tests)
    t["family"] = ["external" if a.startswith(EXTERNAL) else "primary" for a in t["a"]]
    _holm_and_words(t, margin)
    arm_tests = {(k, m): combined_test(np.stack(list(v.values()), axis=1), n_pos, bounds=PROPORTION)
                 for k in (*ARM_KEYS, *externals) for m in metrics if (v := values.of(k, m))}
    return Decision(picks, t, phase_recorded, preregistered, folds, boot is not None, n_pos, n_test,
                    draws if boot is not None else 0, missing, arm_tests, externals, primary_external, comparisons)


def _external_arms(picks: dict, every: list[dict]) -> tuple[list[str], str, list[tuple[str, str]]]:
    """(the secondary external sets' keys, the one in the GAN's place or "", every comparison). A sweep that trained
    no GAN (--no-train-gan): the first external set takes the GAN's place in the primary claim (picks["stacked"]).
    Each other external set is compared with C (the baseline when there is no C)."""
    externals = [k for k in picks if k.startswith(EXTERNAL)]
    primary = ""
    if externals and not any(r["arm"] in ("gan", "control+gan") for r in every):
        primary = externals.pop(0)
        picks["stacked"] = picks.pop(primary)
        primary = primary[len(EXTERNAL):]
    ref = "control" if picks.get("control") is not None else "baseline"
    return externals, primary, [*COMPARISONS, *((k, ref) for k in externals)]


def detectable(tests: pd.DataFrame) -> pd.DataFrame:
    """tests + mde / mde_upper: the smallest true difference each tested claim detects with 80% power (exact
    noncentral t at its combined standard error and df, alpha 0.05 / FAMILY: Holm's strictest step), and the same
    at the spread's upper 90% confidence bound. Computed for the claims only (the report's numbers)."""
    t = tests.copy()
    alpha = ALPHA / FAMILY
    t["mde"] = [min_detectable(r.se, r.df, alpha) if r.claim and r.tested else math.nan for r in t.itertuples()]
    t["mde_upper"] = [min_detectable(spread_upper(r.se, r.df), r.df, alpha) if r.claim and r.tested else math.nan
                      for r in t.itertuples()]
    return t


def _holm_and_words(t: pd.DataFrame, margin: float) -> None:
    """Holm-adjusted p over the tested claims of each family (the primary four; the external sets' among
    themselves), then each row's verdict word (a sensitivity gain needs specificity non-inferior: its one-sided
    lower bound above -margin, else it is a trade-off)."""
    from analysis.stats import holm

    t["p_holm"] = math.nan
    family = t["family"] if "family" in t else pd.Series("primary", index=t.index)
    for name in family.unique():
        fam = t.index[t["claim"] & t["tested"] & (family == name)]
        t.loc[fam, "p_holm"] = holm(t.loc[fam, "p_value"].tolist())
    spec = t[t["metric"] == "specificity"].set_index("comparison")["lower_bound"]
    t["spec_lower_bound"] = t["comparison"].map(spec)
    words = []
    for r in t.itertuples():
        if not r.claim:
            words.append("descriptive")
        elif not r.tested:
            words.append("no test")
        elif r.p_holm < ALPHA and r.mean_diff < 0:
            words.append("worse")
        elif r.p_holm < ALPHA and r.mean_diff > 0:
            ok_spec = r.metric != "sensitivity" or (np.isfinite(r.spec_lower_bound) and r.spec_lower_bound > -margin)
            words.append("helps" if ok_spec else "trade-off")
        else:
            words.append("no evidence")
    t["verdict"] = words


def table(d: Decision, ok: pd.DataFrame, metrics) -> pd.DataFrame:
    """One row per metric: each arm's mean over seeds with its interval (seeds and test images when the scores
    were read, else seeds only), its validation mean, and the two comparisons' differences."""
    recs = records(ok, ["config_id", "seed", *(f"{s}_{m}" for s in ("val", "test") for m in metrics)])
    rows = []
    for m in metrics:
        row = {"metric": m}
        for key in (*ARM_KEYS, *d.externals):
            pick = d.picks.get(key)
            cid = pick.config_id if pick is not None else ""
            test = list(by_seed(recs, cid, f"test_{m}", d.folds).values()) if cid else []
            val = list(by_seed(recs, cid, f"val_{m}", d.folds).values()) if cid else []
            ct = d.arm_tests.get((key, m))
            if ct is not None and d.covers_test_images and m in BOOT_METRICS:
                mean, lo, hi, n = ct.mean_diff, ct.lo, ct.hi, ct.n
            else:
                ci = mean_ci(test, bounds=PROPORTION)
                mean, lo, hi, n = ci.mean, ci.lo, ci.hi, ci.n
            row.update({f"{key}_mean": mean, f"{key}_lo": lo, f"{key}_hi": hi, f"{key}_n": n,
                        f"{key}_val_mean": float(np.mean(val)) if val else math.nan})
        for a, b in d.comparisons:
            r = d.tests[(d.tests["metric"] == m) & (d.tests["comparison"] == f"{a} - {b}")].iloc[0]
            row.update({f"{a}_vs_{b}": r["mean_diff"], f"{a}_vs_{b}_lo": r["ci_lo"], f"{a}_vs_{b}_hi": r["ci_hi"]})
        rows.append(row)
    return pd.DataFrame(rows)
