"""Small statistics used by the report: t confidence intervals, bootstrap tests, Spearman rho.

numpy only; scipy is used for the t quantile when installed (it is not a project dependency),
otherwise an exact-enough fallback (bisection on the t CDF via the incomplete beta function).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0  # fixed so the report is reproducible


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def _t_ppf_fallback(q: float, df: float) -> float:
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def t_quantile(q: float, df: float) -> float:
    """Quantile q of Student's t with df degrees of freedom."""
    try:
        from scipy import stats
        return float(stats.t.ppf(q, df))
    except ImportError:
        return _t_ppf_fallback(q, df)


@dataclass(frozen=True)
class MeanCI:
    mean: float   # NaN when no values
    lo: float     # NaN when fewer than 2 values (no CI possible)
    hi: float
    n: int        # number of values (seeds)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0


def mean_ci(values, level: float = 0.95) -> MeanCI:
    """Mean and two-sided t-interval over the finite values (seeds): mean +- t * sd / sqrt(n)."""
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n == 1:
        return MeanCI(m, math.nan, math.nan, 1)
    half = t_quantile(0.5 + level / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return MeanCI(m, m - half, m + half, n)


@dataclass(frozen=True)
class BootstrapResult:
    mean_diff: float  # mean(a) - mean(b); for paired data the mean of the per-seed differences
    lo: float         # percentile bootstrap CI of mean_diff (NaN when the test is impossible)
    hi: float
    p_value: float    # two-sided, from the bootstrap null (data centred to no difference)
    n_a: int
    n_b: int
    paired: bool
    note: str         # how the test was done, or why it could not be


def bootstrap_diff(a: dict | pd.Series, b: dict | pd.Series, level: float = 0.95,
                   n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> BootstrapResult:
    """Bootstrap test of mean(a) - mean(b); a and b map seed -> value.

    Paired by seed when at least 2 seeds are shared (seeds only in one side are left out and the
    note says so); otherwise unpaired (each side resampled on its own), also said in the note.
    p-value: share of bootstrap means of the centred data at least as far from 0 as the observed
    difference, (1 + count) / (1 + n_boot).
    """
    sa = pd.Series(a, dtype=float).dropna()
    sb = pd.Series(b, dtype=float).dropna()
    sa = sa[np.isfinite(sa)]
    sb = sb[np.isfinite(sb)]
    rng = np.random.default_rng(seed)
    alpha = (1.0 - level) / 2.0
    shared = sorted(set(sa.index) & set(sb.index))
    nan = math.nan
    if len(shared) >= 2:
        d = (sa.loc[shared].to_numpy() - sb.loc[shared].to_numpy())
        obs = float(d.mean())
        idx = rng.integers(0, d.size, size=(n_boot, d.size))
        boot = d[idx].mean(axis=1)
        null = (d - obs)[idx].mean(axis=1)
        dropped = (len(sa) - len(shared)) + (len(sb) - len(shared))
        note = f"paired by seed over {len(shared)} seeds"
        if dropped:
            note += f" ({dropped} unpaired seed result(s) left out)"
        return BootstrapResult(obs, float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha)),
                               _p_value(null, obs, n_boot), len(shared), len(shared), True, note)
    if len(sa) >= 2 and len(sb) >= 2:
        xa, xb = sa.to_numpy(), sb.to_numpy()
        obs = float(xa.mean() - xb.mean())
        ia = rng.integers(0, xa.size, size=(n_boot, xa.size))
        ib = rng.integers(0, xb.size, size=(n_boot, xb.size))
        boot = xa[ia].mean(axis=1) - xb[ib].mean(axis=1)
        null = (xa - xa.mean())[ia].mean(axis=1) - (xb - xb.mean())[ib].mean(axis=1)
        return BootstrapResult(obs, float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha)),
                               _p_value(null, obs, n_boot), len(sa), len(sb), False,
                               f"UNPAIRED bootstrap: the seeds do not pair ({len(sa)} vs {len(sb)} seeds)")
    obs = float(sa.mean() - sb.mean()) if len(sa) and len(sb) else nan
    return BootstrapResult(obs, nan, nan, nan, len(sa), len(sb), False,
                           f"no test possible: needs at least 2 seeds per side (have {len(sa)} and {len(sb)})")


def _p_value(null: np.ndarray, obs: float, n_boot: int) -> float:
    if not np.isfinite(obs):
        return math.nan
    count = int(np.sum(np.abs(null) >= abs(obs) - 1e-12))
    return min(1.0, (1 + count) / (1 + n_boot))


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
