"""The verdict's statistics against scipy and hand-made numbers, and its error rates on sweeps simulated image by
image with a known truth (tests/image_sim.py): one fixed test set, configs with their own systematic errors, GANs
that fail more when worse. The old seed-only rule over-claims at 20 seeds; the new one claims "the GAN helps" when
it does not in at most 6.4% of sweeps at 3, 5 and 20 seeds (5% plus Monte Carlo error), its primary interval
covers the population difference (failures included) in >= 93%, and its power at a population +0.10 F1 with 5
seeds is the figure docs/rules.md states."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import stats
from analysis.decision import decide
from image_sim import population_effect, simulate


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
DRAWS = 400  # bootstrap resamples per simulated sweep (the report uses 2000; the rates barely move)
POWER_AT_010 = 0.14  # docs/rules.md ("Rules the code enforces"): power at a population +0.10 F1 with 5 seeds (2,000 sweeps: 13.9%)


def _claims(df, scores, seed: int, **kw) -> pd.DataFrame:
    d = decide(df[df["status"] == "ok"], df, metrics=("f1", "sensitivity", "specificity"),
               scores=lambda recs: scores, draws=DRAWS, seed=seed, **kw)
    return d.tests[d.tests["claim"]]


def _rates(n: int, n_seeds: int, seed: int, gan_effect: float = 0.0, **kw) -> dict:
    """Share of simulated sweeps whose headline claims "helps" (any claim) and whose primary interval (F1, best
    control + GAN vs best control) holds the population difference, failures included."""
    rng = np.random.default_rng(seed)
    old = {k: kw.pop(k) for k in ("cover_test_images", "count_failures") if k in kw}
    helps = cover = 0
    for i in range(n):
        df, scores, truth = simulate(rng, n_seeds, gan_effect, **kw)
        t = _claims(df, scores, i, **old)
        helps += bool((t["verdict"] == "helps").any())
        prim = t[(t["comparison"] == "stacked - control") & (t["metric"] == "f1")].iloc[0]
        true = (1 - truth["p_fail"]) * population_effect(round(truth["effect"], 6))
        cover += bool(prim["ci_lo"] <= true <= prim["ci_hi"])
    return {"helps": helps / n, "cover": cover / n}


def _shift_for(f1_gain: float) -> float:
    """The minority-logit shift whose population F1 gain is f1_gain (the simulator's effect unit)."""
    from scipy.optimize import brentq

    return round(brentq(lambda x: population_effect(round(x, 6)) - f1_gain, 0.0, 3.0, xtol=1e-6), 6)


def test_simulated_sweep_has_the_shape_the_sweep_writes():
    df, scores, truth = simulate(np.random.default_rng(1), n_seeds=5, fail_base=0.3)
    confirm = df[df["sweep_phase"] == "confirm"]
    assert set(confirm["arm"]) == {"baseline", "control", "control+gan", "gan"}
    assert set(df.loc[df["sweep_phase"] != "confirm", "seed"]).isdisjoint(set(confirm["seed"]))
    assert confirm.groupby("arm")["seed"].apply(lambda s: tuple(sorted(set(s)))).nunique() == 1
    # a failed GAN seed fails both GAN arms at every LR (one GAN per seed), never a control
    bad = confirm[confirm["status"] != "ok"]
    assert set(bad["arm"]) <= {"gan", "control+gan"}
    for s, g in bad.groupby("seed"):
        assert len(g) == 2 * 3
    assert set(scores) == set(df.loc[df["status"] == "ok", "trial_id"])
    t = _claims(df, scores, 0)
    assert len(t) == 4 and set(t["comparison"]) == {"stacked - control", "gan - baseline"}


def test_the_simulator_has_the_demo_spread_and_a_test_image_term():
    """Per-seed test F1 spread ~0.13 on a fixed test set; an arm's test-set term ~0.03 (the issue's figures)."""
    rng = np.random.default_rng(5)
    within, diffs = [], []
    for _ in range(60):
        df, _, _ = simulate(rng, 40)
        f = df[(df["sweep_phase"] == "confirm") & (df["status"] == "ok")]
        a = f[f["config_id"] == "base-lr0"]["test_f1"].to_numpy()
        b = f[f["config_id"] == "base-lr1"]["test_f1"].to_numpy()
        within.append(a.std(ddof=1))
        diffs.append(a.mean() - b.mean())
    sd_seed = float(np.mean(within))
    term = math.sqrt(max(np.var(diffs) - 2 * sd_seed ** 2 / 40, 0.0)) / math.sqrt(2)
    assert 0.11 <= sd_seed <= 0.15, sd_seed
    assert 0.015 <= term <= 0.05, term


def test_the_old_seed_only_rule_over_claims_with_many_seeds():
    """Today's rule before this change (t over seeds only, failed GAN seeds dropped) claims "helps" for a GAN with no
    effect in more than 5% of sweeps at 20 seeds: seeds shrink its interval, the fixed test set's term stays."""
    old = _rates(300, 20, seed=20, cover_test_images=False, count_failures=False)
    assert old["helps"] > 0.05, old


@pytest.mark.parametrize("n_seeds", [3, 5, 20])
def test_no_effect_rarely_claimed_and_the_interval_covers_the_truth(n_seeds):
    rate = _rates(1000, n_seeds, seed=n_seeds, fail_base=0.15)
    assert rate["helps"] <= 0.064, rate
    assert rate["cover"] >= 0.93, rate


def test_the_interval_covers_the_truth_when_gans_differ_and_worse_ones_fail_more():
    rate = _rates(400, 5, seed=77, gan_effect=_shift_for(0.10), gan_spread=0.15, fail_base=0.15, fail_slope=0.4)
    assert rate["cover"] >= 0.93, rate


def test_power_at_a_population_gain_of_010_with_5_seeds_is_the_documented_figure():
    rate = _rates(600, 5, seed=10, gan_effect=_shift_for(0.10), fail_base=0.0)
    se = math.sqrt(POWER_AT_010 * (1 - POWER_AT_010) / 600)
    assert abs(rate["helps"] - POWER_AT_010) <= 3 * se, rate
    rules = (Path(__file__).resolve().parents[1] / "docs" / "rules.md").read_text()  # the rules in full
    assert f"detected with 5 seeds in only **{POWER_AT_010:.0%}** of sweeps" in rules


def test_a_gan_gated_on_confirm_seeds_is_named_in_the_answer_with_its_quality():
    """A GAN that failed the quality gate on some confirm seeds (status gated, no classifier trained) is named in
    the answer line with how many seeds, counted as no help, and the context says how good its GANs were."""
    from analysis.load import tidy
    from analysis.verdict import headline

    rng = np.random.default_rng(7)
    for _ in range(20):  # a sweep whose GAN failed on some but not all seeds
        df, scores, _ = simulate(rng, 5, fail_base=0.4)
        bad = df[(df["arm"] == "gan") & (df["sweep_phase"] == "confirm") & (df["status"] != "ok")]
        if 0 < bad["seed"].nunique() < 5:
            break
    gated = sorted(int(s) for s in bad["seed"].unique())
    df.loc[df["status"] != "ok", ["status", "error"]] = ["gated", "GAN gated (quality): recall 0.000 is 0.00x"]
    conf = df[(df["sweep_phase"] == "confirm") & (df["arm"] == "gan")]
    df["gan_key"] = ""
    df.loc[conf.index, "gan_key"] = [f"k{int(s)}" for s in conf["seed"]]
    seeds = sorted(int(s) for s in conf["seed"].unique())
    share = {s: (0.1 if s in gated else 1.0 - 0.01 * i) for i, s in enumerate(seeds)}
    gan_rows = pd.DataFrame({"stage": "gan", "arm": "gan", "trial_id": [f"g{s}" for s in seeds], "seed": seeds,
                             "gan_key": [f"k{s}" for s in seeds], "status": ["gated" if s in gated else "ok" for s in
                                                                             seeds],
                             "gan_recall_vs_real": [share[s] for s in seeds],
                             "gan_diversity_vs_real": [share[s] + 0.05 for s in seeds]})
    search = df[(df["sweep_phase"] == "search") & (df["arm"] == "gan")].head(1).copy()
    search["setup_id"] = conf["setup_id"].iloc[0]  # the search's run of the headline setup: not a confirm seed
    search["gan_key"] = "ksearch"
    gan_rows = pd.concat([gan_rows, gan_rows.iloc[:1].assign(trial_id="gs", seed=0, gan_key="ksearch",
                                                             gan_recall_vs_real=0.01)], ignore_index=True)
    df = pd.concat([df.drop(search.index), search])
    h = headline(tidy(pd.concat([df, gan_rows], ignore_index=True)), scores=lambda recs: scores)
    first = h.messages[0]
    assert f"failed the quality gate on {len(gated)} of 5 confirm seeds" in first
    assert ", ".join(map(str, gated)) in first and "count as no help" in first
    quality = next(line for line in h.context if line.startswith("How good the GAN under test was"))
    ok_shares = sorted(share[s] for s in seeds if s not in gated)
    assert "(5 confirm GAN(s)" in quality and "worst 0.10x" in quality and "pixel" not in quality
    assert f"recall {float(np.median([share[s] for s in seeds])):.2f}x" in quality and ok_shares
    # with no gated seed the answer line says nothing about the gate
    clean = df[df["status"] == "ok"]
    assert "quality gate" not in headline(tidy(clean), scores=lambda recs: scores).messages[0]
