"""K-fold cross-validation in the sweep's confirm phase (--folds K): the plan, the fold manifests, the statistics
(folds averaged per seed: n = seeds) and one end-to-end smoke sweep through the command a user runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (1000, 1001, 1002, 1003, 1004)


# ---------------------------------------------------------------- statistics on fake rows (no torch, no Ray)
def fold_rows(folds: int = 3, seeds=SEEDS, gan_gain: float = 0.05, seed_sd: float = 0.05, fold_sd: float = 0.005,
              rng_seed: int = 0, lr_values=None) -> pd.DataFrame:
    """Confirm-phase classifier rows shaped as the sweep writes them, with K folds per seed. The GAN's gain over
    the arms varies by seed (seed_sd) and that per-seed effect is shared by the seed's folds, which differ only
    by fold_sd: folds of a seed are NOT independent replicates. lr_values: {(arm, lr): {fold: val_f1}} overrides."""
    rng = np.random.default_rng(rng_seed)
    seed_effect = dict(zip(seeds, rng.normal(0, seed_sd, len(seeds))))
    rows = []
    for arm, gain, rank in (("baseline", 0.0, None), ("class_weight", 0.0, None), ("gan", gan_gain, 1)):
        for lr in (1e-3, 3e-3):
            for s in seeds:
                for f in range(folds):
                    run = 0.6 + gain + (seed_effect[s] if arm == "gan" else 0.0) + rng.normal(0, fold_sd)
                    val = (lr_values or {}).get((arm, lr), {}).get(f, run - (0.05 if lr == 3e-3 else 0.0))
                    rows.append({"trial_id": f"t{len(rows)}", "stage": "classifier", "arm": arm, "status": "ok",
                                 "error": "", "sweep_phase": "confirm", "seed": s, "fold": f, "clf_lr": lr,
                                 "config_id": f"{arm}-{lr:g}", "setup_id": arm, "confirm_rank": rank,
                                 "imbalance_fix": arm if arm == "class_weight" else "none",
                                 "synthetic_ratio": 1.0 if arm == "gan" else 0.0, "gan_loss": "hinge" * (arm == "gan"),
                                 **{f"{p}_{m}": (val if p == "val" else run) + (0.01 if p == "val" else 0.0)
                                    for p in ("val", "test") for m in ("f1", "sensitivity")}})
    return pd.DataFrame(rows)


def test_folds_are_averaged_per_seed_so_n_is_the_number_of_seeds():
    """Folds share a per-seed effect: the paired test must be over the 5 seeds' fold means (n = 5), not over the
    15 seed x fold rows, whose pseudo-replicated interval would be too narrow."""
    import analysis
    from analysis.decision import decide
    from analysis.stats import paired_test

    df = fold_rows(folds=3)
    tidy = analysis.tidy(df)
    d = decide(analysis.classifier_rows(tidy), tidy[tidy["stage"] == "classifier"], ["f1", "sensitivity"],
               cover_test_images=False)  # the seeds' part of the uncertainty, which the folds must not inflate
    claims = d.tests[d.tests["claim"] & (d.tests["comparison"] == "gan - baseline")]
    assert d.folds == 3 and claims["tested"].all() and (claims["n_paired"] == len(SEEDS)).all()
    assert d.picks["gan"].seeds_ok == list(SEEDS) and d.picks["gan"].config_id == "gan-0.001"
    # the same numbers by hand: each seed's folds averaged, then the paired test over seeds
    chosen = df[df["config_id"].isin(["gan-0.001", "baseline-0.001"])]
    by_seed = chosen.groupby(["arm", "seed"])["test_f1"].mean()
    want = paired_test(by_seed["gan"].to_dict(), by_seed["baseline"].to_dict())
    got = claims[claims["metric"] == "f1"].iloc[0]
    assert got["mean_diff"] == pytest.approx(want.mean_diff) and got["ci_lo"] == pytest.approx(want.lo)
    assert got["p_value"] == pytest.approx(want.p_t)
    # treating the 15 rows as replicates would claim a far narrower interval than the seeds support
    rows = chosen.assign(unit=chosen["seed"] * 10 + chosen["fold"]).set_index(["arm", "unit"])["test_f1"]
    pseudo = paired_test(rows["gan"].to_dict(), rows["baseline"].to_dict())
    assert pseudo.n == 15 and (pseudo.hi - pseudo.lo) < 0.7 * (got["ci_hi"] - got["ci_lo"])
    h = analysis.headline(tidy, metrics=["f1", "sensitivity"])
    assert "each seed the mean of its 3 CV folds (n = seeds, never seeds x folds)" in " ".join(h.context)


def test_a_seed_missing_a_fold_leaves_the_test_and_the_lr_choice_on_val():
    """A seed counts only with all K folds: otherwise its mean covers other folds than the other arms' (the pairing
    breaks). The LR is chosen on the mean over seeds of fold means: LR 1e-3 of the baseline wins on fold 0 (0.95)
    and loses on fold 1 (0.5); with fold 1 failed for two seeds a mean over rows (or over incomplete seeds) would
    pick it, the complete seeds' fold means (0.725 < 0.75) do not."""
    import analysis

    lr_values = {("baseline", 1e-3): {0: 0.95, 1: 0.5}, ("baseline", 3e-3): {0: 0.75, 1: 0.75}}
    df = fold_rows(folds=2, lr_values=lr_values)
    broken = (df["config_id"] == "baseline-0.001") & (df["fold"] == 1) & df["seed"].isin([1000, 1001])
    df.loc[broken, ["status", "error"]] = ["failed", "simulated"]
    df.loc[broken, [c for c in df.columns if c.startswith(("val_", "test_"))]] = np.nan
    gan_broken = (df["arm"] == "gan") & (df["seed"] == 1004) & (df["fold"] == 1)
    df.loc[gan_broken, ["status", "error"]] = ["failed", "simulated"]
    h = analysis.headline(analysis.tidy(df), metrics=["f1", "sensitivity"])
    assert h.baseline.config_id == "baseline-0.003"
    assert h.gan.seeds_ok == [1000, 1001, 1002, 1003] and h.gan.seeds_failed == [1004]
    assert any("seed 1004 fold 1: failed" in f for f in h.gan.failures)
    claims = h.tests[h.tests["claim"] & (h.tests["comparison"] == "gan - baseline")]
    # seed 1004 lacks a GAN fold: it counts as no help (0), and its complete-case result leaves it out
    assert (claims["n_paired"] == 5).all() and (claims["n_as_no_help"] == 1).all() and (claims["cc_n"] == 4).all()


def test_seed_means_keeps_only_complete_seeds_and_is_a_plain_mean_without_folds():
    from analysis.stats import seed_means

    triples = [(1, 0, 0.2), (1, 1, 0.4), (2, 0, 0.5), (2, 1, float("nan")), (3, 0, 0.1), (3, 1, 0.3), (3, 1, 0.5)]
    assert seed_means(triples, folds=2) == pytest.approx({1: 0.3, 3: 0.25})  # fold 1 of seed 3: its two rows' mean
    assert seed_means([(1, None, 0.2), (1, None, 0.6), (2, None, 0.5)]) == pytest.approx({1: 0.4, 2: 0.5})


# ---------------------------------------------------------------- the plan and the fold data (no training)
def test_confirm_configs_gain_a_fold_that_splits_gans_but_not_configs():
    from data_prep.errors import ConfigError
    from sweeps.config import SweepConfig
    from sweeps.plan import plan
    from sweeps.controls import confirm_configs
    from sweeps.space import config_id, gan_key, setup_id

    cfg = SweepConfig(num_seeds=3, folds=4, clf_lr_grid=(1e-3,), controls=("baseline",), mix_choices=("single",))
    best = [{"arm": "gan", "seed": 0, "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": True,
             "n_critic": 1, "synthetic_mix": "single", "synthetic_ratio": 1.0, "clf_lr": 1e-3,
             "imbalance_fix": "none", "augment": "none"}]
    confirm = pd.DataFrame(confirm_configs(cfg, best))
    assert len(confirm) == plan(cfg).confirm_trials == 2 * 3 * 4
    assert (confirm.groupby(["arm", "seed"])["fold"].apply(sorted).map(tuple) == (0, 1, 2, 3)).all()
    recs = confirm.to_dict("records")
    confirm["cid"], confirm["sid"] = [config_id(r) for r in recs], [setup_id(r) for r in recs]
    confirm["gkey"] = [gan_key(r) for r in recs]
    assert confirm.groupby("arm")["cid"].nunique().to_dict() == {"baseline": 1, "gan": 1}  # folds share a config
    gan = confirm[confirm["arm"] == "gan"]
    assert gan["gkey"].nunique() == 3 * 4 == plan(cfg).confirm_gan_trainings  # a GAN per seed and fold
    assert gan_key({**recs[-1], "fold": None}) == gan_key({k: v for k, v in recs[-1].items() if k != "fold"})
    assert "x 4 fold(s)" in plan(cfg).lines()[-1] and "controls: none" in plan(cfg).lines()[1]
    for bad in (1, -2):
        with pytest.raises(ConfigError, match=f"folds must be 0 .* or >= 2.*got {bad}"):
            SweepConfig(folds=bad)


def test_fold_manifests_partition_train_val_keep_test_and_feed_each_trial(tmp_path):
    import data_prep
    from demo_data import make_demo
    from sweeps.data import trial_data, write_fold_manifests
    from sweeps.trial import fold_data

    make_demo(tmp_path / "data", 80, 30)
    manifest = tmp_path / "data" / "manifest.parquet"
    paths = write_fold_manifests(manifest, tmp_path / "work", 3, seed=0)
    data = trial_data(manifest, tmp_path / "work", paths)
    full = data_prep.read_manifest(manifest).df
    folds = [data_prep.read_manifest(p).df for p in paths]
    pool = set(full.loc[full["split"].isin(["train", "val"]), "sha256"])
    vals = [set(f.loc[f["split"] == "val", "sha256"]) for f in folds]
    assert set().union(*vals) == pool and sum(map(len, vals)) == len(pool)  # each image held out exactly once
    for f, v in zip(folds, vals):
        assert not v & set(f.loc[f["split"] == "train", "sha256"])
        assert set(f.loc[f["split"] == "test", "sha256"]) == set(full.loc[full["split"] == "test", "sha256"])
    assert [d.manifest for d in data.folds] == [str(p.resolve()) for p in paths]
    pos = data_prep.read_manifest(manifest).positive_label
    assert [d.n_val_positive for d in data.folds] == [int(((f["split"] == "val") & (f["label"] == pos)).sum())
                                                      for f in folds]
    assert fold_data({"fold": 2}, data) is data.folds[2] and fold_data({"arm": "baseline"}, data) is data
    with pytest.raises(ValueError, match="fold 3 but the driver wrote 3"):
        fold_data({"fold": 3}, data)


# ---------------------------------------------------------------- end to end, the command a user runs
@pytest.mark.slow
def test_smoke_sweep_with_two_folds(tmp_path):
    """python sweeps/augment_ratio.py --smoke-test --folds 2: rows per fold, a GAN per seed and fold, each trained
    on its fold's train part only (the manifest its run recorded), and a report that counts seeds, not folds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "augment_ratio.py"), "--smoke-test", "--folds", "2",
                           "--clf-lr-grid", "0.001", "--controls", "baseline",
                           "--storage-path", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    work = tmp_path / "smoke_test"
    df = pd.read_parquet(work / "results.parquet")
    clf = df[(df["stage"] == "classifier") & (df["sweep_phase"] == "confirm")]
    assert (clf["status"] == "ok").all(), clf["error"].tolist()
    per = clf.groupby(["arm", "seed"])["fold"].apply(sorted).map(tuple)
    assert set(per.index.get_level_values("arm")) == {"baseline", "gan"} and (per == (0, 1)).all()
    assert df.loc[df["sweep_phase"] == "search", "fold"].isna().all()  # the search stays on the one split
    gans = df[(df["stage"] == "gan") & (df["sweep_phase"] == "confirm")]
    assert len(gans) == gans["gan_key"].nunique() == 3 * 2  # every seed x fold trained its own GAN, once
    assert gans.groupby(["seed", "fold"]).size().eq(1).all()
    for g in gans.itertuples():
        fold_manifest = work / "data" / "folds" / f"fold_{int(g.fold)}" / "manifest.parquet"
        run = json.loads((Path(g.gan_run_dir) / "config.json").read_text())["_run"]
        assert Path(run["manifest"]) == fold_manifest.resolve()  # the GAN read its fold's manifest ...
        fm = pd.read_parquet(fold_manifest)
        train, val = fm[fm["split"] == "train"], fm[fm["split"] == "val"]
        assert not set(train["sha256"]) & set(val["sha256"])  # ... whose train part holds no fold-val image
        trained = run["num_train_images_per_class"]
        assert sum(trained.values()) == len(train[train["label"].isin(run["trained_labels"])])
        assert g.gan_kid_reference == "val"  # 10 held-out minority images per fold: the fold's own val
    for r in clf.itertuples():  # the classifier validated on the same fold's held-out part
        assert json.loads((Path(r.clf_run_dir) / "metrics.json").read_text())["manifest"].endswith(
            f"fold_{int(r.fold)}/manifest.parquet")
    report = (work / "report" / "report.md").read_text()
    assert "each seed the mean of its 2 CV folds (n = seeds, never seeds x folds)" in report
    assert "3 seeds (1000-1002, none used by the search" in report
    assert "x 2 CV folds" in out
