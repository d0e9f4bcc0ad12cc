"""The exchange rate: how many real minority images is the synthetic set worth? pandas/numpy/scipy only.

    ex = exchange(df, scores=RunScores(base))     # None when the results hold no exchange phase
    ex.worth[0].text()                            # "worth 12 real minority images [3, 25] (= 0.5 per synthetic image)"

The exchange phase (sweeps/exchange.py, --exchange-rate) trains the curve arm (the best control C, or the baseline
when no classical fix was allowed) and the headline's synthetic arm (C + the rank-1 GAN, or the GAN alone) on
seeded, patient-grouped subsets of the real minority training images, with the confirm phase's seeds; fraction 1
is the confirm phase's own rows. For fraction f, n_f is the real minority images kept (each seed's own count).

The no-synthetic curve: the curve arm's test F1 against n, linear in log n between adjacent fractions, never
extrapolated past the smallest or the largest measured count. The synthetic set's worth at fraction f is
w_f = n* - n_f, where the curve reaches the arm's F1 at f at n*: the real images it stands for, beyond the n_f
real ones it already had.

The interval is a test inversion (Fieller's idea, per seed): w is inside it iff the per-seed paired difference
    d_s(w) = arm_s(f) - curve_s(n_{f,s} + w),   curve_s = seed s's own curve arm values, interpolated as above,
is not rejected at ALPHA by the combined test of the verdict (analysis.uncertainty.combined_test: the spread of
the seeds plus, when the runs' test scores are readable, the test-image term of a stratified bootstrap shared by
every run; seeds only otherwise, and the result says which). The point estimate is where the seed mean of d_s(w)
crosses 0. Inverting the test over w keeps the pairing (both terms of d_s are seed s's, on the same test images),
so the interval widens where the curve is flat, as a ratio of noisy numbers must. A seed whose GAN arm failed,
was stopped or gated counts as no help (its arm value is its own curve value at n_f: worth 0 with 0 synthetic
images), as in the verdict; a seed without a whole curve is left out (said).

Per fraction the result is one of: worth W [lo, hi] (interval clear of 0); cannot be told apart from zero (the
interval holds 0); worth more than all N real images (the arm beats the curve at every measured count, up to the
full training set: the interval is unbounded above); worse than the curve's smallest subset. An interval end that
reaches the end of the measured curve is open ("beyond"): nothing outside the measured range is claimed. The
rate per synthetic image is w / (mean synthetic images the arm added, 0 for a seed that counts as no help).
Coverage of the interval is checked by simulation in tests/test_exchange.py (numbers in docs/report.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _st

from analysis.uncertainty import BOOTSTRAP_DRAWS, Bootstrap, ScoresError, TestScores

PHASE = "exchange"
ALPHA = 0.05
GRID = 401  # values of w the test is inverted at (linear between the measured curve's ends)
CURVE_ARMS = ("control", "baseline")  # the no-synthetic curve: C, else the baseline
SYNTHETIC_ARMS = ("control+gan", "gan")  # the headline's arm: C + GAN, else the GAN alone


@dataclass
class Worth:
    """What the synthetic set is worth at one fraction (images: real minority training images)."""
    fraction: float
    n_real: float            # real minority images the arm had (mean over seeds)
    n_all: float             # real minority images of the whole training set (mean over seeds)
    n_synthetic: float       # synthetic images the arm added (mean over seeds, 0 for a seed counted as no help)
    kind: str                # "worth" | "zero" | "above" | "below" | "none"
    estimate: float          # w (NaN: the arm's F1 is outside the measured curve)
    lo: float                # interval in images (-inf / inf: open beyond the measured curve)
    hi: float
    w_min: float             # the measured curve's range of w (its smallest and largest count - n_real)
    w_max: float
    seeds: int
    seeds_no_help: list = field(default_factory=list)
    curve_f1: float = math.nan  # the curve arm's mean test F1 at this fraction
    arm_f1: float = math.nan    # the synthetic arm's (a seed counted as no help: its curve value)
    why: str = ""            # kind "none": why there is no estimate

    def rate(self, x: float) -> float:
        """images -> real images per synthetic image."""
        return x / self.n_synthetic if self.n_synthetic > 0 else math.nan

    def interval_text(self) -> tuple[str, str]:
        """The interval in real images and per synthetic image, an open end as "< edge" / "> edge"."""
        return (f"[{_end(self.lo, self.w_min, '.0f')}, {_end(self.hi, self.w_max, '.0f')}]",
                f"[{_end(self.rate(self.lo), self.rate(self.w_min), '.2f')}, "
                f"{_end(self.rate(self.hi), self.rate(self.w_max), '.2f')}]")

    def text(self) -> str:
        """The answer for this fraction, in one line."""
        head = (f"with {self.n_real:.0f} of {self.n_all:.0f} real minority images (fraction {self.fraction:g}) + "
                f"{self.n_synthetic:.0f} synthetic")
        if self.kind == "none":
            return f"{head}: no estimate ({self.why})"
        if self.kind == "above":
            return (f"{head}: worth more than all {self.n_all:.0f} real images (the arm beats the no-synthetic curve "
                    f"at every measured count; > {self.w_max:.0f} more real images, > {self.rate(self.w_max):.2f} "
                    "per synthetic image)")
        if self.kind == "below":
            return (f"{head}: worse than the curve's smallest subset (the synthetic set costs more than "
                    f"{-self.w_min:.0f} real images)")
        interval, rates = self.interval_text()
        if np.isfinite(self.estimate):
            est = f"{self.estimate:.0f} real minority images"
            per = f"{self.rate(self.estimate):.2f} {rates} per synthetic image"
        else:  # the arm's F1 lies outside the measured curve: no point on it to read
            est, per = "off the measured curve", f"{rates} per synthetic image"
        if self.kind == "zero":
            return f"{head}: cannot be told apart from zero (estimate {est}, 95% interval {interval}; {per})"
        return f"{head}: worth {est} {interval} (= {per})"


def _end(x: float, edge: float, fmt: str) -> str:
    """An interval end; an open one (past the measured curve) as "< edge" / "> edge"."""
    if np.isfinite(x):
        return format(x, fmt)
    if not np.isfinite(edge):
        return "n/a"
    return f"> {format(edge, fmt)}" if x > 0 else f"< {format(edge, fmt)}"


def tests(diffs: np.ndarray, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """analysis.uncertainty.combined_test over a last axis of hypotheses at once -> (mean, p) per column.

    diffs: (draws + 1, seeds, G): row 0 the observed per-seed differences, rows 1.. their bootstrap replicates
    (one row: seeds only). p is NaN where there is no spread at all (as combined_test's)."""
    d, draws = diffs[0], diffs[1:]
    n = d.shape[0]
    mean = d.mean(axis=0)
    if n < 2:
        return mean, np.full(mean.shape, np.nan)
    v1 = d.var(axis=0, ddof=1) / n
    if draws.shape[0] >= 2:
        v_mean = draws.mean(axis=1).var(axis=0, ddof=1)
        v_single = draws.var(axis=0, ddof=1).mean(axis=0)
        v2 = np.maximum(0.0, (n * v_mean - v_single) / (n - 1))
    else:
        v2 = np.zeros_like(v1)
    se = np.sqrt(v1 + v2)
    df1, df2 = n - 1, max(int(n_pos) - 1, 1)
    den = v1 * v1 / df1 + v2 * v2 / df2
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, (v1 + v2) ** 2 / np.where(den > 0, den, 1.0), df1)
        t = mean / se
    p = 2 * _st.t.sf(np.abs(t), df)
    p[se <= 1e-12 * np.maximum(1.0, np.abs(mean))] = np.nan
    return mean, p


def worth(n: np.ndarray, curve: np.ndarray, arm: np.ndarray, j: int, n_pos: int, alpha: float = ALPHA,
          grid: int = GRID) -> dict:
    """The worth at fraction index j, by test inversion (see the module's docstring).

    n: (seeds, F) real minority images per seed at each fraction, ascending (the last: all of them);
    curve: (draws + 1, seeds, F) the curve arm's test F1 (row 0 observed); arm: (draws + 1, seeds) the synthetic
    arm's test F1 at fraction j. -> {kind, estimate, lo, hi, w_min, w_max} in images."""
    n = np.asarray(n, dtype=np.float64)
    curve, arm = np.asarray(curve, dtype=np.float64), np.asarray(arm, dtype=np.float64)
    seeds = n.shape[0]
    w_min = float(np.max(n[:, 0] - n[:, j]))
    w_max = float(np.min(n[:, -1] - n[:, j]))
    out = {"kind": "none", "estimate": math.nan, "lo": math.nan, "hi": math.nan, "w_min": w_min, "w_max": w_max}
    if seeds < 2 or not w_max > w_min:
        return out
    w = np.unique(np.r_[np.linspace(w_min, w_max, grid), 0.0 if w_min <= 0 <= w_max else w_min])
    logn = np.log(np.maximum(n, 1e-9))
    t = np.log(np.maximum(n[:, j:j + 1] + w[None, :], 1e-9))  # (S, G)
    k = np.empty(t.shape, dtype=np.int64)
    for s in range(seeds):  # each seed's own segment of its own curve
        k[s] = np.clip(np.searchsorted(logn[s], t[s], side="right") - 1, 0, logn.shape[1] - 2)
    rows = np.arange(seeds)[:, None]
    x0, x1 = logn[rows, k], logn[rows, k + 1]
    lam = np.where(x1 > x0, np.clip((t - x0) / np.where(x1 > x0, x1 - x0, 1.0), 0.0, 1.0), 0.0)
    at = curve[:, rows, k] * (1 - lam) + curve[:, rows, k + 1] * lam  # (R, S, G)
    mean, p = tests(arm[:, :, None] - at, n_pos)
    ok = np.where(np.isnan(p), np.abs(mean) <= 1e-12, p >= alpha)
    cross = np.flatnonzero(np.sign(mean[:-1]) * np.sign(mean[1:]) <= 0)
    if len(cross):  # where the seed mean of d(w) crosses 0; several crossings (a bumpy curve): the most central
        best = cross[np.argmax(np.fmax(p[cross], p[cross + 1]))] if np.isfinite(p[cross]).any() else cross[0]
        a, b = mean[best], mean[best + 1]
        out["estimate"] = float(w[best] if a == b else w[best] + (w[best + 1] - w[best]) * a / (a - b))
    if not ok.any():
        out["kind"] = "above" if mean.mean() > 0 else "below"
        out["lo"], out["hi"] = (w_max, math.inf) if out["kind"] == "above" else (-math.inf, w_min)
        return out
    inside = w[ok]
    lo = -math.inf if ok[0] else float(inside.min())
    hi = math.inf if ok[-1] else float(inside.max())
    out.update(lo=lo, hi=hi, kind="zero" if lo <= 0 <= hi else "worth")
    return out


def without_exchange(df: pd.DataFrame) -> pd.DataFrame:
    """The rows every other analysis reads (report sections, the export): an exchange-phase row trained on a subset
    of the real minority images (it shares its confirm config's id), so it must not enter a config's summary, a
    pick, the headline or a figure."""
    return df[df["sweep_phase"] != PHASE] if "sweep_phase" in df.columns else df


@dataclass
class Exchange:
    """The exchange phase's answer: one Worth per fraction, the per-seed numbers behind them, and what they cover."""
    worth: list                 # Worth per fraction (ascending; the last is 1.0)
    points: pd.DataFrame        # per seed and fraction: n_real, curve_f1, arm_f1, n_synthetic, arm_status
    curve_arm: str
    synthetic_arm: str
    covers_test_images: bool
    method: str                 # what the interval covers, in words
    notes: list = field(default_factory=list)

    def lines(self) -> list[str]:
        return [w.text() for w in self.worth]


def exchange(df: pd.DataFrame, scores=None, draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
             alpha: float = ALPHA) -> Exchange | None:
    """The worth of the synthetic set at each fraction from a sweep's rows (tidy, analysis.load); None when the rows
    hold no exchange phase. scores: analysis.scores.RunScores (None: seeds only)."""
    if "sweep_phase" not in df.columns or not (df["sweep_phase"] == PHASE).any():
        return None
    g = _gather(df)
    if isinstance(g, Exchange):  # nothing to estimate: it says why
        return g
    cur_rows, syn_rows, seeds, fractions = g["cur"], g["syn"], g["seeds"], g["fractions"]
    n = np.array([[_num(cur_rows[s, f].get("n_train_positive")) for f in fractions] for s in seeds])
    if not np.isfinite(n).all():
        return Exchange([], pd.DataFrame(), g["curve_arm"], g["syn_arm"], False, "", g["notes"] + [
            "rows lack n_train_positive (results from before the exchange phase recorded it)"])
    used = [r for r in [*cur_rows.values(), *syn_rows.values()] if r is not None and r["status"] == "ok"]
    values, covers, method = _values(used, scores, draws, seed)
    n_pos = values.n_pos if covers else next(
        (int(x) for x in (_num(r.get("n_test_positive")) for r in used) if np.isfinite(x)), 0)
    curve = np.stack([np.stack([values(cur_rows[s, f]) for f in fractions], axis=1) for s in seeds], axis=1)
    out, points = [], []
    for j, f in enumerate(fractions):
        w, pts = _fraction(j, f, seeds, syn_rows, values, curve, n, n_pos, alpha)
        out.append(w)
        points += pts
    return Exchange(out, pd.DataFrame(points), g["curve_arm"], g["syn_arm"], covers, method, g["notes"])


def _gather(df: pd.DataFrame):
    """The two arms' rows by (seed, fraction): the exchange rows and, for fraction 1, the confirm rows of the same
    configs; the seeds with a whole curve -> a dict, or an Exchange without estimates saying why there are none."""
    clf = df[df["stage"] == "classifier"]
    ex = clf[clf["sweep_phase"] == PHASE]
    curve_arm = next((a for a in CURVE_ARMS if (ex["arm"] == a).any()), "")
    syn_arm = next((a for a in SYNTHETIC_ARMS if (ex["arm"] == a).any()), "")
    if not curve_arm or not syn_arm:
        return Exchange([], pd.DataFrame(), curve_arm, syn_arm, False, "",
                        [f"the exchange rows lack the {'curve' if not curve_arm else 'synthetic'} arm"])
    cids = [ex.loc[ex["arm"] == a, "config_id"].iloc[0] for a in (curve_arm, syn_arm)]
    full = clf[(clf["sweep_phase"] == "confirm") & clf["config_id"].isin(cids) & clf["arm"].isin([curve_arm, syn_arm])]
    rows = pd.concat([ex[ex["config_id"].isin(cids)], full], ignore_index=True)
    frac = pd.to_numeric(rows["minority_fraction"], errors="coerce") if "minority_fraction" in rows else None
    rows = rows.assign(_f=(frac.fillna(1.0) if frac is not None else 1.0), _seed=pd.to_numeric(rows["seed"]))
    fractions = sorted(rows["_f"].unique())
    cur = rows[(rows["arm"] == curve_arm) & (rows["status"] == "ok")]
    complete = sorted(s for s, g in cur.groupby("_seed") if set(g["_f"]) >= set(fractions))
    dropped = sorted(set(rows.loc[rows["arm"] == curve_arm, "_seed"]) - set(complete))
    notes = [f"seed(s) {', '.join(str(int(s)) for s in dropped)} left out: the curve arm did not finish at every "
             "fraction, so the seed has no whole curve"] if dropped else []
    if len(complete) < 2:
        return Exchange([], pd.DataFrame(), curve_arm, syn_arm, False, "", notes + [
            f"{len(complete)} seed(s) with a whole curve: an interval needs at least 2"])

    def by_seed_fraction(g: pd.DataFrame) -> dict:  # (seed, fraction) -> its row (the last, if repeated)
        last = g.drop_duplicates(["_seed", "_f"], keep="last")
        by = {(s, f): r for s, f, r in zip(last["_seed"], last["_f"], last.to_dict("records"))}
        return {(s, f): by.get((s, f)) for s in complete for f in fractions}

    return {"cur": by_seed_fraction(cur), "syn": by_seed_fraction(rows[rows["arm"] == syn_arm]), "seeds": complete,
            "fractions": fractions, "curve_arm": curve_arm, "syn_arm": syn_arm, "notes": notes}


def _fraction(j: int, f: float, seeds: list, syn_rows: dict, values, curve: np.ndarray, n: np.ndarray, n_pos: int,
              alpha: float) -> tuple[Worth, list[dict]]:
    """The Worth at fraction index j and its per-seed points. A seed whose arm failed, stopped or was gated: no help
    (its curve value at n_f, 0 synthetic images); a seed without an arm row here (a phase cut short): left out."""
    arm, n_syn, no_help, here, points = [], [], [], [], []
    for i, s in enumerate(seeds):
        r = syn_rows[s, f]
        point = {"seed": int(s), "fraction": f, "n_real": n[i, j], "curve_f1": curve[0, i, j], "arm_f1": math.nan,
                 "arm_status": "missing" if r is None else r["status"], "n_synthetic": math.nan}
        if r is not None:
            here.append(i)
            ok = r["status"] == "ok"
            arm.append(values(r) if ok else curve[:, i, j])
            n_syn.append(_num(r.get("n_synthetic")) if ok and np.isfinite(_num(r.get("n_synthetic"))) else 0.0)
            no_help += [] if ok else [int(s)]
            point.update(arm_f1=float(arm[-1][0]), n_synthetic=n_syn[-1])
        points.append(point)
    base = dict(fraction=f, n_real=float(n[here, j].mean()) if here else float(n[:, j].mean()),
                n_all=float(n[:, -1].mean()), n_synthetic=float(np.mean(n_syn)) if n_syn else 0.0,
                seeds=len(here), seeds_no_help=no_help, curve_f1=float(curve[0, :, j].mean()),
                arm_f1=float(np.mean([a[0] for a in arm])) if arm else math.nan)
    if len(here) < 2:
        return Worth(**base, kind="none", estimate=math.nan, lo=math.nan, hi=math.nan, w_min=math.nan,
                     w_max=math.nan, why=f"{len(here)} seed(s) of the arm at this fraction"), points
    res = worth(n[here], curve[:, here], np.stack(arm, axis=1), j, n_pos, alpha)
    return Worth(**base, **res, why="" if res["kind"] != "none" else "the curve has no range here"), points


def _num(x) -> float:
    try:
        return float(x) if x is not None and not pd.isna(x) else math.nan
    except (TypeError, ValueError):
        return math.nan


class _Observed:
    """Test F1 of a row: its observed value only (seeds-only intervals)."""
    n_pos = 0

    def __call__(self, r) -> np.ndarray:
        return np.array([_num(r.get("test_f1"))])


class _Boot:
    """Test F1 of a row in each bootstrap resample of the test images (row 0: observed), shared by every run."""

    def __init__(self, cols: dict, f1: np.ndarray, n_pos: int):
        self.cols, self.f1, self.n_pos = cols, f1, n_pos

    def __call__(self, r) -> np.ndarray:
        return self.f1[:, self.cols[str(r["trial_id"])]]


def _values(used: list, scores, draws: int, seed: int):
    """-> (row -> (R,) test F1, covers the test images, what the interval covers in words)."""
    seeds_only = "seeds only (t over seeds; the runs' test scores were not read, so the test images' own " \
                 "sampling is not in the interval)"
    if scores is None or not used:
        return _Observed(), False, seeds_only
    recs = [{"trial_id": str(r["trial_id"]), "clf_run_dir": r.get("clf_run_dir", "")} for r in used]
    got = scores(recs)
    thr = [_num(r.get("clf_threshold")) for r in used]
    missing = [rec["trial_id"] for rec, t in zip(recs, thr) if rec["trial_id"] not in got or not np.isfinite(t)]
    if missing:
        return _Observed(), False, seeds_only.replace("were not read", f"of {len(missing)} run(s) could not be read "
                                                      f"(e.g. {missing[0]})")
    try:
        ts = TestScores.from_runs({rec["trial_id"]: got[rec["trial_id"]] for rec in recs})
    except ScoresError as exc:
        return _Observed(), False, seeds_only.replace("were not read", f"are not one test set ({exc})")
    ids = list(dict.fromkeys(rec["trial_id"] for rec in recs))
    boot = Bootstrap(ts.is_pos, draws, seed)
    f1 = boot.metric_draws(ts.predictions(ids, [thr[[rec["trial_id"] for rec in recs].index(i)] for i in ids]), "f1")
    return (_Boot({i: k for k, i in enumerate(ids)}, f1, boot.n_pos), True,
            f"seeds and test images (combined t of the verdict: the seeds' spread + a stratified bootstrap of the "
            f"{len(ts.is_pos)} test images, {draws} draws)")
