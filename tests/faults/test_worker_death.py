"""Fault 1: a Ray Train worker process is SIGKILLed mid-training (GAN and classifier).

The run must resume from its last reported checkpoint (not from epoch 0), finish, and end with the same
result as a run that was never killed at the same seed (CPU training here is bit-reproducible, so the
tolerance is tight). Every kill happens once: a marker file records it, so the restarted worker trains on.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KILL_AT = 3  # the worker dies on its way to report this epoch (epochs 1..KILL_AT-1 were checkpointed)
EPOCHS = 4


@pytest.fixture(scope="module")
def ray_with_kill_hook(tmp_path_factory):
    """Local 2-CPU Ray that can unpickle the tests' hooks (tests/train_hooks.py), and the kill's marker file."""
    import ray

    import train_hooks

    if ray.is_initialized():
        ray.shutdown()
    train_hooks.ship_by_value()
    marker = tmp_path_factory.mktemp("kill") / "classifier_worker_killed"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield marker
    ray.shutdown()


def _epoch_log_callback(path: Path):
    """A Ray Train callback (runs in the Train controller) appending every epoch reported by rank 0 to `path`;
    defined in a function so Ray pickles it by value."""
    import ray.train

    class EpochLog(ray.train.UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps({"epoch": metrics[0].get("epoch"), "final": bool(metrics[0].get("final")),
                                    "checkpoint": checkpoint is not None}) + "\n")

    return EpochLog()


def test_classifier_worker_killed_resumes_from_checkpoint_and_matches_unkilled_run(
        ray_with_kill_hook, fault_manifest, tmp_path):
    from train_hooks import kill_once_at
    from trainables.classifier.ray_train import run_classifier_ray

    marker = ray_with_kill_hook
    cfg = {"model": "small_cnn", "image_size": 32, "batch_size": 32, "num_epochs": EPOCHS, "lr": 1e-3, "seed": 0,
           "device": "cpu"}
    log = tmp_path / "reported.jsonl"
    # the injected fault: rank 0 SIGKILLs its own process on its way to report epoch KILL_AT, once
    killed = run_classifier_ray(fault_manifest, tmp_path / "killed", cfg, num_workers=1, name="killed",
                                callbacks=[_epoch_log_callback(log)], before_report=kill_once_at(KILL_AT, marker))
    assert marker.is_file(), "the fault was not injected"
    reported = [json.loads(line) for line in log.read_text().splitlines()]
    epochs = [r["epoch"] for r in reported if not r["final"]]
    # the kill hit epoch KILL_AT before its report; the restarted worker resumed after a checkpointed epoch
    restart = next(i for i in range(1, len(epochs)) if epochs[i] <= epochs[i - 1]) if epochs != sorted(
        set(epochs)) else len(epochs)
    assert epochs[:KILL_AT - 1] == list(range(1, KILL_AT)), epochs
    resumed_at = epochs[restart] if restart < len(epochs) else KILL_AT
    assert resumed_at > 1, f"training restarted from epoch 0: reported epochs {epochs}"
    assert epochs[-1] == EPOCHS and reported[-1]["final"]
    assert len(epochs) < KILL_AT - 1 + EPOCHS, f"epochs repeated from zero: {epochs}"

    plain = run_classifier_ray(fault_manifest, tmp_path / "plain", cfg, num_workers=1, name="plain")
    assert [r["epoch"] for r in killed["history"]] == list(range(1, EPOCHS + 1))
    for a, b in zip(killed["history"], plain["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-6)
    for split in ("val", "test"):
        for k in ("f1", "sensitivity", "specificity", "roc_auc"):
            assert killed[split][k] == pytest.approx(plain[split][k], abs=1e-6), (split, k)
    assert killed["best_epoch"] == plain["best_epoch"]
    # retention: Ray Train tracks at most 2 checkpoints (num_to_keep); the checkpoint a restarted worker resumed
    # from stays on disk as well (Ray does not delete it), so the bound is 2 + one per restart
    train_run = tmp_path / "killed" / "ray" / "killed"
    snapshot = json.loads((train_run / "checkpoint_manager_snapshot.json").read_text())
    assert len(snapshot["checkpoint_results"]) <= 2
    assert len([p for p in train_run.glob("checkpoint_*") if p.is_dir()]) <= 2 + 1
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["best.pt"]


def _killing_evaluator(log: str, marker: str, kill_at: int):
    """GAN `evaluate` hook (public API of run_gan_ray, runs on rank 0 each epoch): logs the epoch and SIGKILLs
    its own worker process at `kill_at`, once."""
    def evaluate(sample_fn, epoch):
        import os
        import signal

        with open(log, "a") as f:
            f.write(f"{epoch}\n")
        if epoch == kill_at and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return {}
    return evaluate


def test_gan_worker_killed_resumes_from_checkpoint_and_matches_unkilled_run(ray_with_kill_hook, fault_manifest,
                                                                           tmp_path):
    from trainables.gan.run_files import load_checkpoint
    from trainables.gan.ray_train import run_gan_ray

    cfg = {"image_size": 32, "ngf": 8, "ndf": 8, "batch_size": 8, "num_epochs": EPOCHS, "checkpoint_every": 1,
           "sample_every": EPOCHS, "eval_every": 1, "keep_checkpoints": 2, "device": "cpu", "seed": 0}
    log, marker = tmp_path / "epochs_killed.log", tmp_path / "gan_worker_killed"
    run = tmp_path / "killed"
    evaluate = _killing_evaluator(str(log), str(marker), KILL_AT)
    # one call: Ray Train's FailureConfig restarts the killed worker, which resumes from the last checkpoint
    killed = run_gan_ray(fault_manifest, run, cfg, num_workers=1, evaluate=evaluate)
    assert marker.is_file(), "the fault was not injected"
    epochs = [int(x) for x in log.read_text().split()]
    assert epochs[:KILL_AT] == list(range(1, KILL_AT + 1)), epochs
    resumed_at = epochs[KILL_AT]
    assert 1 < resumed_at <= KILL_AT, f"GAN training restarted from epoch 0: epochs seen {epochs}"
    assert epochs[KILL_AT:] == list(range(resumed_at, EPOCHS + 1))
    assert killed["status"] == "finished" and killed["epochs"] == EPOCHS

    plog = tmp_path / "epochs_plain.log"
    plain = run_gan_ray(fault_manifest, tmp_path / "plain", cfg, num_workers=1,
                        evaluate=_killing_evaluator(str(plog), str(marker), kill_at=-1))
    for k in ("loss_D", "loss_G", "D_x", "D_G_z"):
        assert killed[k] == pytest.approx(plain[k], rel=1e-5, abs=1e-7), k
    a, b = load_checkpoint(killed["checkpoint"]), load_checkpoint(plain["checkpoint"])
    assert a["epoch"] == b["epoch"] == EPOCHS
    for name in a["G_ema"]:
        assert (a["G_ema"][name].float() - b["G_ema"][name].float()).abs().max() <= 1e-5, name
    # retention: at most keep_checkpoints files in RUN/checkpoints and Ray checkpoints in the Train run
    assert len(list((run / "checkpoints").glob("checkpoint_*.pt"))) <= 2
    assert len([p for p in (run / "ray" / "gan").glob("checkpoint_*") if p.is_dir()]) <= 2 + 1  # + resumed-from
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))  # resumed epochs not duplicated
    assert os.path.exists(run / "metrics.json")
