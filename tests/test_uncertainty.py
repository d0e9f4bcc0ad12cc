"""The pieces of the verdict's uncertainty against hand-made numbers and scipy: the stratified bootstrap over test
images, the combined (seeds + test images) test, the detectable difference from the exact noncentral t; and the
verdict's rules on hand-made sweeps: failed GAN seeds count as no help, rank 1 is never replaced, a sensitivity gain
that costs specificity is a trade-off, results without a confirm phase get no claim, scores come from run folders."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import analysis
from analysis import uncertainty as U
from analysis.claims import fmt_interval
from analysis.decision import decide
from analysis.scores import RunScores
from image_sim import simulate

POS = np.r_[np.ones(15, bool), np.zeros(150, bool)]


def test_bootstrap_keeps_the_class_counts_and_row_0_is_the_observed_set():
    b = U.Bootstrap(POS, n_draws=500, seed=3)
    assert b.weights.shape == (501, 165) and (b.weights[0] == 1).all()
    assert (b.weights[1:, :15].sum(axis=1) == 15).all() and (b.weights[1:, 15:].sum(axis=1) == 150).all()
    assert (b.weights[1:, :15].std(axis=0) > 0).all()  # positives are resampled, not fixed


def test_bootstrap_metrics_match_the_confusion_matrix_metrics():
    from trainables.metrics.classification import metrics_from_confusion

    rng = np.random.default_rng(0)
    pred = rng.random((165, 4)) > 0.6
    b = U.Bootstrap(POS, n_draws=3, seed=1)
    for k in range(4):
        w = b.weights[2]
        tp, fp = float(w @ (pred[:, k] & POS)), float(w @ (pred[:, k] & ~POS))
        cm = np.array([[150 - fp, fp], [15 - tp, tp]])
        ref = metrics_from_confusion(cm, positive_label=1)
        for m in ("f1", "sensitivity", "specificity", "precision", "accuracy", "balanced_accuracy"):
            assert b.metric_draws(pred, m)[2, k] == pytest.approx(ref[m]), m


def test_without_test_image_draws_the_combined_test_is_the_paired_t_test():
    a, c = np.array([0.61, 0.70, 0.55, 0.66]), np.array([0.58, 0.62, 0.57, 0.60])
    res = U.combined_test((a - c)[None, :], n_pos=15)
    ref = sps.ttest_rel(a, c)
    assert res.se_test == 0 and res.df == pytest.approx(3)
    assert res.t == pytest.approx(ref.statistic) and res.p == pytest.approx(ref.pvalue)


def test_the_test_image_term_is_the_shared_part_only():
    """Draws = per-seed independent noise (the seed x image interaction, already in the seed term) + a part shared
    by every seed (the arm's systematic errors on these images): the term recovers the shared variance only."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.03, (20000, 1))
    own = rng.normal(0, 0.05, (20000, 8))
    assert U.test_term(own) == pytest.approx(0.0, abs=2e-5)
    assert U.test_term(shared + own) == pytest.approx(0.03 ** 2, rel=0.05)


@pytest.mark.parametrize("se, df", [(0.05, 4), (0.03, 9), (0.1, 3)])
def test_the_detectable_difference_is_the_noncentral_t_solution(se, df):
    alpha = 0.05 / 4

    def power(d):
        c = sps.t.ppf(1 - alpha / 2, df)
        return sps.nct.sf(c, df, d / se) + sps.nct.cdf(-c, df, d / se)

    mde = U.min_detectable(se, df, alpha)
    assert power(mde) == pytest.approx(0.8, abs=1e-6)  # scipy's noncentral t says: exactly 80% power there
    assert power(0.97 * mde) < 0.79
    # the normal shortcut (t quantiles + z) claims more power than there is at that difference
    shortcut = (sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(0.8, df)) * se
    assert power(shortcut) < 0.8
    assert U.spread_upper(se, df) > se


def test_power_falls_back_to_integration_where_scipy_nct_gives_nan():
    for df, nc in ((4.0, 3.0), (7.5, 2.0)):
        direct = U.power(nc * 0.05, 0.05, df, 0.0125)
        assert 0 < direct < 1
        crit = sps.t.ppf(1 - 0.0125 / 2, df)
        assert direct == pytest.approx(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc), rel=1e-6)


def test_zero_width_intervals_print_na():
    assert fmt_interval(0.067, 0.067) == "n/a" and fmt_interval(math.nan, 0.1) == "n/a"
    assert fmt_interval(-0.05, 0.12) == "-0.050 to +0.120"


# ---------------------------------------------------------------- the rules, on hand-made sweeps
def _decide(df, scores, **kw):
    return decide(df[df["status"] == "ok"], df, metrics=("f1", "sensitivity", "specificity"),
                  scores=lambda recs: scores, draws=300, **kw)


def test_a_failed_gan_seed_enters_as_difference_zero():
    df, scores, _ = simulate(np.random.default_rng(4), n_seeds=6, fail_base=0.35)
    d = _decide(df, scores)
    lost = sorted(d.picks["stacked"].lost)
    assert lost, "the simulation should have failed some GAN seeds"
    row = d.tests[(d.tests["comparison"] == "stacked - control") & (d.tests["metric"] == "f1")].iloc[0]
    assert row["n_as_no_help"] == len(lost) and row["n_paired"] == 6
    ok = df[df["status"] == "ok"]
    stacked = ok[ok["config_id"] == d.picks["stacked"].config_id].set_index("seed")["test_f1"]
    control = ok[ok["config_id"] == d.picks["control"].config_id].set_index("seed")["test_f1"]
    per_seed = [stacked[s] - control[s] if s in stacked.index else 0.0 for s in control.index]
    assert row["mean_diff"] == pytest.approx(np.mean(per_seed))
    assert row["cc_n"] == 6 - len(lost)
    assert row["cc_mean_diff"] == pytest.approx(np.mean([stacked[s] - control[s] for s in stacked.index]))
    assert "counted as no help" in _headline(df, scores).messages[1]


def _headline(df, scores, **kw):
    tidy = analysis.tidy(df.assign(sweep_name="sim"))
    return analysis.headline(tidy, scores=lambda recs: scores, **kw)


def test_rank_1_failing_on_every_seed_cannot_be_assessed_and_rank_2_is_not_used():
    df, scores, _ = simulate(np.random.default_rng(2), n_seeds=5)
    gan = (df["sweep_phase"] == "confirm") & df["arm"].isin(["gan", "control+gan"])
    df.loc[gan, ["status", "error"]] = ["failed", "GAN collapsed"]
    rank2 = df[gan].assign(confirm_rank=2.0, status="ok", error="", config_id=lambda d: d["config_id"] + "-r2",
                           setup_id=lambda d: d["setup_id"] + "-r2", val_f1=0.9, test_f1=0.9,
                           trial_id=lambda d: d["trial_id"] + "r2")
    df = pd.concat([df, rank2], ignore_index=True)
    h = _headline(df, scores)
    assert h.gan is not None and h.gan.seeds_ok == [] and h.gan.config_id == ""
    assert h.messages[0].startswith("**Answer: cannot be assessed.**") and "rank 1" in h.messages[0]
    assert not h.tests.loc[h.tests["claim"], "verdict"].eq("helps").any()


def test_a_sensitivity_gain_that_costs_specificity_010_is_a_trade_off_not_helps():
    """C + GAN calls far more images positive: sensitivity up on every seed, specificity down 0.10."""
    rng = np.random.default_rng(0)
    rows, scores = [], {}
    for arm, cid, rank in (("baseline", "b", np.nan), ("control", "c", np.nan), ("control+gan", "cg", 1.0),
                           ("gan", "g", 1.0)):
        for s in range(1000, 1008):
            tid = f"{cid}{s}"
            score = np.where(POS, rng.uniform(0.3, 0.9, POS.size), rng.uniform(0.0, 0.5, POS.size))
            if arm in ("control+gan", "gan"):  # more positives: every minority image, and 15 more majority ones
                score = np.where(POS, 0.95, score)
                score[15 + rng.choice(150, 15, replace=False)] = 0.8
            pred = score >= 0.5
            tp, fp = int((pred & POS).sum()), int((pred & ~POS).sum())
            rows.append({"trial_id": tid, "stage": "classifier", "arm": arm, "config_id": cid, "setup_id": cid,
                         "seed": s, "status": "ok", "error": "", "sweep_phase": "confirm", "confirm_rank": rank,
                         "clf_threshold": 0.5, "n_test_positive": 15, "val_f1": 0.7, "val_sensitivity": 0.7,
                         "test_sensitivity": tp / 15, "test_specificity": (150 - fp) / 150,
                         "test_f1": 2 * tp / (2 * tp + fp + 15 - tp)})
            scores[tid] = (POS, score)
    df = pd.DataFrame(rows)
    t = _decide(df, scores).tests.set_index(["comparison", "metric"])
    sens, spec = t.loc[("stacked - control", "sensitivity")], t.loc[("stacked - control", "specificity")]
    assert sens["mean_diff"] > 0.2 and sens["p_holm"] < 0.05
    assert spec["mean_diff"] < -0.05 and spec["lower_bound"] < -0.05
    assert sens["verdict"] == "trade-off"
    h = _headline(df, scores)
    assert "helps" not in h.messages[0] and "trade-off" in " ".join(h.messages)


def test_results_without_a_confirm_phase_get_no_claim():
    df, scores, _ = simulate(np.random.default_rng(1), n_seeds=5)
    legacy = df.assign(sweep_phase="")
    h = _headline(legacy, scores)
    assert not h.tests["tested"].any() and h.messages[0].startswith("**Answer: cannot be assessed.**")
    assert not any("none used by the search" in c for c in h.context)


def test_scores_are_read_from_run_folders_and_missing_ones_are_named(tmp_path):
    run = tmp_path / "classifiers" / "t1"
    run.mkdir(parents=True)
    (run / "test_scores.csv").write_text("row,label,score\n1,0,0.2\n0,1,0.9\n2,1,0.4\n")
    (run / "metrics.json").write_text(json.dumps({"positive_label": 1, "test": {}}))
    src = RunScores(tmp_path)
    got = src([{"trial_id": "t1", "clf_run_dir": "classifiers/t1"}, {"trial_id": "t2", "clf_run_dir": "nope"}])
    pos, score = got["t1"]
    assert pos.tolist() == [True, False, True] and score.tolist() == [0.9, 0.2, 0.4]  # in test-row order
    assert list(got) == ["t1"] and src.missing and src.missing[0].startswith("t2: run folder not found")


def test_a_null_sweep_reads_no_evidence_and_says_what_the_intervals_cover():
    df, scores, _ = simulate(np.random.default_rng(8), n_seeds=5)
    h = _headline(df, scores)
    assert h.covers_test_images and h.n_test_positive == 15 and h.n_test == 165
    assert h.messages[0].startswith("**Answer: no evidence of a difference.**"), h.messages[0]
    assert "not evidence that it does not help" in h.messages[0]
    cover = " ".join(h.context)
    assert "AND the sampling of the test images" in cover and "15 minority and 150 other test images" in cover
    assert "Smallest true difference this sweep would detect with 80% power" in cover
    mde = h.tests.loc[h.tests["claim"], "mde"]
    assert mde.notna().all() and (h.tests.loc[h.tests["claim"], "mde_upper"] > mde).all()
