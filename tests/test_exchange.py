"""The exchange rate (analysis/exchange.py, sweeps/exchange.py): the worth of the synthetic set in real minority
images, checked on simulated sweeps with a known truth, and the subsets the sweep trains on.

The simulation (image by image, tests/image_sim.py's Sweep: one fixed val and test set per sweep, every config its
own systematic per-image errors, run shifts and per-image noise, thresholds chosen on val): a classifier's
minority logits are shifted by a SATURATING learning curve g(n) = G (1 - exp(-n / TAU)) of the real minority
images n it trained on (not log-linear, so the analysis's linear-in-log-n interpolation has a real bias). The
synthetic arm at fraction f trains on n_f real images and m_f = RATIO x n_f synthetic ones, each worth WORTH real
images by construction: its curve is g(n_f + WORTH x m_f). The curve arm is measured at n_f for every fraction
(each (arm, fraction) is its own config with its own systematic errors, fixed across seeds). Seeds keep a few
images more or fewer (patient groups), nested across fractions. Each seed's GAN at each fraction fails with
probability P_FAIL; a failed seed counts as no help and adds no synthetic image, so the truth per synthetic image
actually added stays WORTH (exactly so where g is linear between n_f and n_f + WORTH m_f; g is concave there, so
the failure-inclusive truth is a little below WORTH: the coverage below is measured against WORTH anyway).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.exchange import exchange, tests as inverted_tests, worth
from analysis.uncertainty import combined_test
from image_sim import Model, _metrics, _thresholds

N_ALL = 80           # real minority training images (the demo has 70)
FRACTIONS = (0.25, 0.5, 1.0)
RATIO = 1.0          # synthetic / real minority images of the arm
WORTH = 0.5          # real images one synthetic image is worth (the truth)
G, TAU = 2.6, 35.0   # the learning curve of the minority logits: saturating
P_FAIL = 0.1
N_POS, N_NEG = 60, 300  # test (and val) images: minority, majority
REPLICATIONS = 200
DRAWS = 300          # bootstrap draws per replication (the report uses 2000)
# a cleaner classifier than the demo's (whose seed spread, sd ~0.13 in F1, would leave most intervals open):
# the learning curve then spans several seed spreads between the smallest subset and all images
MODEL = Model(mu_pos=0.3, sys=0.3, run=0.15, quality=0.2, noise=0.7)


def curve(n):
    return G * (1 - np.exp(-np.asarray(n, dtype=float) / TAU))


class Images:
    """One simulated sweep's fixed val and test images and its configs' systematic errors (tests/image_sim.py's
    model, with a larger test set: N_POS minority, N_NEG majority images)."""

    def __init__(self, rng, model: Model = MODEL):
        self.rng, self.m = rng, model
        self.is_pos = np.r_[np.ones(N_POS, bool), np.zeros(N_NEG, bool)]
        self.base = {s: np.where(self.is_pos, model.mu_pos, model.mu_neg) + rng.normal(0, model.img, len(self.is_pos))
                     for s in ("val", "test")}
        self.sys: dict = {}
        self.rows: list = []
        self.scores: dict = {}

    def run(self, config: str, effect: float, failed: bool, **row) -> None:
        """One run of `config` (its own systematic errors), its minority logits shifted by `effect`."""
        m, n = self.m, len(self.is_pos)
        sys = self.sys.setdefault(config, {s: self.rng.normal(0, m.sys, n) for s in ("val", "test")})
        shift = self.rng.normal(0, m.run) + self.rng.normal(0, m.quality) * self.is_pos
        logit = {s: self.base[s] + effect * self.is_pos + sys[s] + shift + self.rng.normal(0, m.noise, n)
                 for s in ("val", "test")}
        thr = _thresholds(logit["val"][None], self.is_pos)
        f1 = _metrics(logit["test"][None], self.is_pos, thr)["f1"][0]
        tid = f"t{len(self.rows)}"
        self.rows.append({"trial_id": tid, "stage": "classifier", "status": "failed" if failed else "ok",
                          "test_f1": np.nan if failed else float(f1), "clf_threshold": float(thr[0]),
                          "clf_run_dir": "", "n_test_positive": N_POS, **row})
        if not failed:
            self.scores[tid] = (self.is_pos, logit["test"])


def simulate(rng, n_seeds: int, worth_per_image: float = WORTH, p_fail: float = P_FAIL, arm_boost: float = 0.0):
    """One simulated exchange phase -> (rows, scores callable). arm_boost: an extra logit shift of the arm."""
    sw = Images(rng)
    jitter = {0.25: 2, 0.5: 3, 1.0: 0}  # patient groups: a seed's subset holds a few images more or fewer
    for s in range(1000, 1000 + n_seeds):
        kept = {f: int(round(f * N_ALL)) + int(rng.integers(-jitter[f], jitter[f] + 1)) for f in FRACTIONS}
        for f in FRACTIONS:
            n, m = kept[f], RATIO * kept[f]
            common = dict(seed=s, n_train_positive=n, sweep_phase="exchange" if f < 1 else "confirm",
                          minority_fraction=f if f < 1 else np.nan)
            # config_id: a fraction's rows share the confirm config's id; the systematic errors are the fraction's
            sw.run(f"ctl@{f}", float(curve(n)), False, arm="control", config_id="ctl", n_synthetic=0, **common)
            failed = bool(rng.random() < p_fail)
            sw.run(f"arm@{f}", float(curve(n + worth_per_image * m)) + arm_boost, failed, arm="control+gan",
                   config_id="arm", n_synthetic=int(m), **common)
    df = pd.DataFrame(sw.rows)

    def scores(recs):
        return {r["trial_id"]: sw.scores[r["trial_id"]] for r in recs if r["trial_id"] in sw.scores}
    return df, scores


def replicate(reps: int, n_seeds_choices=(3, 4, 5), seed: int = 0, **kw) -> pd.DataFrame:
    """reps simulated sweeps -> one row per (replication, fraction < 1): interval, kind, truth per synthetic image."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(reps):
        df, scores = simulate(rng, int(rng.choice(n_seeds_choices)), **kw)
        ex = exchange(df, scores=scores, draws=DRAWS, seed=r)
        assert ex is not None and ex.covers_test_images, ex and ex.method
        for w in ex.worth[:-1]:
            out.append({"rep": r, "fraction": w.fraction, "kind": w.kind, "lo": w.rate(w.lo), "hi": w.rate(w.hi),
                        "estimate": w.rate(w.estimate), "seeds": w.seeds, "no_help": len(w.seeds_no_help),
                        # the width within the measured curve (an open end counts up to the curve's end)
                        "width": w.rate(min(w.hi, w.w_max)) - w.rate(max(w.lo, w.w_min)),
                        "open": not (np.isfinite(w.lo) and np.isfinite(w.hi))})
    return pd.DataFrame(out)


def covers(t: pd.DataFrame, truth: float) -> pd.Series:
    """Whether each interval holds the truth ("above" / "below": open beyond the curve's end, the end excluded)."""
    closed = ~t["kind"].isin(["above", "below"]) & (t["lo"] <= truth) & (truth <= t["hi"])
    return closed | ((t["kind"] == "above") & (truth > t["lo"])) | ((t["kind"] == "below") & (truth < t["hi"]))


def test_the_interval_holds_half_a_real_image_per_synthetic_image_in_90_percent_of_simulated_sweeps():
    t = replicate(REPLICATIONS)
    cov = covers(t, WORTH)
    by = t.assign(c=cov).groupby("fraction").agg(coverage=("c", "mean"), median_width=("width", "median"),
                                                 open_share=("open", "mean"), median_estimate=("estimate", "median"))
    print(f"\nexchange: coverage of {WORTH} real image per synthetic image over {REPLICATIONS} simulated sweeps "
          f"(3-5 seeds, GAN failure {P_FAIL}, both interpolable fractions): {cov.mean():.3f}; median width within "
          f"the measured curve {t['width'].median():.2f} real images per synthetic image; {t['open'].mean():.0%} of "
          f"intervals reach an end of the curve\n{by.round(3)}")
    assert len(t) == 2 * REPLICATIONS  # the two interpolable fractions of every replication
    assert cov.mean() >= 0.90
    assert (by["coverage"] >= 0.88).all()  # each fraction too, not one carrying the other
    assert (by["median_estimate"] - WORTH).abs().max() < 0.1  # the interpolation's bias is small beside the width
    assert t["width"].median() < 1.5  # narrower than the measured curve's whole range (3 at 0.25, 1.5 at 0.5)
    assert (t["no_help"] > 0).any()  # failed GANs did occur and were counted as no help


def test_synthetic_images_worth_nothing_give_intervals_that_hold_zero():
    t = replicate(120, worth_per_image=0.0, seed=1)
    cov = covers(t, 0.0)
    print(f"\nworth 0: coverage of 0 {cov.mean():.3f}; 'cannot be told apart from zero' in "
          f"{(t['kind'] == 'zero').mean():.3f}")
    assert cov.mean() >= 0.90
    assert ((t["kind"] == "zero") == cov).all()  # the words follow the interval


def test_an_arm_that_beats_the_whole_curve_is_worth_more_than_all_real_images():
    rng = np.random.default_rng(7)
    df, scores = simulate(rng, 5, worth_per_image=0.5, p_fail=0.0, arm_boost=3.0)
    ex = exchange(df, scores=scores, draws=DRAWS)
    w = ex.worth[0]
    assert w.kind == "above" and w.hi == math.inf and w.lo == w.w_max
    assert "worth more than all" in w.text() and f"all {w.n_all:.0f} real images" in w.text()
    assert ex.worth[-1].kind == "above"  # at fraction 1 too: nothing past all N real images is claimed


def test_vectorised_inversion_is_the_verdicts_combined_test():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.02, 0.05, (DRAWS + 1, 4, 7)) + rng.normal(0, 0.03, (DRAWS + 1, 1, 7))
    mean, p = inverted_tests(diffs, 15)
    for g in range(7):
        ref = combined_test(diffs[:, :, g], 15)
        assert mean[g] == pytest.approx(ref.mean_diff) and p[g] == pytest.approx(ref.p, rel=1e-9)


def test_worth_reads_the_curve_in_log_n_and_never_past_its_ends():
    n = np.array([[20.0, 40.0, 80.0]] * 3)
    c = np.array([[0.4, 0.6, 0.8], [0.42, 0.61, 0.79], [0.38, 0.59, 0.81]])[None]
    arm = np.array([[0.5, 0.52, 0.48]])  # halfway in log n between 20 and 40: n* = sqrt(800) = 28.3
    r = worth(n, c, arm, 0, 30)
    assert r["estimate"] == pytest.approx(math.sqrt(800) - 20, abs=0.3)
    assert r["w_min"] == 0 and r["w_max"] == 60 and 0 < r["lo"] < r["estimate"] < r["hi"] < 60
    seeds_only = exchange_frame_result()
    assert not seeds_only.covers_test_images and "seeds only" in seeds_only.method


def exchange_frame_result():
    rng = np.random.default_rng(11)
    df, _ = simulate(rng, 3)
    return exchange(df)  # no scores: seeds only, and it says so


def test_subsets_are_patient_grouped_nested_and_leave_held_out_images_alone():
    from sweeps.exchange import kept_rows, minority_order, subset_manifest
    from data_prep.manifest import Manifest

    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "label": (rng.random(n) < 0.3).astype(int),
                       "split": rng.choice(["train", "train", "val", "test"], n),
                       "group": [f"p{k // 3}" if k % 5 else "" for k in range(n)], "is_synthetic": False})
    m = Manifest(df=df, meta={"positive_label": 1, "positive_class": "b"})
    order = minority_order(df, 1, seed=1001, split_seed=0)
    sizes = [len(kept_rows(order, f)) for f in (0.25, 0.5, 1.0)]
    assert sizes[0] < sizes[1] < sizes[2] == ((df.split == "train") & (df.label == 1)).sum()
    assert set(kept_rows(order, 0.25)) <= set(kept_rows(order, 0.5))  # nested
    sub = subset_manifest(m, 1001, 0.5, 0).df
    pos_train = (sub.split == "train") & (sub.label == 1)
    kept_groups = set(sub.loc[pos_train & (sub.group != ""), "group"])
    dropped = df[(df.split == "train") & (df.label == 1) & ~df.image_id.isin(sub.image_id)]
    assert not (set(dropped.loc[dropped.group != "", "group"]) & kept_groups)  # a patient is kept or dropped whole
    assert set(sub[sub.split != "train"].image_id) == set(df[df.split != "train"].image_id)  # val, test: the same
    assert ((sub.split == "train") & (sub.label == 0)).sum() == ((df.split == "train") & (df.label == 0)).sum()
    assert set(subset_manifest(m, 1002, 0.5, 0).df.image_id) != set(sub.image_id)  # another seed, another subset


def test_fraction_config_validation_and_the_gan_key_holds_the_fraction():
    from data_prep.errors import ConfigError
    from sweeps.config import SweepConfig
    from sweeps.gans import gan_key

    assert SweepConfig(exchange_fractions=(0.5, 0.25)).exchange_fractions == (0.25, 0.5, 1.0)
    for bad in ((0.0, 1.0), (1.5,), ()):
        with pytest.raises(ConfigError, match="exchange_fractions"):
            SweepConfig(exchange_fractions=bad)
    with pytest.raises(ConfigError, match="folds"):
        SweepConfig(exchange_rate=True, folds=3)
    gan = {"arm": "gan", "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "seed": 1000}
    full, half = gan_key(gan), gan_key({**gan, "minority_fraction": 0.5})
    assert full == gan_key({**gan, "minority_fraction": 1.0}) == gan_key({**gan, "minority_fraction": float("nan")})
    assert half != full and half != gan_key({**gan, "minority_fraction": 0.25})


def test_exchange_rows_stay_out_of_the_headline_and_every_other_analysis():
    from analysis.exchange import without_exchange
    from analysis.tables import confirm_rows

    df, _ = simulate(np.random.default_rng(5), 3)
    assert (df["sweep_phase"] == "exchange").sum() == 12  # 2 arms x 2 fractions x 3 seeds
    for rows in (confirm_rows(df)[0], without_exchange(df)):  # the headline's rows; the report's and export's
        assert len(rows) == 6 and set(rows["sweep_phase"]) == {"confirm"} and rows["minority_fraction"].isna().all()
