"""Tuned controls, the incremental arm and equal steps (issue 21): the classifier's control knobs, the controls
search and its pick C, C fixed before the confirm phase, every arm the same optimizer steps, old ids kept."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from demo_data import make_demo

from data_prep.errors import ConfigError
from trainables.classifier.config import ClassifierConfig

GAN_CONFIG = {"arm": "gan", "seed": 0, "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
              "n_critic": 1, "synthetic_mix": "single", "synthetic_ratio": 10.0, "clf_lr": 1e-3,
              "imbalance_fix": "none", "augment": "none"}


# ---------------------------------------------------------------- the classifier's knobs
def test_class_weight_power_raises_the_inverse_frequency_weights_to_it():
    from trainables.classifier.data import loss_weights_for

    labels = np.array([0] * 90 + [1] * 10)
    full = loss_weights_for("class_weight", labels, 2)
    assert torch.allclose(full, torch.tensor([100 / 180, 100 / 20]))
    assert torch.equal(loss_weights_for("class_weight", labels, 2, power=1.0), full)  # the default: unchanged
    half = loss_weights_for("class_weight", labels, 2, power=0.5)
    assert torch.allclose(half, full.sqrt()) and half[1] / half[0] < full[1] / full[0]  # softer, same order
    assert loss_weights_for("oversample", labels, 2, power=0.5) is None


def test_oversample_share_gives_the_minority_its_share_and_the_others_their_own_proportions():
    from trainables.classifier.data import epoch_indices, sample_weights_for

    labels = np.array([0] * 600 + [2] * 300 + [1] * 100)  # minority = label 1; majority classes 2:1
    w = sample_weights_for("oversample", labels, 3, share=0.4, positive_label=1)
    assert float(w[labels == 1].sum()) == pytest.approx(0.4)
    assert float(w[labels == 0].sum()) == pytest.approx(0.6 * 600 / 900)
    assert float(w[labels == 2].sum()) == pytest.approx(0.6 * 300 / 900)
    drawn = labels[epoch_indices(len(labels), w, seed=0, epoch=0, epoch_size=20_000).numpy()]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert shares == pytest.approx([0.4, 0.4, 0.2], abs=0.015)
    balanced = labels[epoch_indices(len(labels), sample_weights_for("oversample", labels, 3), 0, 0, 20_000).numpy()]
    assert np.bincount(balanced, minlength=3) / 20_000 == pytest.approx([1 / 3] * 3, abs=0.015)  # the default: 1/C


def test_augment_strength_scales_rotation_brightness_and_contrast_never_the_flips():
    from trainables.arms import AUGMENT_POLICIES
    from trainables.classifier.data import AUGMENTS, augment_for, scaled_policy

    std = AUGMENT_POLICIES["standard"]
    strong = scaled_policy(std, 1.5)
    assert (strong.max_rotation_deg, strong.brightness, strong.contrast) == pytest.approx((22.5, 0.3, 0.3))
    assert (strong.hflip, strong.vflip) == (std.hflip, std.vflip)
    assert scaled_policy(AUGMENT_POLICIES["dermoscopy"], 1.5).max_rotation_deg == 180  # capped at a half turn
    assert augment_for("standard", 1.0) is AUGMENTS["standard"] and augment_for("none", 1.3) is None
    # the same random draws, scaled: a stronger augmentation moves the images further from the originals
    x = torch.rand(16, 3, 24, 24) * 2 - 1
    moved = [float((augment_for("xray", a)(x, torch.Generator().manual_seed(0)) - x).abs().mean())
             for a in (0.5, 1.0, 1.5)]
    assert moved[0] < moved[1] < moved[2]


def test_epoch_size_walks_a_seeded_stream_of_permutations_of_the_whole_training_set():
    from trainables.classifier.data import epoch_indices

    n, size = 10, 4
    epochs = [epoch_indices(n, None, seed=3, epoch=e, epoch_size=size) for e in range(5)]
    stream = torch.cat(epochs).tolist()
    assert [len(e) for e in epochs] == [size] * 5
    assert sorted(stream[:10]) == list(range(n)) and sorted(stream[10:20]) == list(range(n))  # all once, then again
    assert torch.equal(epoch_indices(n, None, 3, 4, size), epochs[4])  # a pure function of seed and epoch (resume)
    assert not torch.equal(epoch_indices(n, None, 4, 0, size), epochs[0])
    for e in range(3):  # epoch_size = the training set's size is the default: the same permutation as always
        assert torch.equal(epoch_indices(n, None, 3, e, n), epoch_indices(n, None, 3, e))
    big = epoch_indices(n, None, 0, 1, 25)  # larger than the set: positions 25..49 of the stream
    assert len(big) == 25 and np.bincount(big.numpy(), minlength=n).max() - np.bincount(big.numpy()).min() <= 1


def test_knob_values_are_checked_against_their_ranges_and_their_fix():
    assert ClassifierConfig(imbalance_fix="class_weight", class_weight_power=0.5).class_weight_power == 0.5
    assert ClassifierConfig(augment="xray", augment_strength=1.5, epoch_size=100).epoch_size == 100
    cases = [({"imbalance_fix": "class_weight", "class_weight_power": 0.3}, r"class_weight_power must be in \[0.5, 1\]"),
             ({"imbalance_fix": "oversample", "oversample_share": 0.6}, r"oversample_share must be in \[0.25, 0.5\] or 0"),
             ({"augment": "standard", "augment_strength": 2.0}, r"augment_strength must be in \[0.5, 1.5\]"),
             ({"class_weight_power": 0.7}, r"class_weight_power 0.7 has no effect .* needs imbalance_fix='class_weight'"),
             ({"imbalance_fix": "class_weight", "oversample_share": 0.3}, "needs imbalance_fix='oversample'"),
             ({"augment_strength": 1.2}, "augment_strength 1.2 has no effect .* needs an augment policy"),
             ({"epoch_size": -1}, "epoch_size must be an integer >= 0"), ({"epoch_size": 2.5}, "epoch_size")]
    for values, message in cases:
        with pytest.raises(ConfigError, match=message):
            ClassifierConfig(**values)


def test_cli_knob_flags_reach_the_run_and_it_counts_its_steps(tiny_demo, tmp_path, capsys):
    from trainables.classifier.__main__ import main

    rc = main(["--manifest", str(tiny_demo), "--out", str(tmp_path / "run"), "--smoke-test", "--epochs", "2",
               "--imbalance-fix", "class_weight", "--class-weight-power", "0.6", "--augment", "xray",
               "--augment-strength", "0.5", "--epoch-size", "40"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 2 * math.ceil(40 / 32) and m["epoch_size"] == 40  # smoke batch size 32
    assert (m["config"]["class_weight_power"], m["config"]["augment_strength"]) == (0.6, 0.5)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["steps"].tolist() == [2, 4]
    rc = main(["--manifest", str(tiny_demo), "--out", str(tmp_path / "bad"), "--smoke-test", "--oversample-share", "0.3"])
    assert rc == 2 and "oversample_share 0.3 has no effect" in capsys.readouterr().err


# ---------------------------------------------------------------- the controls search and C
def test_control_space_draws_only_allowed_fixes_knobs_in_range_and_never_the_baseline():
    import optuna

    from sweeps.config import SweepConfig
    from sweeps.controls import ControlSpace, has_controls
    from trainables.arms import CONTROL_KNOBS, knob_acts

    space = pickle.loads(pickle.dumps(ControlSpace(SweepConfig(augment_policy="xray"))))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(0))
    seen = set()
    for _ in range(80):
        t = study.ask()
        consts = space(t)
        cfg = {**t.params, **consts}
        seen.add((cfg["imbalance_fix"], cfg["augment"]))
        assert cfg["arm"] == "control" and cfg["seed"] == 0 and cfg["synthetic_ratio"] == 0 and cfg["gan_loss"] == ""
        for name, knob in CONTROL_KNOBS.items():  # a knob is drawn exactly where it acts, within its range
            assert (name in t.params) == knob_acts(name, cfg["imbalance_fix"], cfg["augment"]), (name, cfg)
            assert name not in t.params or knob.low <= t.params[name] <= knob.high
        assert 3e-4 <= cfg["clf_lr"] <= 3e-3
        study.tell(t, [0.5, 0.5])
    assert seen == {("class_weight", "none"), ("class_weight", "xray"), ("oversample", "none"),
                    ("oversample", "xray"), ("none", "xray")}  # never ("none", "none"): that is the baseline
    t = study.ask()  # one fix, no augmentation: a constant fix, its knob and the LR are the dimensions
    consts = ControlSpace(SweepConfig(controls=("baseline", "class_weight")))(t)
    assert (consts["imbalance_fix"], consts["augment"]) == ("class_weight", "none")
    assert set(t.params) == {"class_weight_power", "clf_lr"}
    assert not has_controls(SweepConfig(controls=("baseline",))) and has_controls(SweepConfig(controls=("augment",)))


def test_the_controls_search_gets_the_gan_searchs_trial_count():
    from sweeps.config import SweepConfig
    from sweeps.controls import ControlSpace, tune_config

    for n in (2, 8, 13):
        tc = tune_config(SweepConfig(num_samples=n), 2, True, None)
        assert tc.num_samples == n and tc.scheduler is None  # no GAN: nothing for ASHA to stop
        assert isinstance(tc.search_alg._space, ControlSpace)


def _rows():
    """Search rows: controls (one best on val, one best on test), a confirm-phase control row better still on val
    (never a candidate: only the controls search picks C) and a GAN search row."""
    base = {"stage": "classifier", "status": "ok", "augment": "none", "oversample_share": 0.0, "augment_strength": 1.0}
    rows = pd.DataFrame([
        {**base, "trial_id": "c1", "arm": "control", "sweep_phase": "controls", "imbalance_fix": "class_weight",
         "class_weight_power": 0.62, "clf_lr": 1e-3, "val_f1": 0.80, "val_sensitivity": 0.7, "test_f1": 0.1},
        {**base, "trial_id": "c2", "arm": "control", "sweep_phase": "controls", "imbalance_fix": "oversample",
         "class_weight_power": 1.0, "oversample_share": 0.3, "clf_lr": 2e-3, "val_f1": 0.5, "val_sensitivity": 0.6,
         "test_f1": 0.99},
        {**base, "trial_id": "c3", "arm": "control", "sweep_phase": "controls", "imbalance_fix": "class_weight",
         "class_weight_power": 0.9, "clf_lr": 1e-3, "val_f1": 0.7, "val_sensitivity": 0.9, "test_f1": 0.5},
        {**base, "trial_id": "x", "arm": "control", "sweep_phase": "confirm", "imbalance_fix": "oversample",
         "class_weight_power": 1.0, "clf_lr": 1e-3, "val_f1": 0.99, "val_sensitivity": 0.99, "test_f1": 0.99},
        {**base, "trial_id": "g", "arm": "gan", "sweep_phase": "search", "imbalance_fix": "none",
         "class_weight_power": 1.0, "clf_lr": 1e-3, "val_f1": 0.95, "val_sensitivity": 0.95, "test_f1": 0.9},
    ])
    return rows.assign(config_id="id_" + rows["trial_id"])


def test_pick_control_uses_validation_of_the_controls_search_only():
    from sweeps.config import SweepConfig
    from sweeps.controls import pick_control

    c = pick_control(_rows(), SweepConfig())
    assert c["trial_id"] == "c1" and c["imbalance_fix"] == "class_weight"  # Pareto {c1, c3}, best val F1
    assert c["class_weight_power"] == pytest.approx(0.62) and c["oversample_share"] == 0.0
    assert pick_control(_rows().assign(status="failed"), SweepConfig()) is None
    assert pick_control(pd.DataFrame(columns=["stage", "arm", "status"]), SweepConfig()) is None
    assert pick_control(_rows(), SweepConfig(controls=("baseline",))) is None  # no classical fix allowed: no C


def test_best_control_is_fixed_in_sweep_state_before_any_confirm_trial_and_kept_on_resume(tmp_path, monkeypatch):
    from sweeps import augment_ratio as ar
    from sweeps.config import SweepConfig

    cfg = SweepConfig(storage_path=str(tmp_path), name="s", num_samples=3, top_k=1)
    state_path = tmp_path / "s" / "sweep_state.json"
    state_path.parent.mkdir(parents=True)
    rows = _rows()
    table = type("Table", (), {"frame": lambda self: rows})()
    calls = []

    def run_phase(cfg, phase, data, table, tune_config, param_space, deadline=0.0):
        calls.append((phase, tune_config.num_samples))

    def confirm_phase(cfg, data, table, max_conc, best, control, deadline=0.0):
        on_disk = json.loads(state_path.read_text())  # what a killed driver would resume from
        calls.append(("confirm", on_disk["phase"], (on_disk["control"] or {}).get("trial_id"),
                      (control or {}).get("trial_id")))

    monkeypatch.setattr(ar, "search_phase", lambda *a, **k: calls.append(("search", cfg.num_samples)))
    monkeypatch.setattr(ar, "run_phase", run_phase)
    monkeypatch.setattr(ar, "confirm_phase", confirm_phase)
    # the guard (sweeps/selection.py, tested in test_quality_gate) would retrain GANs: the picks as ranked
    monkeypatch.setattr(ar, "confirmed_picks", lambda cfg, data, table, mc: ar.pick_best(table.frame(), cfg.top_k))
    state = {"phase": "search"}
    ar.run_phases(cfg, None, table, state, state_path, 1)
    assert calls == [("search", 3), ("controls", 3), ("confirm", "confirm", "c1", "c1")]
    assert state["phase"] == "done" and json.loads(state_path.read_text())["phase"] == "done"
    assert [b["val_f1"] for b in state["best"]] == [0.95]

    # resumed in the confirm phase: C comes from sweep_state.json, even if the rows now rank another control first
    calls.clear()
    rows.loc[rows["trial_id"] == "c3", "val_f1"] = 0.9
    state = {**json.loads(state_path.read_text()), "phase": "confirm"}
    state_path.write_text(json.dumps(state))  # as a driver killed in the confirm phase left it
    ar.run_phases(replace_resume(cfg), None, table, state, state_path, 1)
    assert calls == [("confirm", "confirm", "c1", "c1")]
    # resumed in the controls phase: the search is continued, then C picked
    calls.clear()
    state = {"phase": "controls", "best": state["best"]}
    ar.run_phases(replace_resume(cfg), None, table, state, state_path, 1)
    assert calls == [("controls", 3), ("confirm", "confirm", "c3", "c3")]
    # no classical fix allowed: no controls search, no C, and the sweep says so
    calls.clear()
    state = {"phase": "controls", "best": state["best"]}
    ar.run_phases(replace_resume(cfg, controls=("baseline",)), None, table, state, state_path, 1)
    assert calls == [("confirm", "confirm", None, None)]


def replace_resume(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, resume=True, **changes)


# ---------------------------------------------------------------- equal steps, one GAN per seed
def test_every_arm_takes_the_same_optimizer_steps_at_ratio_10_and_shares_one_gan_per_seed(tmp_path):
    """A real classifier run of each confirm arm (tiny budgets): baseline, C (class weights + augmentation with
    their knobs), the GAN at ratio 10 and C + that GAN take the same steps; the GAN is trained once."""
    from sweeps.augment_ratio import trial_data
    from sweeps.config import SweepConfig
    from sweeps.controls import confirm_configs
    from sweeps.trial import run_trial

    make_demo(tmp_path / "data", 60, 16)
    data = trial_data(tmp_path / "data" / "manifest.parquet", tmp_path / "work")
    s = SweepConfig(image_size=32, gan_epochs=1, gan_batch_size=8, gan_width=8, gan_eval_every=0, clf_epochs=2,
                    clf_batch_size=16, synthetic_ratios=(10.0,), num_seeds=1, clf_lr_grid=(1e-3,))
    control = {"imbalance_fix": "class_weight", "augment": "standard", "class_weight_power": 0.7,
               "augment_strength": 1.4, "oversample_share": 0.0}
    plan = confirm_configs(s, [GAN_CONFIG], control)
    assert [c["arm"] for c in plan] == ["baseline", "control", "gan", "control+gan"]
    rows = {c["arm"]: run_trial(c, s, data, f"t_{c['arm']}", report=lambda r: None) for c in plan}
    assert all(r["status"] == "ok" for r in rows.values()), {a: r.get("error") for a, r in rows.items()}
    steps = 2 * math.ceil(data.n_train_real / 16)
    assert {a: (r["clf_steps"], r["clf_epoch_size"]) for a, r in rows.items()} == {
        a: (steps, data.n_train_real) for a in rows}
    n_minority = rows["gan"]["n_synthetic"] // 10
    assert rows["gan"]["n_synthetic"] == rows["control+gan"]["n_synthetic"] == 10 * n_minority > 0
    # without the step budget the GAN arm's epochs would hold its synthetic images too: more steps
    assert 2 * math.ceil((data.n_train_real + rows["gan"]["n_synthetic"]) / 16) > steps
    assert rows["gan"]["gan_trained_here"] and not rows["control+gan"]["gan_trained_here"]
    assert rows["gan"]["gan_key"] == rows["control+gan"]["gan_key"] != ""
    for arm in ("control", "control+gan"):  # C's knobs in the rows and in the classifier that ran
        assert (rows[arm]["class_weight_power"], rows[arm]["augment_strength"]) == (0.7, 1.4)
        ran = json.loads((tmp_path / "work" / "classifiers" / f"t_{arm}" / "config.json").read_text())
        assert (ran["imbalance_fix"], ran["augment"], ran["class_weight_power"]) == ("class_weight", "standard", 0.7)
    assert (rows["baseline"]["class_weight_power"], rows["baseline"]["oversample_share"]) == (1.0, 0.0)


# ---------------------------------------------------------------- ids across the upgrade
def test_config_ids_of_configs_without_knobs_are_the_ids_they_had():
    """Ids measured on the code before the knobs existed (with gan_arch / gan_augment, which replaced the boolean
    diffaugment in the GAN's identity): a sweep resumed across the knobs' upgrade keeps its ids."""
    from sweeps.space import config_id, gan_key, setup_id
    from trainables.arms import CONTROL_ARMS

    gan = {**GAN_CONFIG, "seed": 1000, "gan_arch": "dcgan", "gan_augment": "diffaugment", "synthetic_ratio": 2.0}
    gan.pop("diffaugment")
    ctl = {"arm": "class_weight", "seed": 1001, "gan_loss": "", "gan_lr_g": None, "gan_lr_d": None, "gan_arch": "",
           "gan_augment": "", "n_critic": 0, "synthetic_mix": "", "clf_lr": 3e-4, **CONTROL_ARMS["class_weight"]}
    assert (config_id(gan), setup_id(gan)) == ("07cde7f5ee95", "3fc8d77c9ca5")
    assert (config_id(ctl), setup_id(ctl)) == ("4dc0fa055d4d", "2e6a92c8b4af")
    defaults = {"class_weight_power": 1.0, "oversample_share": 0.0, "augment_strength": 1.0}
    assert config_id({**ctl, **defaults}) == config_id(ctl) and setup_id({**ctl, **defaults}) == setup_id(ctl)
    assert config_id({**ctl, "class_weight_power": np.float64("nan")}) == config_id(ctl)  # a parquet gap
    tuned = {**ctl, "class_weight_power": 0.7}
    assert config_id(tuned) != config_id(ctl) and setup_id(tuned) != setup_id(ctl)
    assert config_id(tuned) == config_id(json.loads(json.dumps({**tuned, "class_weight_power": np.float64(0.7)},
                                                               default=float)))
    # the GAN's identity holds no classifier setting: C + GAN reuses the GAN's key
    stacked = {**gan, "arm": "control+gan", "imbalance_fix": "class_weight", "class_weight_power": 0.7, "clf_lr": 3e-3}
    assert gan_key(stacked) == gan_key(gan) != "" and gan_key(ctl) == ""
