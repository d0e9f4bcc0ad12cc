"""The sweep: end-to-end smoke run, GAN reuse, selection on val, resume after a killed driver, cluster.yaml."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from demo_data import make_demo

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "sweeps" / "augment_ratio.py"


def _run_sweep(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, str(SWEEP), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


# ---------------------------------------------------------------- pure pieces

def test_cluster_yaml_validates_with_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])
    bad = {**cfg, "max_workers": "x"}
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    # storage every node reaches: the S3 bucket as the sweep's storage path, an instance profile with S3 access on
    # the workers too (Ray gives workers no role by default), the head allowed to pass the workers' role on
    text = (ROOT / "cluster.yaml").read_text()
    assert "--address auto --storage-path s3://BUCKET/" in text
    types = cfg["available_node_types"]
    for name, profile in ((cfg["head_node_type"], "ganaug-head"), ("gpu_worker", "ganaug-worker")):
        assert types[name]["node_config"]["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{profile}")
    for needed in ('"arn:aws:s3:::BUCKET"', '"arn:aws:s3:::BUCKET/*"', '"s3:PutObject"', '"iam:PassRole"',
                   "role/ganaug-worker", "AWS_ENDPOINT_URL"):
        assert needed in text, needed


def test_example_yaml_configs_resolve_and_unknown_keys_fail(tmp_path):
    from data_prep.errors import ConfigError
    from sweeps import config as sc

    for f in sorted((ROOT / "sweeps" / "configs").glob("*.yaml")):
        values = sc.load_yaml(f)
        if values.get("data", "demo") is None:  # the defects setup has no demo default: it says so
            with pytest.raises(ConfigError, match="no data: .* pass --data PATH"):
                sc.resolve(values, {})
            values["data"] = "some.npz"
        cfg = sc.resolve(values, {})
        assert cfg.name == f.stem
    (tmp_path / "typo.yaml").write_text("num_sample: 3\n")
    with pytest.raises(ConfigError, match=r"unknown sweep setting key\(s\) \['num_sample'\]"):
        sc.resolve(sc.load_yaml(tmp_path / "typo.yaml"), {})
    with pytest.raises(ConfigError, match="synthetic_ratios must be in"):
        sc.resolve({"synthetic_ratios": [0.5, 12]}, {})


def test_search_space_is_conditional_and_picklable():
    import pickle

    import optuna

    from sweeps.config import SweepConfig
    from sweeps.space import SearchSpace

    broad = SweepConfig(gan_losses=("bce", "hinge", "wgan-gp"), mix_choices=("single", "mix_losses"),
                        conditional_choices=(False, True), feature_matching_choices=(0.0, 1.0),
                        gan_archs=("dcgan", "resnet"), gan_augments=("none", "diffaugment", "ada"))
    space = pickle.loads(pickle.dumps(SearchSpace(broad)))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(0))
    seen = set()
    for _ in range(60):
        t = study.ask()
        consts = space(t)
        cfg = {**t.params, **consts}
        seen.add(cfg["gan_loss"])
        # n_critic is searched only where a wgan-gp GAN is trained (alone, or in a mix)
        assert ("n_critic" in t.params) == (cfg["gan_loss"] in ("wgan-gp", "mix"))
        assert (cfg["gan_loss"] == "mix") == (cfg["synthetic_mix"] == "mix_losses")
        assert "perceptual" not in t.params and cfg["perceptual"] == 0.0  # no VGG weights given: not searched
        assert cfg["arm"] == "gan" and 0 < cfg["synthetic_ratio"] <= 10
        assert {"conditional", "feature_matching", "gan_arch", "gan_augment"} <= set(t.params)
        assert "diffaugment" not in t.params  # gan_augment replaced the boolean
        study.tell(t, [0.5, 0.5])
    assert seen == {"bce", "hinge", "wgan-gp", "mix"}
    # a single choice is a constant, not a search dimension
    t = study.ask()
    consts = SearchSpace(SweepConfig(gan_archs=("dcgan",), gan_augments=("ada",)))(t)
    assert consts["gan_arch"] == "dcgan" and consts["gan_augment"] == "ada" and "gan_arch" not in t.params


def test_selection_uses_validation_not_test():
    from sweeps.augment_ratio import pick_best

    rows = [  # A: best on val, worst on test; B: the reverse
        dict(config_id="A", val_f1=0.9, val_sensitivity=0.9, test_f1=0.1, test_sensitivity=0.1),
        dict(config_id="B", val_f1=0.5, val_sensitivity=0.5, test_f1=0.99, test_sensitivity=0.99),
        dict(config_id="C", val_f1=0.6, val_sensitivity=0.95, test_f1=0.5, test_sensitivity=0.5),
    ]
    df = pd.DataFrame([{**r, "stage": "classifier", "arm": "gan", "status": "ok"} for r in rows])
    best = pick_best(df, 2)
    assert [b["config_id"] for b in best] == ["A", "C"]  # the Pareto set on val, ranked by val F1


# ---------------------------------------------------------------- GAN reuse (no Tune: run_trial directly)

def test_gan_config_is_trained_once_for_two_ratios(tmp_path):
    from sweeps.config import SweepConfig
    from sweeps.trial import TrialData, run_trial

    make_demo(tmp_path / "data", 60, 16)
    s = SweepConfig(image_size=32, gan_epochs=1, gan_batch_size=8, gan_width=8, gan_eval_every=0, clf_epochs=1,
                    clf_batch_size=32, synthetic_ratios=(1.0, 2.0))
    data = TrialData(str(tmp_path / "data" / "manifest.parquet"), str(tmp_path / "work"))
    base = {"arm": "gan", "seed": 0, "gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
            "n_critic": 1, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}
    reports: list[dict] = []
    first = run_trial({**base, "synthetic_ratio": 1.0}, s, data, "t1", report=reports.append)
    ckpts = sorted((Path(first["gan_run_dir"]) / "checkpoints").glob("*.pt"))
    stamp = [p.stat().st_mtime_ns for p in ckpts]
    n_gan_epochs = sum(r.get("phase") == "gan" for r in reports)
    second = run_trial({**base, "synthetic_ratio": 2.0}, s, data, "t2", report=reports.append)
    assert first["gan_trained_here"] is True and second["gan_trained_here"] is False
    assert first["gan_key"] == second["gan_key"] and first["config_id"] != second["config_id"]
    assert sum(r.get("phase") == "gan" for r in reports) == n_gan_epochs  # no GAN epoch ran again
    assert [p.stat().st_mtime_ns for p in ckpts] == stamp
    assert second["n_synthetic"] == 2 * first["n_synthetic"] > 0
    for row in (first, second):
        assert row["status"] == "ok" and 0 <= row["test_f1"] <= 1 and 0 <= row["val_f1"] <= 1

    # a "mix_losses" trial: one GAN per loss (the bce one is reused), equal parts, every image keeps its source
    s = dataclasses.replace(s, gan_losses=("bce", "hinge"))
    n_before = len(reports)
    mixed = run_trial({**base, "gan_loss": "mix", "synthetic_mix": "mix_losses", "synthetic_ratio": 2.0,
                       "conditional": True}, s, data, "t3", report=reports.append)
    assert mixed["status"] == "ok", mixed.get("error")
    run_dirs = mixed["gan_run_dir"].split(";")
    assert len(run_dirs) == 2 and first["gan_run_dir"] not in run_dirs  # conditional GANs are other GANs
    import json

    sources = json.loads((Path(mixed["clf_run_dir"]) / "metrics.json").read_text())["data"]["synthetic_sources"]
    assert sorted(src["n"] for src in sources) == [first["n_synthetic"]] * 2
    # a mix is exempt from ASHA: its members' epochs come under other keys, counted across members
    mix_epochs = [r for r in reports[n_before:] if r.get("phase") == "gan"]
    assert [r["gan_epoch_cumulative"] for r in mix_epochs] == [1, 2] and [r["mix_member"] for r in mix_epochs] == [0, 1]
    assert not any("gan_epoch" in r or "gan_kid" in r for r in mix_epochs)


def test_confirm_plan_fresh_shared_seeds_same_lr_grid_for_every_arm():
    """Confirm seeds are never search seeds and are shared by every arm (a paired test); every arm - baseline, the
    tuned control C, the GAN configs and C + the rank-1 GAN - runs the same classifier-LR grid; the search's best
    GAN config is rank 1. C's settings are on both control arms, the GAN's on both GAN arms, and gan and
    control+gan of one seed share one GAN (one gan_key: trained once per seed)."""
    from sweeps.config import SweepConfig
    from sweeps.controls import confirm_configs
    from sweeps.space import SEARCH_SEED, gan_key, setup_id

    cfg = SweepConfig(num_seeds=5, clf_lr_grid=(3e-4, 1e-3), controls=("baseline", "class_weight", "augment"))
    best = [{"arm": "gan", "seed": SEARCH_SEED, "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4,
             "diffaugment": True, "n_critic": 1, "synthetic_mix": "single", "synthetic_ratio": 2.0, "clf_lr": 7.7e-4,
             "imbalance_fix": "class_weight", "augment": "none"},  # the search stacked this GAN on class weights
            {"arm": "gan", "seed": SEARCH_SEED, "gan_loss": "bce", "gan_lr_g": 1e-4, "gan_lr_d": 4e-4,
             "diffaugment": False, "n_critic": 1, "synthetic_mix": "single", "synthetic_ratio": 0.5, "clf_lr": 2e-3,
             "imbalance_fix": "none", "augment": "none"}]
    control = {"imbalance_fix": "none", "augment": "standard", "augment_strength": 1.3, "class_weight_power": 1.0,
               "oversample_share": 0.0, "clf_lr": 1.1e-3, "val_f1": 0.6, "val_sensitivity": 0.7}
    plan = pd.DataFrame(confirm_configs(cfg, best, control))
    plan["setup"] = [setup_id(r) for r in plan.to_dict("records")]
    assert plan.groupby("arm")["setup"].nunique().to_dict() == {"baseline": 1, "control": 1, "gan": 2, "control+gan": 1}
    per_setup = plan.groupby("setup").apply(lambda g: (tuple(sorted(set(g["seed"]))), tuple(sorted(set(g["clf_lr"])))))
    assert per_setup.nunique() == 1  # the same seeds and LRs everywhere
    seeds, lrs = per_setup.iloc[0]
    assert len(seeds) == 5 and SEARCH_SEED not in seeds and lrs == (3e-4, 1e-3)
    assert len(plan) == 5 * 5 * 2 and not plan.duplicated(["setup", "seed", "clf_lr"]).any()
    gan = plan[plan["arm"] == "gan"]
    assert dict(zip(gan["gan_loss"], gan["confirm_rank"])) == {"hinge": 1, "bce": 2}
    assert set(gan.loc[gan["gan_loss"] == "hinge", "imbalance_fix"]) == {"class_weight"}  # the GAN config as searched
    both = plan[plan["arm"].isin(["control", "control+gan"])]  # C's fix, augmentation and knob on both
    assert set(both["imbalance_fix"]) == {"none"} and set(both["augment"]) == {"standard"}
    assert set(both["augment_strength"]) == {1.3} and "augment_strength" not in plan.loc[plan["arm"] == "gan"].dropna(axis=1)
    stacked = plan[plan["arm"] == "control+gan"]
    gan_cols = ["gan_loss", "gan_lr_g", "gan_lr_d", "gan_arch", "gan_augment", "n_critic", "synthetic_ratio", "confirm_rank"]
    rank1 = gan[gan["confirm_rank"] == 1]
    assert (stacked[gan_cols].drop_duplicates().to_dict("records") == rank1[gan_cols].drop_duplicates().to_dict("records"))
    assert plan.loc[plan["arm"].isin(["baseline", "control"]), "synthetic_ratio"].eq(0).all()
    keys = lambda rows: {r["seed"]: gan_key(r) for r in rows.to_dict("records")}  # noqa: E731
    assert keys(stacked) == keys(rank1) and len(set(keys(rank1).values())) == 5  # one GAN per seed, shared
    search_keys = {gan_key(b) for b in best}
    assert not {gan_key(r) for r in gan.to_dict("records")} & search_keys  # every confirm seed: a fresh GAN
    # no classical fix allowed: no C, so neither control arm
    only = confirm_configs(SweepConfig(num_seeds=3, clf_lr_grid=(1e-3,), controls=("baseline",)), best[:1], None)
    assert sorted({c["arm"] for c in only}) == ["baseline", "gan"]


def test_quality_reference_is_validation_and_a_mix_is_judged_on_its_mixed_set(tmp_path):
    """The KID that prunes and selects GANs is measured against real VALIDATION minority images; a mix's
    quality is that of its mixed synthetic set, not the mean of its members'."""
    import json

    from sweeps.augment_ratio import trial_data
    from sweeps.config import SweepConfig
    from sweeps.trial import MIN_VAL_REFERENCE_IMAGES, reference_split, run_trial

    assert reference_split(MIN_VAL_REFERENCE_IMAGES) == "val" and reference_split(MIN_VAL_REFERENCE_IMAGES - 1) == "train"
    make_demo(tmp_path / "data", 160, 80)
    data = trial_data(tmp_path / "data" / "manifest.parquet", tmp_path / "work")
    assert data.n_val_positive >= MIN_VAL_REFERENCE_IMAGES and data.gan_reference_split == "val"
    s = SweepConfig(image_size=32, gan_epochs=1, gan_batch_size=16, gan_width=8, gan_eval_every=1, clf_epochs=1,
                    clf_batch_size=32, synthetic_ratios=(0.5,), gan_losses=("bce", "hinge"),
                    gate_min_recall_share=0.0, gate_min_diversity_share=0.0)  # a 1-epoch GAN: judged, not gated
    cfg = {"arm": "gan", "seed": 0, "gan_loss": "mix", "synthetic_mix": "mix_losses", "gan_lr_g": 2e-4,
           "gan_lr_d": 2e-4, "diffaugment": False, "n_critic": 1, "synthetic_ratio": 0.5, "clf_lr": 1e-3,
           "imbalance_fix": "none", "augment": "none"}
    reports: list[dict] = []
    row = run_trial(cfg, s, data, "mix1", report=reports.append)
    assert row["status"] == "ok", row.get("error")
    assert row["gan_kid_reference"] == "val" and row["n_val_positive"] == data.n_val_positive
    refs = list((tmp_path / "work" / "quality_cache").glob("real_ref_*_val_*.npz"))
    assert refs and not list((tmp_path / "work" / "quality_cache").glob("real_ref_*_train_*.npz"))
    members = [json.loads((Path(d) / "done.json").read_text()) for d in row["gan_run_dir"].split(";")]
    mixed = json.loads((tmp_path / "work" / "gans" / row["gan_key"] / "mix_quality.json").read_text())
    assert row["gan_kid"] == pytest.approx(mixed["gan_kid"])
    assert row["gan_fid"] != pytest.approx(sum(m["gan_fid"] for m in members) / 2)  # not the members' mean
    assert all(m["gan_kid_reference"] == "val" for m in members)


@pytest.mark.slow
def test_ddp_trial_trains_its_gan_and_classifier_on_two_torchtrainer_workers(tmp_path):
    """--workers-per-trial 2: the trial coordinates on 0.25 CPU and both stages run as 2-worker DDP
    TorchTrainers (cpus_per_trial is per worker, so 2 x 0.5 + 0.25 fits this 2-CPU machine)."""
    import json

    import pandas as pd
    import ray
    from ray import tune

    from sweeps.augment_ratio import concurrency, run_phase, trial_data
    from sweeps.config import SweepConfig
    from sweeps.results import ResultsTable

    make_demo(tmp_path / "data", 60, 16)
    cfg = SweepConfig(name="ddp", storage_path=str(tmp_path / "storage"), workers_per_trial=2, cpus_per_trial=0.5,
                      image_size=32, gan_epochs=2, gan_batch_size=8, gan_width=8, gan_eval_every=0, clf_epochs=2,
                      clf_batch_size=32, synthetic_ratios=(1.0,))
    data = trial_data(tmp_path / "data" / "manifest.parquet", tmp_path / "work")
    table = ResultsTable(tmp_path / "work" / "results.parquet", "ddp", phase="confirm")
    trial = {"arm": "gan", "seed": 0, "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
             "n_critic": 1, "synthetic_ratio": 1.0, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert concurrency(cfg) == 1  # floor(2 / (2 x 0.5 + 0.25))
        grid = run_phase(cfg, "confirm", data, table, tune.TuneConfig(num_samples=1, max_concurrent_trials=1),
                         {"trial": tune.grid_search([trial])})
    finally:
        ray.shutdown()
    assert not grid.errors
    # every DDP epoch reached Tune (ASHA, progress table, dashboard), with the single-process path's keys
    reports = grid[0].metrics_dataframe
    gan_epochs = reports.loc[reports["phase"] == "gan", "gan_epoch"].tolist()
    assert gan_epochs == [1, 2] and reports.loc[reports["phase"] == "gan", "gan_loss_D"].notna().all()
    assert reports.loc[reports["phase"] == "classifier", "clf_epoch"].tolist() == [1, 2]
    df = pd.read_parquet(tmp_path / "work" / "results.parquet")
    clf = df[df["stage"] == "classifier"]
    assert len(clf) == 1 and clf.iloc[0]["status"] == "ok", clf[["status", "error"]]
    row = clf.iloc[0]
    assert 0 <= row["test_f1"] <= 1 and 0 <= row["val_f1"] <= 1
    gan_run = json.loads((Path(row["gan_run_dir"]) / "config.json").read_text())["_run"]
    assert gan_run["num_workers"] == 2 and gan_run["use_gpu"] is False
    clf_metrics = json.loads((Path(row["clf_run_dir"]) / "metrics.json").read_text())
    assert clf_metrics["num_workers"] == 2 and clf_metrics["n_synthetic"] > 0


def test_ddp_trials_refuse_fractional_gpus():
    from data_prep.errors import ConfigError
    from sweeps.config import SweepConfig

    with pytest.raises(ConfigError, match="whole GPU each"):
        SweepConfig(workers_per_trial=2, gpus_per_trial=0.5)
    assert SweepConfig(workers_per_trial=2, gpus_per_trial=1).gpus_per_trial == 1


# ---------------------------------------------------------------- end to end, and resume after SIGKILL

EXPECTED = ["sweep_name", "trial_id", "stage", "arm", "config_id", "seed", "status", "error", "gan_loss",
            "synthetic_ratio", "val_f1", "val_sensitivity", "test_f1", "test_sensitivity", "test_roc_auc",
            "gan_kid", "gan_fid", "time_total_s", "gan_run_dir", "clf_run_dir"]


@pytest.mark.slow
def test_smoke_sweep_end_to_end_then_resume_after_killed_driver(tmp_path):
    # 1) a full --smoke-test run
    proc = _run_sweep(["--smoke-test", "--storage-path", str(tmp_path / "a")])
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    # a console a person reads: one line per trial and event, no Tune tables or boxes, the answer at the end
    assert len(out.splitlines()) <= 80, out
    assert "Configuration for experiment" not in out and "Trial status" not in out and "│" not in out
    assert "[confirm] trial 24/24" in out and "[confirm] 24/24 done, 0 running, 0 failed" in out
    df = pd.read_parquet(tmp_path / "a" / "smoke_test" / "results.parquet")
    assert not [c for c in EXPECTED if c not in df.columns]
    clf = df[df["stage"] == "classifier"]
    assert clf["trial_id"].is_unique
    confirm = clf[clf["sweep_phase"] == "confirm"]
    search = clf[clf["sweep_phase"] == "search"]
    # the four arms, each the same 2 classifier LRs x the same 3 fresh seeds (the search ran seed 0)
    assert set(confirm["arm"]) == {"baseline", "control", "gan", "control+gan"}
    for arm in ("baseline", "control", "gan", "control+gan"):
        mine = confirm[confirm["arm"] == arm]
        assert sorted(mine["seed"]) == [1000, 1000, 1001, 1001, 1002, 1002], arm
        assert sorted(mine["clf_lr"].unique()) == [1e-3, 3e-3], arm
    assert set(search["seed"]) == {0} and (confirm.loc[confirm["arm"] == "gan", "confirm_rank"] == 1).all()
    # the controls search: as many trials as the GAN search, seed 0, no GAN; C fixed in sweep_state.json and run
    # with its settings by both control arms
    controls = clf[clf["sweep_phase"] == "controls"]
    assert len(controls) == len(search) == 2 and set(controls["seed"]) == {0} and set(controls["arm"]) == {"control"}
    state = json.loads((tmp_path / "a" / "smoke_test" / "sweep_state.json").read_text())
    c = state["control"]
    assert c["trial_id"] in set(controls["trial_id"]) and "best control C on validation" in out
    for arm in ("control", "control+gan"):
        mine = confirm[confirm["arm"] == arm]
        assert set(mine["imbalance_fix"]) == {c["imbalance_fix"]} and set(mine["augment"]) == {c["augment"]}, arm
        for knob in ("class_weight_power", "oversample_share", "augment_strength"):
            assert mine[knob].tolist() == pytest.approx([c[knob]] * len(mine)), (arm, knob)
    # equal optimizer steps: every confirm classifier, GAN images or not, the same steps and epoch size
    assert confirm["clf_steps"].nunique() == 1 and confirm["clf_epoch_size"].nunique() == 1
    assert confirm["clf_steps"].iloc[0] == 2 * -(-confirm["clf_epoch_size"].iloc[0] // 32)
    assert (confirm.loc[confirm["arm"] == "control+gan", "n_synthetic"] > 0).all()
    # every confirm seed trained its own GAN, once for gan and control+gan: none of the search's GANs is reused
    gan_rows = df[df["stage"] == "gan"]
    confirm_keys = gan_rows.loc[gan_rows["sweep_phase"] == "confirm", "gan_key"]
    assert confirm_keys.is_unique and len(confirm_keys) == 3
    assert not set(confirm_keys) & set(gan_rows.loc[gan_rows["sweep_phase"] == "search", "gan_key"])
    for arm in ("gan", "control+gan"):
        assert set(confirm.loc[confirm["arm"] == arm, "gan_key"]) == set(confirm_keys), arm
    assert gan_rows["gan_kid"].notna().all()
    # 4 minority val images in the smoke data: below the minimum, the reference is train, said, and ASHA is off
    assert (gan_rows["gan_kid_reference"] == "train").all() and "fewer than 10" in out
    assert "real-test metrics of the confirm phase" in out and "results:" in out and "Answer:" in out
    assert (tmp_path / "a" / "smoke_test" / "report" / "report.html").is_file()

    # 1b) --resume --exchange-rate on the finished sweep adds the exchange phase (issue 24): C and C + GAN on nested
    # subsets of the real minority train images, the confirm rows reused for fraction 1 and the headline untouched
    work = tmp_path / "a" / "smoke_test"
    headline_before = pd.read_csv(work / "report" / "headline.csv")
    proc = _run_sweep(["--smoke-test", "--storage-path", str(tmp_path / "a"), "--resume", "--exchange-rate"])
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    after = pd.read_parquet(work / "results.parquet")
    clf2 = after[after["stage"] == "classifier"]
    ex = clf2[clf2["sweep_phase"] == "exchange"]
    assert len(clf2[clf2["sweep_phase"] == "confirm"]) == len(confirm)  # fraction 1 is the confirm rows: not rerun
    assert len(ex) == 12 and set(ex["status"]) == {"ok"} and set(ex["arm"]) == {"control", "control+gan"}
    for (arm, f), g in ex.groupby(["arm", "minority_fraction"]):
        assert sorted(g["seed"]) == [1000, 1001, 1002] and f in (0.25, 0.5), (arm, f)
        assert g["config_id"].nunique() == 1 and g["config_id"].iloc[0] in set(confirm.loc[confirm["arm"] == arm,
                                                                                            "config_id"])
    full = confirm.groupby("seed")["n_train_positive"].first()
    for s, g in ex[ex["arm"] == "control"].groupby("seed"):
        n = g.set_index("minority_fraction")["n_train_positive"]
        assert 0 < n[0.25] < n[0.5] < full[s], (s, n)
    assert (ex["clf_steps"] == confirm["clf_steps"].iloc[0]).all()  # the full data's optimizer steps
    keys = ex.loc[ex["arm"] == "control+gan", "gan_key"]  # one GAN per seed and fraction, never the full data's
    assert keys.is_unique and not set(keys) & set(confirm_keys)
    assert set(ex.loc[ex["arm"] == "control+gan", "gan_key"]) == set(
        after.loc[(after["stage"] == "gan") & (after["sweep_phase"] == "exchange"), "gan_key"])
    from data_prep import read_manifest

    main = read_manifest(work / "data" / "manifest.parquet").df
    sub = {f: read_manifest(work / "data" / "exchange" / "seed_1000" / f"fraction_{f:g}" / "manifest.parquet").df
           for f in (0.25, 0.5)}
    assert set(sub[0.25]["image_id"]) < set(sub[0.5]["image_id"]) < set(main["image_id"])  # nested
    for f in sub:  # val and test: the very same images; majority train too
        assert set(sub[f].loc[sub[f]["split"] != "train", "image_id"]) == set(main.loc[main["split"] != "train",
                                                                                    "image_id"])
    assert "[exchange] 12/12 done" in out and "exchange rate (" in out and "fraction 0.25" in out
    assert json.loads((work / "sweep_state.json").read_text())["phase"] == "done"
    report = (work / "report" / "report.md").read_text()
    assert "Exchange rate" in report and (work / "report" / "exchange_rate.png").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(work / "report" / "headline.csv"), headline_before)

    # 2) the same sweep, driver SIGKILLed mid-way (its whole process group: Ray dies with it)
    proc = _run_sweep(["--smoke-test", "--storage-path", str(tmp_path / "b")], start_new_session=True)
    results = tmp_path / "b" / "smoke_test" / "results.parquet"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and (pd.read_parquet(results)["stage"] == "classifier").sum() >= 4:
            break
        time.sleep(1)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pd.read_parquet(results)
    before_ids = set(before.loc[before["stage"] == "classifier", "trial_id"])

    proc = _run_sweep(["--smoke-test", "--storage-path", str(tmp_path / "b"), "--resume"])
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    after = pd.read_parquet(results)
    clf = after[after["stage"] == "classifier"]
    assert clf["trial_id"].is_unique  # nothing repeated
    assert before_ids <= set(clf["trial_id"])  # nothing lost
    assert len(clf) == len(df[df["stage"] == "classifier"])  # the same number of trials as an unbroken sweep
    for arm in ("baseline", "control", "gan", "control+gan"):
        mine = clf[(clf["arm"] == arm) & (clf["sweep_phase"] == "confirm")]
        assert sorted(mine["seed"]) == [1000, 1000, 1001, 1001, 1002, 1002], arm
    assert (clf["sweep_phase"] == "controls").sum() == 2


def test_config_ids_survive_the_round_trip_through_parquet_and_json():
    """Seed repeats are grouped by config_id: a config read back from results.parquet must hash the same."""
    import json

    import numpy as np

    from sweeps.space import config_id, gan_key, repeat_configs

    cfg = {"arm": "gan", "seed": 0, "gan_loss": "wgan-gp", "gan_lr_g": 2e-4, "gan_lr_d": 1e-4, "gan_arch": "dcgan",
           "gan_augment": "diffaugment", "n_critic": 5, "conditional": False, "feature_matching": 1.0,
           "synthetic_mix": "single", "synthetic_ratio": 2.0, "clf_lr": 0.001, "imbalance_fix": "none", "augment": "none"}
    row = pd.DataFrame([cfg, {"arm": "baseline", "seed": 1}]).iloc[0].to_dict()  # NaN-filled, numpy types
    row = {k: (np.float64(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in row.items()}
    again = repeat_configs([json.loads(json.dumps(row, default=float))], [1])[0]
    assert config_id(again) == config_id(cfg) and again["seed"] == 1 and again["confirm_rank"] == 1
    assert gan_key({**again, "seed": 0}) == gan_key(cfg)
    # a pick saved before gan_arch / gan_augment existed (a resumed sweep's state): DCGAN, DiffAugment mapped
    old = {k: v for k, v in cfg.items() if k not in ("gan_arch", "gan_augment")}
    mapped = repeat_configs([{**old, "diffaugment": True}], [1])[0]
    assert (mapped["gan_arch"], mapped["gan_augment"]) == ("dcgan", "diffaugment")
    assert gan_key({**old, "diffaugment": True}) == gan_key(cfg) != gan_key({**old, "diffaugment": False})


def test_every_sweep_setting_is_a_flag_parsed_like_its_yaml_key(capsys):
    import dataclasses

    from sweeps import config as sc
    from sweeps.augment_ratio import parse_args
    from sweeps.config import SweepConfig

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    missing = [f.name for f in dataclasses.fields(SweepConfig) if "--" + f.name.replace("_", "-") not in help_text]
    assert not missing
    _, cli = parse_args(["--synthetic-ratios", "0.5,2", "--demo-counts", "50,10", "--no-early-stop",
                         "--conditional-choices", "false", "--positive", "none", "--clf-lr-grid", "1e-3"])
    assert cli == {"synthetic_ratios": (0.5, 2.0), "demo_counts": (50, 10), "early_stop": False,
                   "conditional_choices": (False,), "positive": None, "clf_lr_grid": (1e-3,)}
    cfg = sc.resolve({"synthetic_ratios": [1.0]}, cli)  # flags win over YAML, which wins over defaults
    assert cfg.synthetic_ratios == (0.5, 2.0) and cfg.gan_epochs == SweepConfig().gan_epochs
    for bad in (["--demo-counts", "50"], ["--gan-epochs", "ten"], ["--early-stop", "x"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(bad)
        assert exc.value.code == 2
    assert "expected 2 comma-separated values" in capsys.readouterr().err


def test_resume_reattaches_callbacks_because_restore_cannot_take_them():
    import inspect
    from types import SimpleNamespace

    from ray import tune

    from sweeps.augment_ratio import reattach_callbacks

    params = inspect.signature(tune.Tuner.restore).parameters
    assert "run_config" not in params and "callbacks" not in params  # if Ray adds one, use it instead
    tuner = SimpleNamespace(_local_tuner=SimpleNamespace(_run_config=tune.RunConfig(callbacks=[])))
    cb = tune.Callback()
    reattach_callbacks(tuner, [cb])
    assert tuner._local_tuner._run_config.callbacks == [cb]
    with pytest.raises(RuntimeError, match="pin ray 2.60"):
        reattach_callbacks(SimpleNamespace(), [cb])


def test_dry_run_prints_the_plan_and_refuses_trials_that_could_never_start(capsys):
    from sweeps.augment_ratio import main
    from sweeps.config import SweepConfig
    from sweeps.plan import plan, unschedulable

    p = plan(SweepConfig(num_samples=8, num_seeds=5, top_k=2, clf_lr_grid=(1e-3, 3e-3), mix_choices=("single",)))
    # baseline, C, 2 GAN configs, C + the rank-1 GAN; the controls search as many trials as the GAN search
    assert (p.search_trials, p.control_trials, p.confirm_trials, p.confirm_gan_trainings) == (8, 8, 5 * 2 * 5, 2 * 5)
    assert plan(SweepConfig(controls=("baseline",), top_k=1)).control_trials == 0
    cpu_node = [{"CPU": 2.0, "GPU": 0.0}]
    assert unschedulable(SweepConfig(), cpu_node) is None
    assert "no trial could ever start" in unschedulable(SweepConfig(gpus_per_trial=0.5), cpu_node)
    assert unschedulable(SweepConfig(cpus_per_trial=4), cpu_node) is not None
    # DDP: 2 workers of 1 CPU + the trial's 0.25 need 2.25 CPUs in all; each worker may sit on its own node
    ddp = SweepConfig(workers_per_trial=2, cpus_per_trial=1)
    assert unschedulable(ddp, cpu_node) is not None and unschedulable(ddp, cpu_node * 2) is None

    assert main(["--dry-run", "--num-seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "num_seeds                  3" in out and "confirm: 36 trial(s)" in out and "fits:" in out
    assert "controls: 8 trial(s)" in out and "control+gan" in out
    assert main(["--dry-run", "--gpus-per-trial", "0.5"]) == 2  # this CPU machine has no GPU
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["--gpus-per-trial", "0.5", "--name", "never"]) == 2  # a real run refuses before Ray starts
    assert "no trial could ever start" in capsys.readouterr().err


def test_a_size_the_gan_snaps_is_evaluated_at_the_asked_size(tmp_path):
    """X-ray 224 px: the GAN trains at 256 px, the KID reference and the classifier at 224 px. Every GAN
    trial used to fail at its first KID check ("synthetic images are (256, 256, 1) but the real reference is
    (224, 224, 1)"). Here 48 px (the GAN makes 64 px) with KID every epoch."""
    from trainables.gan.config import nearest_supported_size

    from sweeps.augment_ratio import trial_data
    from sweeps.config import SweepConfig
    from sweeps.trial import run_trial

    assert nearest_supported_size(48) != 48
    make_demo(tmp_path / "data", 60, 16, size=48)
    data = trial_data(tmp_path / "data" / "manifest.parquet", tmp_path / "work")
    s = SweepConfig(image_size=48, channels=3, gan_epochs=1, gan_batch_size=8, gan_width=8, gan_eval_every=1,
                    quality_domain_epochs=1, clf_epochs=1, clf_batch_size=32, synthetic_ratios=(1.0,))
    cfg = {"arm": "gan", "seed": 0, "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
           "n_critic": 1, "synthetic_ratio": 1.0, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}
    reports: list[dict] = []
    row = run_trial(cfg, s, data, "snap", report=reports.append)
    assert row["status"] == "ok", row.get("error")
    kids = [r["gan_kid"] for r in reports if r.get("phase") == "gan" and r.get("gan_kid") is not None]
    assert kids and all(np.isfinite(k) for k in kids) and np.isfinite(row["gan_kid"])


# ---------------------------------------------------------------- the shipped setups, run as a user would
def _setup_args(name: str) -> list[str]:
    """Each shipped config on the real data that matches it (../shared/data), else on the demo."""
    from real_data import REAL_DATA

    real = {"xray_224.yaml": REAL_DATA / "chest_xray_64.npz",       # resized to 224 px by data prep
            "defects_128_gray.yaml": REAL_DATA / "magnetic_tile_64.npz"}.get(name)
    if real is not None and real.is_file():
        return ["--data", str(real)]
    if name == "defects_128_gray.yaml":  # no demo default (its relabel names the magnetic-tile classes)
        return ["--data", "demo", "--relabel", "none", "--positive", "none"]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "sweeps" / "configs").glob("*.yaml")))
def test_each_shipped_config_runs_as_a_smoke_test(tmp_path, name):
    proc = _run_sweep(["--config", str(ROOT / "sweeps" / "configs" / name), "--smoke-test",
                       "--storage-path", str(tmp_path), *_setup_args(name)])
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    cfg = yaml.safe_load((ROOT / "sweeps" / "configs" / name).read_text())
    shrank = out.split("smoke test shrank:")[1].split("\n")[0]
    assert "num_samples" in shrank and "gan_epochs" in shrank
    if cfg.get("gpus_per_trial", 0) > 0:  # a GPU setup smoke-tests on this CPU machine
        assert f"gpus_per_trial {float(cfg['gpus_per_trial'])!r} -> 0.0" in shrank
    df = pd.read_parquet(tmp_path / f"{cfg['name']}_smoke" / "results.parquet")
    assert (df["image_size"].dropna() == cfg["image_size"]).all() and (df["channels"].dropna() == cfg["channels"]).all()
    gan = df[df["stage"] == "gan"]
    assert len(gan) and (gan["status"] != "failed").all(), gan[["status", "error"]]
    assert gan["gan_reference_cached"].all()  # the driver built the quality reference; no trial rebuilt it
    confirm = df[(df["stage"] == "classifier") & (df["sweep_phase"] == "confirm")]
    assert len(confirm) and (confirm["status"] == "ok").all(), confirm.loc[confirm["status"] != "ok", ["arm", "error"]]
    assert (tmp_path / f"{cfg['name']}_smoke" / "report" / "report.html").is_file()


def test_inception_weights_put_the_sweeps_fid_in_inception_space(tmp_path):
    """--inception-weights FILE: the sweep's FID/KID use that InceptionV3 (here a tiny TorchScript stand-in with
    the same (N, 3, 299, 299) -> (N, 2048) contract); rows say which feature space, and the report names it."""
    import torch
    from torch import nn

    from analysis.report import build_report
    from sweeps.augment_ratio import trial_data
    from sweeps.config import SweepConfig
    from sweeps.results import ResultsTable
    from sweeps.trial import run_trial

    class TinyTS(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2048, 8, stride=8)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    weights = tmp_path / "inception_ts.pt"
    torch.jit.script(TinyTS()).save(str(weights))
    make_demo(tmp_path / "data", 60, 16)
    data = trial_data(tmp_path / "data" / "manifest.parquet", tmp_path / "work")
    s = SweepConfig(image_size=32, gan_epochs=1, gan_batch_size=8, gan_width=8, gan_eval_every=1, clf_epochs=1,
                    clf_batch_size=32, synthetic_ratios=(1.0,), inception_weights=str(weights))
    cfg = {"arm": "gan", "seed": 0, "gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
           "n_critic": 1, "synthetic_ratio": 1.0, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}
    row = run_trial(cfg, s, data, "inc", report=lambda r: None)
    assert row["status"] == "ok" and row["gan_extractor"] == "inception" and np.isfinite(row["gan_fid"])
    assert list((tmp_path / "work" / "quality_cache").glob("real_ref_*inception*"))
    table = ResultsTable(tmp_path / "results.parquet", "inc", phase="confirm")
    table.add(row, "classifier")
    md = build_report(tmp_path / "results.parquet", tmp_path / "rep").read_text()
    assert "InceptionV3 from local weights" in md
    with pytest.raises(Exception, match="inception_weights: no such file"):
        SweepConfig(inception_weights=str(tmp_path / "missing.pt"))


@pytest.mark.slow
def test_time_budgets_stop_trials_and_the_sweep_and_say_so(tmp_path):
    """--trial-time-budget-s stops a trial at its first report past it; --time-budget-s ends the sweep. Ended
    trials are rows marked stopped with the reason; the sweep still finishes, prints its answer and the report."""
    # wgan-gp only: a bce/hinge smoke GAN can be stopped by the collapse detector (status failed) before the
    # 8 s budget on a fast machine; a WGAN critic's loss is not checked for collapse, so only the budget ends it
    proc = _run_sweep(["--smoke-test", "--storage-path", str(tmp_path), "--gan-epochs", "5000",
                       "--gan-losses", "wgan-gp", "--trial-time-budget-s", "8", "--time-budget-s", "60"])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    df = pd.read_parquet(tmp_path / "smoke_test" / "results.parquet")
    search = df[(df["stage"] == "classifier") & (df["sweep_phase"] == "search")]
    assert len(search) == 2 and (search["status"] == "stopped").all()
    assert search["error"].str.contains("trial time budget").all(), search["error"].tolist()
    assert "no search GAN configuration finished" in out and "GAN cannot be assessed" in out
    assert (tmp_path / "smoke_test" / "report" / "report.html").is_file()


@pytest.mark.slow
def test_python_api_runs_the_smoke_sweep_and_returns_the_headline(tmp_path):
    """`from sweeps import run_sweep`: a dict or YAML or SweepConfig plus overrides -> rows, headline, report."""
    from sweeps import run_sweep

    with pytest.raises(ValueError, match="no_such_folder"):  # bad input: the reason, raised before Ray starts
        run_sweep({"data": str(tmp_path / "no_such_folder")}, storage_path=str(tmp_path))
    with pytest.raises(TypeError, match="num_seed"):
        run_sweep(num_seed=3)
    out = run_sweep(None, smoke_test=True, storage_path=str(tmp_path), name="api")
    assert out.status == 0 and out.work_dir == tmp_path / "api"
    assert out.answer.startswith("**Answer:") and out.answer == out.headline.messages[0]
    confirm = out.results.query("stage == 'classifier' and sweep_phase == 'confirm'")
    assert len(confirm) == 24 and set(confirm["status"]) == {"ok"}
    assert out.report is not None and out.report.is_file() and out.report.name == "report.html"


def test_label_smoothing_is_searched_for_bce_gans_only_and_joins_the_gan_key():
    """Issue 24: the GAN's one-sided label smoothing reaches the sweep's BCE GANs as a search choice; it is part of
    the GAN's identity, and configs without it keep the ids they had."""
    import optuna

    from sweeps.config import SweepConfig
    from sweeps.gans import gan_config
    from sweeps.space import SearchSpace, config_id, gan_key

    sweep = SweepConfig(gan_losses=("bce", "hinge"), label_smoothing_choices=(0.9, 1.0))
    space = SearchSpace(sweep)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(1))
    seen = {}
    for _ in range(40):
        t = study.ask()
        consts = space(t)
        cfg = {**t.params, **consts}
        seen.setdefault(cfg["gan_loss"], set()).add(cfg["label_smoothing"])
        assert ("label_smoothing" in t.params) == (cfg["gan_loss"] == "bce")
        study.tell(t, [0.5, 0.5])
    assert seen == {"bce": {0.9, 1.0}, "hinge": {1.0}}
    base = {"arm": "gan", "seed": 0, "gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "gan_arch": "dcgan",
            "gan_augment": "ada", "n_critic": 1, "synthetic_mix": "single", "synthetic_ratio": 1.0, "clf_lr": 1e-3,
            "imbalance_fix": "none", "augment": "none"}
    smooth = {**base, "label_smoothing": 0.9}
    assert gan_config(smooth, sweep, "cpu").label_smoothing == 0.9 and gan_config(base, sweep, "cpu").label_smoothing == 1
    assert gan_key(smooth, sweep) != gan_key(base, sweep) == gan_key({**base, "label_smoothing": 1.0}, sweep)
    assert config_id(smooth) != config_id(base) == config_id({**base, "label_smoothing": 1.0})
    hinge = {**base, "gan_loss": "hinge"}  # no real-image target: a stray value changes nothing
    assert gan_config({**hinge, "label_smoothing": 0.9}, sweep, "cpu").label_smoothing == 1.0
    from data_prep.errors import ConfigError

    with pytest.raises(ConfigError, match="label_smoothing_choices"):
        SweepConfig(label_smoothing_choices=(1.2,))
