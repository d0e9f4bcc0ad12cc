"""Uncertainty that covers the test images as well as the training seeds: a stratified paired bootstrap over the
one fixed test set, combined with the spread between seeds, for the verdict's comparisons. numpy + scipy.

    scores = TestScores.from_runs({trial_id: (is_positive, score)})       # every run scored the same test images
    boot = Bootstrap(scores.is_pos, n_draws=2000, seed=0)                 # one resample, shared by every run
    values = boot.metric_draws(scores.predictions(runs, thresholds), "f1")  # (draws + 1, runs); row 0 = observed
    res = combined_test(per_seed_draws_a - per_seed_draws_b)              # -> CombinedTest (t, df, p, CI)

Why. Every arm is scored on ONE finite test set (the demo holds 15 minority images). A t-interval over seeds covers
the training randomness only: it answers "what if we retrained?" on these test images, as if they were the whole
population. More seeds shrink that term but never the test-image term, so a seed-only test over-claims exactly
where users go with a cluster (many seeds). Re-drawing the split per seed is not an option (the search's
validation images would become confirm test images).

The model of a seed-averaged difference D = mean_s d_s(T) between two arms on test set T:
    Var(D) = E_T[Var_seed(d_s | T)] / n  +  Var_T(mu(T)),     mu(T) = E_seed[d_s(T)]
1. The seed term: the sample variance of the per-seed differences on our test set, / n. It already holds each
   seed's own image-level noise (the seed x image interaction), because a seed's errors fall on particular images.
2. The test-image term Var_T(mu(T)): the part of the test-set variation SHARED by the seeds (an arm's systematic
   errors on particular images, the same for every seed). It is estimated as the mean covariance, over pairs of
   distinct seeds, of their bootstrap replicates: (n V_mean - V_single) / (n - 1), where V_mean is the bootstrap
   variance of D and V_single the mean bootstrap variance of one seed's d_s. Adding V_mean itself would count the
   interaction twice (once in the seed term, once as V_single / n inside V_mean); the covariance does not, and it
   stays valid when seeds differ (a failed seed, fixed at 0, has no covariance with anything: its share of the
   test term is 0, as it should be). Clipped at 0.
The two are combined as a Welch-Satterthwaite t: df = (v1 + v2)^2 / (v1^2 / (n - 1) + v2^2 / (P - 1)), where P is
the number of positive (minority) test images: the test term is estimated from one sample of P minority images,
which bound how well it is known (F1 and sensitivity move with them). With v2 = 0 this is the paired t-test.
The resample is stratified (positives and negatives keep their counts, as a real test set of that make-up would)
and shared by every arm and every seed (the pairing holds within each draw). Metrics are recomputed at each run's
own validation threshold: nothing is re-chosen on test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate as _integrate
from scipy import optimize as _opt
from scipy import stats as _st

BOOTSTRAP_DRAWS = 2000  # resamples of the test images; the variance estimate's relative error ~ sqrt(2 / draws)
DEFAULT_POWER = 0.8
SPREAD_UPPER_LEVEL = 0.9  # the upper confidence bound of the spread that the detectable difference is also given at
BOOT_METRICS = ("f1", "sensitivity", "specificity", "precision", "accuracy", "balanced_accuracy")


class ScoresError(ValueError):
    """The runs' test scores cannot be bootstrapped together (missing, or not the same test images)."""


@dataclass(frozen=True)
class TestScores:
    """The positive-class scores of several runs on the same test images (row order of the test split)."""
    is_pos: np.ndarray   # (N,) bool: the image is of the positive (minority) class
    scores: dict         # run id -> (N,) float scores

    @classmethod
    def from_runs(cls, runs: dict) -> "TestScores":
        """runs: run id -> (is_pos, score) arrays in test-row order. Every run must have scored the same images."""
        if not runs:
            raise ScoresError("no run has test scores")
        first_id, (first, _) = next(iter(runs.items()))
        ref = np.asarray(first, dtype=bool)
        out = {}
        for rid, (pos, s) in runs.items():
            pos, s = np.asarray(pos, dtype=bool), np.asarray(s, dtype=float)
            if pos.shape != ref.shape or s.shape != ref.shape or not np.array_equal(pos, ref):
                raise ScoresError(f"run {rid} scored other test images than run {first_id} ({len(pos)} vs "
                                  f"{len(ref)} images, or other labels): the bootstrap needs one test set")
            out[rid] = s
        return cls(ref, out)

    def predictions(self, run_ids, thresholds) -> np.ndarray:
        """(N, R) bool: positive prediction of each run at its own (validation) threshold (score >= threshold)."""
        return np.stack([self.scores[r] >= t for r, t in zip(run_ids, thresholds)], axis=1)


class Bootstrap:
    """Stratified resamples of the test images as count weights (draws x N), row 0 the observed set (all ones)."""

    def __init__(self, is_pos: np.ndarray, n_draws: int = BOOTSTRAP_DRAWS, seed: int = 0):
        is_pos = np.asarray(is_pos, dtype=bool)
        self.is_pos, self.n_pos, self.n_neg = is_pos, int(is_pos.sum()), int((~is_pos).sum())
        rng = np.random.default_rng(seed)
        n = len(is_pos)
        counts = np.zeros(n_draws * n, dtype=np.int64)
        for members in (np.flatnonzero(is_pos), np.flatnonzero(~is_pos)):
            if len(members):  # each draw takes as many of the class as the test set holds, with replacement
                picks = members[rng.integers(0, len(members), size=(n_draws, len(members)))]
                counts += np.bincount((picks + np.arange(n_draws)[:, None] * n).ravel(), minlength=n_draws * n)
        w = np.vstack([np.ones((1, n)), counts.reshape(n_draws, n).astype(np.float64)])
        self.weights = w

    def metric_draws(self, predictions: np.ndarray, metric: str) -> np.ndarray:
        """(draws + 1, R): `metric` of each run (columns of predictions, (N, R) bool) in each resample."""
        pred = np.asarray(predictions, dtype=np.float64)
        pos = self.is_pos.astype(np.float64)[:, None]
        tp = self.weights @ (pred * pos)
        fp = self.weights @ (pred * (1 - pos))
        p, q = float(self.n_pos), float(self.n_neg)
        fn, tn = p - tp, q - fp
        with np.errstate(divide="ignore", invalid="ignore"):
            sens = np.where(p > 0, tp / max(p, 1.0), 0.0)
            spec = np.where(q > 0, tn / max(q, 1.0), 0.0)
            if metric == "sensitivity":
                return sens
            if metric == "specificity":
                return spec
            if metric == "precision":
                return np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
            if metric == "f1":
                return np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-300), 0.0)
            if metric == "accuracy":
                return (tp + tn) / max(p + q, 1.0)
            if metric == "balanced_accuracy":
                return (sens + spec) / 2
        raise ValueError(f"no bootstrap for metric {metric!r}; bootstrapped metrics: {list(BOOT_METRICS)}")


@dataclass(frozen=True)
class CombinedTest:
    mean_diff: float    # observed mean over seeds of the per-seed differences
    se: float           # sqrt(seed term + test-image term)
    se_seeds: float     # sqrt of the seed term alone (what a seed-only t-test would use)
    se_test: float      # sqrt of the test-image term
    df: float           # Welch-Satterthwaite degrees of freedom
    t: float
    p: float            # two-sided
    lo: float           # two-sided interval at `level`
    hi: float
    n: int              # seeds

    def lower_bound(self, alpha: float) -> float:
        """One-sided lower confidence bound of the difference at level 1 - alpha (non-inferiority)."""
        if not np.isfinite(self.se) or self.se <= 0:
            return self.mean_diff
        return self.mean_diff - float(_st.t.ppf(1 - alpha, self.df)) * self.se


def test_term(draws: np.ndarray) -> float:
    """The test-image variance of the seed-averaged difference that the seeds share: the mean covariance over pairs
    of distinct seeds of their bootstrap replicates (draws: (B, n) per-seed differences, observed row excluded).
    Clipped at 0 (a negative estimate is noise around 0)."""
    n = draws.shape[1]
    if n < 2 or draws.shape[0] < 2:
        return 0.0
    v_mean = float(np.var(draws.mean(axis=1), ddof=1))
    v_single = float(np.mean(np.var(draws, axis=0, ddof=1)))
    return max(0.0, (n * v_mean - v_single) / (n - 1))


def combined_test(diffs: np.ndarray, n_pos: int, level: float = 0.95, bounds=(-1.0, 1.0)) -> CombinedTest:
    """Test of mean(d) = 0 from per-seed differences and their bootstrap replicates.

    diffs: (draws + 1, n): row 0 the observed per-seed differences, rows 1.. the same seeds' differences in each
    resample of the test images (a seed fixed at 0, e.g. a failed GAN seed counted as no help, is 0 in every row).
    n_pos: positive test images (the test term's degrees of freedom, n_pos - 1)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    d, draws = diffs[0], diffs[1:]
    n = d.size
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return CombinedTest(mean, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n)
    v1 = float(np.var(d, ddof=1)) / n
    v2 = test_term(draws)
    se = math.sqrt(v1 + v2)
    df = satterthwaite(v1, n - 1, v2, max(int(n_pos) - 1, 1))
    if se <= 1e-12 * max(1.0, abs(mean)):  # no spread at all: no test can be made from these numbers
        return CombinedTest(mean, 0.0, math.sqrt(v1), math.sqrt(v2), df, math.nan, math.nan, math.nan, math.nan, n)
    t = mean / se
    p = float(2 * _st.t.sf(abs(t), df))
    half = float(_st.t.ppf(0.5 + level / 2, df)) * se
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return CombinedTest(mean, se, math.sqrt(v1), math.sqrt(v2), df, t, p, lo, hi, n)


def satterthwaite(v1: float, df1: float, v2: float, df2: float) -> float:
    """Welch-Satterthwaite degrees of freedom of v1 + v2 (variances with df1 and df2 degrees of freedom)."""
    den = (v1 * v1 / df1 if df1 > 0 else 0.0) + (v2 * v2 / df2 if df2 > 0 else 0.0)
    return float((v1 + v2) ** 2 / den) if den > 0 else float(df1)


def power(delta: float, se: float, df: float, alpha: float) -> float:
    """Exact power of a two-sided t-test at `alpha` when the true difference is delta: P(|T'| > t_crit) with T'
    noncentral t (df, nc = delta / se). scipy's nct, or where it returns NaN (fractional df, large nc) the same
    probability integrated over the chi-square of the variance estimate."""
    crit = float(_st.t.ppf(1 - alpha / 2, df))
    nc = delta / se
    p = float(_st.nct.sf(crit, df, nc) + _st.nct.cdf(-crit, df, nc))
    if np.isfinite(p):
        return p

    def integrand(v: float) -> float:
        u = crit * math.sqrt(v / df)
        return (_st.norm.sf(u - nc) + _st.norm.cdf(-u - nc)) * _st.chi2.pdf(v, df)

    return float(_integrate.quad(integrand, 0, np.inf, limit=200)[0])


def min_detectable(se: float, df: float, alpha: float, target: float = DEFAULT_POWER) -> float:
    """Smallest true difference the two-sided t-test at `alpha` detects with probability `target` (exact
    noncentral-t power, solved numerically); NaN when there is no spread to go on."""
    if not (np.isfinite(se) and se > 0 and np.isfinite(df) and df > 0):
        return math.nan
    hi = se
    while power(hi, se, df, alpha) < target:  # double until the target is passed (power rises with the difference)
        hi *= 2
        if hi > 1e3 * se:
            return math.inf
    return float(_opt.brentq(lambda x: power(x, se, df, alpha) - target, 0.0, hi, xtol=1e-10))


def spread_upper(se: float, df: float, level: float = SPREAD_UPPER_LEVEL) -> float:
    """Upper confidence bound (one-sided, `level`) of a standard error estimated with df degrees of freedom:
    se * sqrt(df / chi2_{1-level}(df)). The observed spread of a few seeds is itself uncertain."""
    if not (np.isfinite(se) and np.isfinite(df) and df > 0):
        return math.nan
    return se * math.sqrt(df / float(_st.chi2.ppf(1 - level, df)))
