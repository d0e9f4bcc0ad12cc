"""The statistics behind the report's verdict: t intervals, the paired t-test over seeds, the exact sign-flip
test beside it, Holm's correction, the smallest detectable difference, Spearman's rho.

Why these: a sweep has few seeds (3-10). A percentile bootstrap over 3 paired differences returns about
[min, max] as its "95%" interval and p < 0.001 whenever all three share a sign; the paired t-test is exact
for normal per-seed differences at any n >= 2 and is what the claim rests on. The sign-flip (permutation)
test needs no normality but cannot go below 2 / 2^n (0.25 at 3 seeds, 0.0625 at 5): it is shown beside the
t-test as a distribution-free check, never as the claim. Below MIN_PAIRED_SEEDS paired seeds nothing is
tested. With K-fold CV (--folds K) each seed's K folds are averaged first (seed_means): the seed stays the unit,
n = seeds. numpy + scipy.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as _st

MIN_PAIRED_SEEDS = 3  # below this many paired seeds: no test, no claim
SIGN_FLIP_EXACT_MAX_N = 16  # exact enumeration of all 2^n sign patterns up to here; seeded Monte Carlo above
SIGN_FLIP_DRAWS = 65_536
DEFAULT_POWER = 0.8  # power at which the smallest detectable difference is stated


def t_quantile(q: float, df: float) -> float:
    """Quantile q of Student's t with df degrees of freedom."""
    return float(_st.t.ppf(q, df))


@dataclass(frozen=True)
class MeanCI:
    mean: float   # NaN when no values
    lo: float     # NaN when fewer than 2 values (no CI possible)
    hi: float
    n: int        # number of values (seeds)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0


def _finite(values) -> np.ndarray:
    x = np.asarray(pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce"), dtype=float)
    return x[np.isfinite(x)]


def mean_ci(values, level: float = 0.95, bounds: tuple[float, float] | None = None) -> MeanCI:
    """Mean and two-sided t-interval over the finite values (seeds): mean +- t * sd / sqrt(n).

    bounds: the range the quantity can take (e.g. (0, 1) for a proportion such as sensitivity); the interval
    is clipped to it, since a sensitivity band reaching 1.3 says nothing a reader can use."""
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n == 1:
        return MeanCI(m, math.nan, math.nan, 1)
    half = t_quantile(0.5 + level / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return MeanCI(m, lo, hi, n)


@lru_cache(maxsize=None)
def _sign_patterns(n: int) -> np.ndarray:
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)))


def sign_flip_p(d) -> float:
    """Two-sided exact sign-flip (paired permutation) p-value of mean(d) = 0: the share of the 2^n sign
    patterns whose |mean| is at least the observed |mean|. Its floor is 2 / 2^n."""
    d = np.asarray(d, dtype=float)
    n = d.size
    if n == 0:
        return math.nan
    obs = abs(d.mean())
    if n <= SIGN_FLIP_EXACT_MAX_N:
        means = np.abs(_sign_patterns(n) @ d) / n
        return float(np.mean(means >= obs - 1e-12 * max(1.0, obs)))
    rng = np.random.default_rng(0)
    signs = rng.choice((-1.0, 1.0), size=(SIGN_FLIP_DRAWS, n))
    count = int(np.sum(np.abs(signs @ d) / n >= obs - 1e-12 * max(1.0, obs)))
    return (1 + count) / (1 + SIGN_FLIP_DRAWS)


def num_folds(rows: pd.DataFrame) -> int:
    """K of a K-fold confirm phase: the distinct `fold` values among result rows (0: no folds, one fixed split)."""
    if "fold" not in rows:
        return 0
    return int(pd.to_numeric(rows["fold"], errors="coerce").dropna().nunique())


def seed_means(values, folds: int = 0) -> dict[float, float]:
    """(seed, fold, value) triples -> {seed: the seed's mean}: the per-seed numbers the intervals and the paired
    test use. The unit is the seed: a K-fold confirm phase (--folds K) gives each seed K rows that share its
    training seed and most of their training images, so they are not independent replicates; their mean is ONE
    observation (n = seeds, never seeds x folds). With folds K > 0 a seed counts only when each of its K
    folds has a finite value (else its mean would cover other folds than another arm's: the pairing breaks);
    fold None or folds 0 (a fixed split): every finite value of the seed is averaged."""
    acc: dict[float, dict] = {}
    for seed, fold, v in values:
        if v is None or not np.isfinite(v):
            continue
        acc.setdefault(seed, {}).setdefault(fold, []).append(float(v))
    return {s: float(np.mean([np.mean(v) for v in by_fold.values()])) for s, by_fold in acc.items()
            if not folds or len(by_fold) >= folds}


def sign_flip_floor(n: int) -> float:
    """The smallest p-value an exact two-sided sign-flip test of n differences can give."""
    return 2.0 / 2 ** n if n > 0 else math.nan


def min_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = DEFAULT_POWER) -> float:
    """Smallest true mean difference a two-sided paired t-test at `alpha` over n seeds detects with `power`,
    given the per-seed differences' standard deviation sd: (t(1-alpha/2) + t(power)) * sd / sqrt(n)."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    df = n - 1
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * sd / math.sqrt(n)


@dataclass(frozen=True)
class PairedTest:
    mean_diff: float   # mean of the per-seed differences a - b (NaN when nothing pairs)
    lo: float          # t-interval of the mean difference (NaN when untested)
    hi: float
    sd_diff: float     # standard deviation of the per-seed differences
    n: int             # paired seeds used
    t: float
    df: int
    p_t: float         # two-sided paired t-test p-value: the claim rests on this (after Holm)
    p_sign_flip: float  # exact sign-flip p-value (distribution-free check; floor 2/2^n)
    p_floor: float     # 2/2^n
    n_only_a: int      # seeds with a value in a only (left out of the pairing)
    n_only_b: int
    tested: bool       # n >= MIN_PAIRED_SEEDS
    note: str          # how the test was done, or why it was not

    def mde(self, alpha: float = 0.05, power: float = DEFAULT_POWER) -> float:
        return min_detectable_difference(self.sd_diff, self.n, alpha, power) if self.tested else math.nan


def _by_seed(values) -> pd.Series:
    s = pd.Series(values, dtype=float) if not isinstance(values, pd.Series) else values.astype(float)
    return s[np.isfinite(s.to_numpy())]


def paired_test(a, b, level: float = 0.95, bounds: tuple[float, float] | None = None) -> PairedTest:
    """Paired t-test and sign-flip test of mean(a - b) over the seeds both a and b have (seed -> value).

    Seeds present on one side only are left out (counted in n_only_a / n_only_b and the note). Below
    MIN_PAIRED_SEEDS paired seeds no test is made: the mean difference is returned with tested=False.
    bounds clips the interval to the range a difference can take (e.g. (-1, 1) for proportions)."""
    sa, sb = _by_seed(a), _by_seed(b)
    shared = sorted(set(sa.index) & set(sb.index))
    only_a, only_b = len(sa) - len(shared), len(sb) - len(shared)
    nan = math.nan
    left_out = f" ({only_a + only_b} unpaired seed result(s) left out)" if only_a + only_b else ""
    n = len(shared)
    if n == 0:
        return PairedTest(nan, nan, nan, nan, 0, nan, 0, nan, nan, nan, only_a, only_b, False,
                          f"no test: no seed has a result in both arms{left_out}")
    d = sa.loc[shared].to_numpy() - sb.loc[shared].to_numpy()
    mean = float(d.mean())
    if n < MIN_PAIRED_SEEDS:
        return PairedTest(mean, nan, nan, float(d.std(ddof=1)) if n > 1 else nan, n, nan, n - 1, nan, nan,
                          sign_flip_floor(n), only_a, only_b, False,
                          f"no test: {n} paired seed(s), a test needs at least {MIN_PAIRED_SEEDS}{left_out}")
    sd = float(d.std(ddof=1))
    df = n - 1
    se = sd / math.sqrt(n)
    p_flip = sign_flip_p(d)
    note = f"paired t-test over {n} seeds{left_out}"
    if se > 1e-12 * max(1.0, abs(mean)):
        t = mean / se
        p_t = float(2 * _st.t.sf(abs(t), df))
    else:
        # identical differences (a metric with few possible values, e.g. sensitivity on 4 test images): t is
        # undefined, and "no spread" from a handful of seeds is no proof; the exact sign-flip p-value decides
        t = math.copysign(math.inf, mean) if mean != 0 else 0.0
        p_t = p_flip if mean != 0 else 1.0
        note = f"identical differences over {n} seeds: t undefined, p from the exact sign-flip test{left_out}"
    half = t_quantile(0.5 + level / 2.0, df) * se
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return PairedTest(mean, lo, hi, sd, n, t, df, p_t, p_flip, sign_flip_floor(n), only_a, only_b, True, note)


def holm(p_values) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count in the family)."""
    p = np.asarray(list(p_values), dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="mergesort")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def spearman(x, y) -> tuple[float, int]:
    """Spearman rank correlation over the pairs where both are finite; (rho, n). NaN when n < 3."""
    s = pd.DataFrame({"x": pd.to_numeric(pd.Series(list(x)), errors="coerce"),
                      "y": pd.to_numeric(pd.Series(list(y)), errors="coerce")})
    s = s[np.isfinite(s["x"]) & np.isfinite(s["y"])]
    n = len(s)
    if n < 3:
        return math.nan, n
    rx, ry = s["x"].rank().to_numpy(), s["y"].rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan, n
    return float(np.corrcoef(rx, ry)[0, 1]), n
