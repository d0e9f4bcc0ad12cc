"""The GAN under test must work (issue 22, sweep side): the quality gate, the guard against a lucky GAN seed, the
GAN key as a digest of the whole GanConfig, and results written before all this still loading."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from sweeps.config import SweepConfig
from sweeps.quality import quality_gate, with_shares

REAL = {"gan_recall_real_ref": 0.8, "gan_diversity_ratio_real_ref": 0.7, "gan_pixel_diversity_ratio_real_ref": 0.9}


def q(**kw):
    return with_shares({"gan_kid": 0.1, "gan_fid": 5.0, "gan_recall_matched": 0.6, "gan_diversity_ratio": 0.7,
                        "gan_pixel_diversity_ratio": 0.9, **REAL, **kw})


def test_gate_reads_shares_of_the_real_vs_real_values_and_user_limits():
    sweep = SweepConfig(gate_min_recall_share=0.5, gate_min_diversity_share=0.6)
    assert quality_gate(q(), sweep) == ("pass", "")
    gate, why = quality_gate(q(gan_recall_matched=0.0, gan_diversity_ratio=0.14), sweep)
    assert gate == "gated" and "recall 0.000 is 0.00x the real-vs-real 0.800 (< 0.5x)" in why
    assert "diversity 0.140 is 0.20x the real-vs-real 0.700 (< 0.6x)" in why
    # a generator repeating a few pictures that a class-trained feature space still calls diverse: pixels see it
    gate, why = quality_gate(q(gan_pixel_diversity_ratio=0.4), sweep)
    assert gate == "gated" and why == ("GAN gated (quality): pixel diversity 0.400 is 0.44x the real-vs-real 0.900 "
                                       "(< 0.6x)")
    assert quality_gate(q(gan_recall_matched=0.41), sweep)[0] == "pass"  # 0.51x
    assert quality_gate(q(gan_recall_matched=0.39), sweep)[0] == "gated"  # 0.49x
    # no absolute default; --max-kid / --max-fid are the user's
    assert quality_gate(q(gan_kid=9.0), sweep)[0] == "pass"
    gate, why = quality_gate(q(gan_kid=9.0), dataclasses.replace(sweep, max_kid=1.0))
    assert gate == "gated" and "KID 9 > max 1" in why
    assert quality_gate(q(gan_fid=50.0), dataclasses.replace(sweep, max_fid=40.0))[0] == "gated"
    # what it cannot judge it says: no real-vs-real value (reference = the training set), no quality, all off
    gate, why = quality_gate(q(gan_recall_real_ref=None, gan_diversity_ratio_real_ref=None,
                               gan_pixel_diversity_ratio_real_ref=None), sweep)
    assert gate == "off" and "no real-vs-real value" in why
    assert quality_gate({"gan_kid": None}, sweep) == ("off", "no quality was measured (gan_eval_every 0)")
    off = dataclasses.replace(sweep, gate_min_recall_share=0.0, gate_min_diversity_share=0.0)
    assert quality_gate(q(gan_recall_matched=0.0), off) == ("off", "every gate threshold is off")
    assert math.isclose(q()["gan_recall_vs_real"], 0.75) and math.isclose(q()["gan_diversity_vs_real"], 1.0)


# ---- a collapsed generator, through the trial ----------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_trial_data(tmp_path_factory):
    from demo_data import make_demo
    from sweeps.data import trial_data

    work = tmp_path_factory.mktemp("gate")
    manifest = make_demo(work / "data", 120, 80)  # >= 10 minority val images: the reference is val
    return trial_data(manifest, work)


def _sweep(**kw) -> SweepConfig:
    return SweepConfig(gan_epochs=3, gan_width=8, gan_batch_size=8, gan_eval_every=1, gan_eval_samples=64,
                       quality_domain_epochs=1, clf_epochs=1, synthetic_ratios=(1.0,), image_size=32, **kw)


GAN = {"arm": "gan", "seed": 0, "gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "gan_arch": "dcgan",
       "gan_augment": "diffaugment", "n_critic": 1, "conditional": False, "feature_matching": 0.0, "perceptual": 0.0,
       "synthetic_mix": "single", "synthetic_ratio": 1.0, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}


def test_a_generator_that_ignores_z_is_gated_with_its_reason_and_feeds_no_classifier(demo_trial_data, tmp_path,
                                                                                      monkeypatch):
    from dataclasses import replace

    from sweeps.results import ResultsTable
    from sweeps.trial import run_trial
    from trainables.gan import networks

    class BlindGenerator(networks.Generator):  # the collapse of the demo's headline GAN, made certain
        def forward(self, z, y=None):
            return super().forward(torch.zeros_like(z), y)

    data = replace(demo_trial_data, work_dir=str(tmp_path))
    sweep = _sweep(gate_min_recall_share=0.2, gate_min_diversity_share=0.3)
    torch.set_num_threads(1)
    monkeypatch.setattr(networks, "Generator", BlindGenerator)
    row = run_trial(GAN, sweep, data, "blind", report=lambda m: None)
    assert row["status"] == "gated" and row["gan_gate"] == "gated"
    assert row["error"].startswith("GAN gated (quality): recall 0.000 is 0.00x the real-vs-real")
    assert "diversity" in row["error"] and row["gan_diversity_ratio"] < 0.05 and row["gan_recall_matched"] == 0
    assert "val_f1" not in row and "clf_run_dir" not in row  # no classifier trained on its images
    assert row["gan_checkpoint_epoch"] in (1, 2, 3) and row["gan_recall_real_ref"] > 0.5
    table = ResultsTable(tmp_path / "results.parquet", "t")
    table.add(row, "classifier")
    gan_rows = table.frame().query("stage == 'gan'")
    assert list(gan_rows["status"]) == ["gated"] and gan_rows["error"].iloc[0] == row["error"]
    # the guard's check of another GAN seed (what a Ray task runs): a "gan" row of its own, gated too
    from sweeps.selection import guard_config, guard_gan

    guard = guard_gan(guard_config(GAN, 1), sweep, data)
    assert guard["status"] == "gated" and guard["sweep_phase"] == "guard" and guard["seed"] == 1
    assert guard["trial_id"] == f"guard_{guard['gan_key']}" and guard["gan_key"] != row["gan_key"]
    # the same (cached) GAN with the gate off: it is the gate, judged from the recorded quality, that stops it
    again = run_trial({**GAN, "clf_lr": 3e-3}, dataclasses.replace(sweep, gate_min_recall_share=0.0,
                                                                   gate_min_diversity_share=0.0),
                      data, "ungated", report=lambda m: None)
    assert again["gan_key"] == row["gan_key"] and not again["gan_trained_here"]
    assert again["status"] == "ok" and again["gan_gate"] == "off" and not math.isnan(again["val_f1"])


# ---- the guard: a config whose GAN collapses on another seed is passed over -------------------------------------
def test_a_pick_gated_on_a_guard_seed_is_passed_over_for_the_next(tmp_path, monkeypatch, capsys):
    from sweeps import selection
    from sweeps.results import ResultsTable
    from sweeps.space import TRIAL_KEYS, config_id

    table = ResultsTable(tmp_path / "results.parquet", "t", phase="search")
    for i, (f1, lr) in enumerate(((0.9, 4e-4), (0.8, 2e-4), (0.7, 1e-4))):
        cfg = {**GAN, "gan_lr_g": lr}
        table.add({**cfg, "trial_id": f"s{i}", "config_id": config_id(cfg), "status": "ok", "val_f1": f1,
                   "val_sensitivity": f1}, "classifier")
    table.add({**GAN, "gan_lr_g": 8e-4, "trial_id": "g", "config_id": "gatedcfg", "status": "gated",
               "error": "GAN gated (quality): recall", "val_f1": None, "val_sensitivity": None}, "classifier")
    calls = []

    def fake_guards(cfg, data, configs):
        calls.append(configs)
        return [{**c, "trial_id": f"guard_{c['gan_lr_g']}", "config_id": config_id(c), "sweep_phase": "guard",
                 "status": "gated" if c["gan_lr_g"] == 4e-4 else "ok",
                 "error": "GAN gated (quality): recall 0.000 is 0.00x" if c["gan_lr_g"] == 4e-4 else ""}
                for c in configs]

    monkeypatch.setattr(selection, "_run_guards", fake_guards)
    sweep = SweepConfig(top_k=1, guard_seeds=1)
    picks = selection.confirmed_picks(sweep, None, table, max_conc=2)
    assert [p["gan_lr_g"] for p in picks] == [2e-4]  # rank 1 collapsed on GAN seed 1: rank 2 is confirmed
    assert [c["seed"] for c in calls[0]] == [1, 1] and {k for k in TRIAL_KEYS} <= set(calls[0][0])
    guard = table.frame().query("sweep_phase == 'guard'")
    assert set(guard["stage"]) == {"gan"} and sorted(guard["status"]) == ["gated", "ok"]
    assert "passed over config" in capsys.readouterr().out
    # the gated search trial never ranks at all; with the guard off the ranking stands and says so
    assert "gatedcfg" not in [p["config_id"] for p in selection.pick_best(table.frame(), None)]
    assert [p["gan_lr_g"] for p in selection.confirmed_picks(dataclasses.replace(sweep, guard_seeds=0), None, table,
                                                             2)] == [4e-4]


# ---- the GAN key ------------------------------------------------------------------------------------------
def test_gan_key_digests_every_gan_config_field_budgets_fold_and_mix_members():
    from data_prep.config import config_to_dict
    from sweeps.gans import NOT_IN_KEY, gan_config, gan_digest, gan_key
    from trainables.gan.config import GanConfig

    base = SweepConfig()
    key = gan_key(GAN, base)
    for change in (dict(gan_epochs=151), dict(gan_batch_size=24), dict(gan_width=16), dict(gan_eval_every=25),
                   dict(gan_eval_samples=400), dict(quality_domain_epochs=4), dict(image_size=64),
                   dict(synthetic_ratios=(0.5, 2.0))):
        assert gan_key(GAN, dataclasses.replace(base, **change)) != key, change
    for change in (dict(clf_epochs=3), dict(num_seeds=3), dict(cpus_per_trial=2.0), dict(augment_policy="xray")):
        assert gan_key(GAN, dataclasses.replace(base, **change)) == key, change  # not the GAN's (no ADA here)
    ada = {**GAN, "gan_augment": "ada"}
    assert gan_key(ada, dataclasses.replace(base, augment_policy="xray")) != gan_key(ada, base)
    assert gan_key({**GAN, "fold": 1}, base) != key != gan_key({**GAN, "seed": 1}, base)
    # every GanConfig field is in the digest unless listed out, so a field added later joins without anyone noticing
    values = config_to_dict(gan_config(GAN, base, "cpu"))
    assert set(values) == {f.name for f in dataclasses.fields(GanConfig)}
    for name in values:
        changed = gan_digest({**values, name: "something else"}, base) != gan_digest(values, base)
        assert changed == (name not in NOT_IN_KEY), name
    mix = {**GAN, "gan_loss": "mix", "synthetic_mix": "mix_losses"}
    assert gan_key(mix, base) != gan_key(mix, dataclasses.replace(base, gan_epochs=10)) and gan_key(mix, base) != key


# ---- old results ------------------------------------------------------------------------------------------
def test_results_from_before_the_gate_and_the_new_gan_options_still_load(tmp_path):
    import analysis

    old = pd.DataFrame([
        {"sweep_name": "s", "trial_id": "a", "stage": "classifier", "arm": "gan", "config_id": "c1", "seed": 0,
         "status": "ok", "error": "", "diffaugment": True, "gan_loss": "bce", "val_f1": 0.5},
        {"sweep_name": "s", "trial_id": "b", "stage": "classifier", "arm": "gan", "config_id": "c2", "seed": 0,
         "status": "ok", "error": "", "diffaugment": False, "gan_loss": "hinge", "val_f1": 0.4},
        {"sweep_name": "s", "trial_id": "c", "stage": "classifier", "arm": "baseline", "config_id": "c3", "seed": 0,
         "status": "ok", "error": "", "diffaugment": False, "gan_loss": "", "val_f1": 0.3}])
    old.to_parquet(tmp_path / "old.parquet")
    df = analysis.load(tmp_path / "old.parquet")
    assert list(df["gan_augment"]) == ["diffaugment", "none", ""] and list(df["gan_arch"]) == ["dcgan", "dcgan", ""]
    assert not {"gan_gate", "gan_recall_real_ref", "gan_arch"} & set(df.attrs["missing_columns"])
    assert df["gan_recall_real_ref"].isna().all() and str(df["gan_checkpoint_epoch"].dtype) == "Int64"
    new = old.drop(columns="diffaugment").assign(gan_augment=["ada", "diffaugment", ""],
                                                 gan_arch=["resnet", "dcgan", ""], status=["gated", "ok", "ok"])
    new.to_parquet(tmp_path / "new.parquet")
    df = analysis.load(tmp_path / "new.parquet")
    assert list(df["diffaugment"]) == [False, True, False] and list(df["status"]) == ["gated", "ok", "ok"]
