"""The sweep's console while it runs (sweeps/progress.py): one line per trial end with its status and key metric or
reason, a GAN's warnings once per GAN key, and a progress line at most every 30 s with an estimate of time left."""
from __future__ import annotations

from sweeps.progress import ProgressLog, describe_trial


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_lines_per_trial_warnings_once_per_gan_and_throttled_progress():
    out, clock = [], Clock()
    log = ProgressLog("confirm", 4, out.append, every_s=30, clock=clock)
    row = {"arm": "control+gan", "gan_loss": "hinge", "synthetic_ratio": 2.0, "imbalance_fix": "class_weight",
           "augment": "none", "seed": 1001, "clf_lr": 0.001, "status": "ok", "val_f1": 0.71, "gan_key": "abc",
           "gan_trained_here": True, "gan_warnings": "synthetic diversity is 0.04x: possible mode collapse"}
    clock.t = 10
    log.finished(row, seconds=42)
    log.finished({**row, "gan_trained_here": False, "val_f1": 0.65})  # same GAN, same warning: not again
    log.tick(running=2)  # 10 s since the start: too soon
    clock.t = 40
    log.tick(running=2)
    log.finished({**row, "status": "failed", "error": "GAN diverged: loss_D nan at epoch 37\ntraceback..."})
    assert out[0] == ("[confirm] trial 1/4 ok: control+gan hinge ratio 2 class_weight seed 1001 lr 0.001, "
                      "val F1 0.710 (GAN trained, 42 s)")
    assert out[1] == "GAN abc: synthetic diversity is 0.04x: possible mode collapse"
    assert out[2].endswith("val F1 0.650 (GAN reused)")
    assert out[3] == "[confirm] 2/4 done, 2 running, 0 failed, best val F1 0.710, ~1 min left"
    assert out[4] == ("[confirm] trial 3/4 failed: control+gan hinge ratio 2 class_weight seed 1001 lr 0.001: "
                      "GAN diverged: loss_D nan at epoch 37")
    assert len(out) == 5
    log.tick(running=0, force=True)
    assert out[-1].startswith("[confirm] 3/4 done, 0 running, 1 failed")


def test_describe_trial_names_the_arm_and_its_settings():
    assert describe_trial({"arm": "baseline", "clf_lr": 3e-3}) == "baseline lr 0.003"
    assert describe_trial({"arm": "control", "imbalance_fix": "oversample", "augment": "standard", "seed": 1000,
                           "clf_lr": 1e-3}, "confirm") == "control oversample+standard seed 1000 lr 0.001"


def test_tune_tables_only_with_verbose(monkeypatch, tmp_path):
    """Quiet by default: Tune verbose 0 and the progress callback; --verbose: Tune's tables, no progress lines."""
    from ray import tune

    from sweeps import augment_ratio as ar
    from sweeps.config import SweepConfig
    from sweeps.progress import ProgressCallback

    seen = []

    class FakeTuner:
        def __init__(self, fn, param_space=None, tune_config=None, run_config=None):
            seen.append(run_config)

        def fit(self):
            return []

    monkeypatch.setattr(tune, "Tuner", FakeTuner)
    monkeypatch.setattr("sweeps.results.reconcile", lambda table, grid: 0)
    table = type("T", (), {"phase": ""})()
    cfg = SweepConfig(storage_path=str(tmp_path))
    grid = {"trial": tune.grid_search([{"a": 1}, {"a": 2}, {"a": 3}])}
    for verbose in (False, True):
        monkeypatch.setattr(ar, "VERBOSE", verbose)
        ar.run_phase(cfg, "confirm", None, table, tune.TuneConfig(num_samples=1), grid)
    quiet, loud = seen
    assert quiet.verbose == 0 and loud.verbose == 1
    progress = [c for c in quiet.callbacks if isinstance(c, ProgressCallback)]
    assert len(progress) == 1 and progress[0].log.total == 3
    assert not [c for c in loud.callbacks if isinstance(c, ProgressCallback)]
    assert ar.parse_args(["--verbose"])[1]["verbose"] is True


def test_a_trial_stopped_before_its_final_report_gets_its_line(capsys):
    """ASHA stops a GAN trial mid-training: no final result reaches Tune, yet the console says it ended, and how."""
    from types import SimpleNamespace

    from sweeps.progress import ProgressCallback

    cb = ProgressCallback("search", total=2, every_s=1e9)
    cfg = {"trial": {"arm": "gan", "gan_loss": "bce", "synthetic_ratio": 2.0, "clf_lr": 1e-3}}
    done, cut = SimpleNamespace(trial_id="a", config=cfg), SimpleNamespace(trial_id="b", config=cfg)
    for t in (done, cut):
        cb.on_trial_start(0, [], t)
        cb.on_trial_result(0, [], t, {"phase": "gan", "gan_kid": 2.5})
    cb.on_trial_result(0, [], done, {**cfg["trial"], "phase": "final", "status": "ok", "val_f1": 0.7})
    cb.on_trial_complete(0, [], done)
    cb.on_trial_complete(0, [], cut)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[search] trial 1/2 ok: gan bce ratio 2")
    assert lines[1].startswith("[search] trial 2/2 stopped: gan bce ratio 2") and "gan phase, last KID 2.500" in lines[1]
    cb.on_experiment_end([])
    assert capsys.readouterr().out.strip() == "[search] 2/2 done, 0 running, 0 failed, 1 stopped, best val F1 0.700"
