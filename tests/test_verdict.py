"""The verdict's statistics against scipy and hand-made numbers, and its error rates on sweeps simulated with
a known truth (tests/verdict_sim.py): the headline may claim "the GAN helps" when it does not in at most 6% of
sweeps (a valid procedure: 5% or less), and must see a real +0.10 gain with 5 seeds in most."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats
from verdict_sim import claim_rate, claims, simulate


# ---------------------------------------------------------------- the statistics against scipy
@pytest.mark.parametrize("d", [(0.001, 0.05, 0.06), (0.1, -0.02, 0.03, 0.07, 0.0), (-0.3, -0.1, -0.2, 0.05)])
def test_paired_t_matches_scipy(d):
    a = {s: 0.5 + x for s, x in enumerate(d)}
    b = {s: 0.5 for s in range(len(d))}
    res = stats.paired_test(a, b)
    ref = sps.ttest_rel(list(a.values()), list(b.values()))
    assert res.tested and res.n == len(d) and res.df == len(d) - 1
    assert res.t == pytest.approx(ref.statistic) and res.p_t == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (res.lo, res.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_the_issue_example_t_203_df2_p018():
    res = stats.paired_test({0: 0.001, 1: 0.05, 2: 0.06}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert round(res.t, 2) == 2.03 and res.df == 2 and round(res.p_t, 2) == 0.18
    # 3 positive differences: the exact sign-flip test cannot go below 2/2^3
    assert res.p_sign_flip == pytest.approx(0.25) and res.p_floor == pytest.approx(0.25)


@pytest.mark.parametrize("d", [(0.02, 0.05, -0.01, 0.04), (0.1, 0.2, 0.15, 0.12, 0.11), (0.3, -0.1, 0.05)])
def test_sign_flip_matches_scipy_permutation_test(d):
    d = np.asarray(d)
    ref = sps.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                               n_resamples=np.inf)
    assert stats.sign_flip_p(d) == pytest.approx(ref.pvalue)
    assert stats.sign_flip_floor(5) == pytest.approx(0.0625)


def test_holm_matches_hand_computation_and_keeps_nan():
    adj = stats.holm([0.01, 0.04, 0.03, math.nan, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 over m = 4: 0.02, 0.03, 0.06, 0.06 (monotone)
    assert adj[4] == pytest.approx(0.02) and adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06) and math.isnan(adj[3])


def test_below_three_paired_seeds_no_test_and_unpaired_seeds_left_out():
    two = stats.paired_test({0: 0.7, 1: 0.8}, {0: 0.6, 1: 0.7})
    assert not two.tested and math.isnan(two.p_t) and math.isnan(two.lo)
    assert two.mean_diff == pytest.approx(0.1) and "at least 3" in two.note
    part = stats.paired_test({0: 0.7, 1: 0.8, 2: 0.75, 9: 0.1}, {0: 0.6, 1: 0.7, 2: 0.7, 5: 0.9})
    assert part.n == 3 and part.n_only_a == 1 and part.n_only_b == 1 and "2 unpaired" in part.note
    same = stats.paired_test({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert same.p_t == 1.0 and same.lo == same.hi == 0.0


def test_identical_nonzero_differences_are_no_proof():
    """Sensitivity on 4 test images moves in steps of 0.25: three seeds can all differ by exactly +0.25. t is
    then infinite; the claim must fall back to the exact sign-flip test (0.25 at 3 seeds: no claim)."""
    res = stats.paired_test({0: 0.5, 1: 0.75, 2: 0.5}, {0: 0.25, 1: 0.5, 2: 0.25})
    assert res.tested and res.p_t == pytest.approx(0.25) and "sign-flip" in res.note
    many = stats.paired_test({s: 0.5 for s in range(8)}, {s: 0.25 for s in range(8)})
    assert many.p_t == pytest.approx(2 / 2 ** 8)  # with enough seeds it can still be claimed


def test_intervals_of_proportions_are_clipped():
    ci = stats.mean_ci([0.99, 1.0, 0.7], bounds=(0.0, 1.0))
    assert ci.hi == 1.0 and ci.lo > 0.0
    assert stats.mean_ci([0.99, 1.0, 0.7]).hi > 1.0  # unclipped, it would leave the range


def test_min_detectable_difference_is_the_power_formula():
    sd, n = 0.05, 5
    want = (sps.t.ppf(1 - 0.0125 / 2, 4) + sps.t.ppf(0.8, 4)) * sd / math.sqrt(n)
    assert stats.min_detectable_difference(sd, n, alpha=0.0125) == pytest.approx(want)


# ---------------------------------------------------------------- the verdict on simulated sweeps
def test_simulated_sweep_has_the_shape_the_sweep_writes():
    df = simulate(np.random.default_rng(1), n_seeds=5)
    confirm = df[df["sweep_phase"] == "confirm"]
    search_seeds = set(df.loc[df["sweep_phase"] == "search", "seed"])
    assert search_seeds.isdisjoint(set(confirm["seed"]))
    assert confirm.groupby("arm")["seed"].apply(lambda s: sorted(set(s))).map(tuple).nunique() == 1
    t = claims(df)
    assert len(t) == 4 and set(t["comparison"]) == {"GAN - baseline", "GAN - control"}


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_no_effect_rarely_claimed(n_seeds):
    rate = claim_rate(2000, n_seeds, gan_effect=0.0, seed=n_seeds)
    assert rate["helps"] <= 0.06, rate
    assert rate["worse"] <= 0.06, rate


def test_a_real_gain_of_010_is_seen_with_5_seeds():
    rate = claim_rate(400, 5, gan_effect=0.10, seed=7)
    assert rate["helps"] >= 0.5 and rate["worse"] == 0.0, rate


def test_the_smallest_detectable_difference_the_report_prints_is_detected():
    """The report states the smallest true difference the sweep would detect with 80% power (alpha 0.05/4);
    a GAN with exactly that gain must have its F1-vs-baseline claim made at least that often (Holm's later
    steps are laxer than 0.05/4, so more often is fine)."""
    from analysis.stats import min_detectable_difference
    from verdict_sim import Spread

    sp = Spread()
    sd_diff = math.sqrt(2 * (sp.run ** 2 + sp.test_only ** 2))  # seed effects cancel in the paired difference
    mde = min_detectable_difference(sd_diff, 5, alpha=0.05 / 4)
    rng, hits, n = np.random.default_rng(11), 0, 300
    for _ in range(n):
        t = claims(simulate(rng, 5, mde))
        hits += bool(((t["comparison"] == "GAN - baseline") & (t["metric"] == "f1") & (t["verdict"] == "helps")).any())
    assert hits / n >= 0.75, hits / n


def test_controls_that_help_do_not_make_the_gan_look_good():
    """The classical fix gives the gain, the GAN none: vs the best control the GAN must rarely 'help'."""
    eff = {"baseline": 0.0, "class_weight": 0.08, "oversample": 0.0, "augment": 0.0}
    rng = np.random.default_rng(3)
    wins = 0
    for _ in range(300):
        t = claims(simulate(rng, 5, 0.0, control_effects=eff))
        wins += bool(((t["comparison"] == "GAN - control") & (t["verdict"] == "helps")).any())
    assert wins / 300 <= 0.02
