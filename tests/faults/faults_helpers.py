"""Helpers of the fault-injection suite: tiny trial settings and trial configs."""
from __future__ import annotations

from pathlib import Path


def tiny_settings(manifest: Path, work: Path, **over) -> dict:
    """Keyword arguments of sweeps.trial.trainable (sweep=, data=) for a trial that finishes in seconds (GAN
    width 8, small_cnn, 32 px); `over` sets SweepConfig fields. Pass them on with tune.with_parameters."""
    from sweeps.config import SweepConfig
    from sweeps.trial import TrialData

    sweep = SweepConfig(**{"image_size": 32, "gan_epochs": 1, "gan_batch_size": 8, "gan_width": 8, "gan_eval_every": 0,
                           "clf_epochs": 1, "clf_batch_size": 32, "synthetic_ratios": (1.0,), **over})
    return {"sweep": sweep, "data": TrialData(str(manifest), str(work))}


def inject_fault(config) -> None:
    """sweeps.trial's `before` injection point for the fault tests: a `test_fault` key in a trial's config makes
    it fail the way a real trial can, to prove the sweep records the reason and carries on."""
    fault = config.get("test_fault")
    if not fault:
        return
    if fault == "exception":
        raise RuntimeError("injected test fault: an exception inside the trial")
    if fault == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected test fault)")
    raise ValueError(f"unknown test_fault {fault!r}; valid: ['exception', 'oom']")


BASELINE = {"arm": "baseline", "seed": 0, "gan_loss": "", "gan_lr_g": None, "gan_lr_d": None, "diffaugment": False,
            "n_critic": 0, "synthetic_ratio": 0.0, "clf_lr": 1e-3, "imbalance_fix": "none", "augment": "none"}
GAN = {**BASELINE, "arm": "gan", "gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "diffaugment": False,
       "n_critic": 1, "synthetic_ratio": 1.0}


def run_losing_a_node(settings: dict, table, storage: str, name: str, checkpoint_epoch, timeout: float = 300):
    """Run one baseline trial (the real sweeps.trial.trainable under Tune, max_failures=1) on a local multi-node
    Ray whose head has no CPUs: the trial lands on worker node A. Once checkpoint_epoch() returns an epoch (a
    checkpoint the retry can find exists), node A is removed, the epoch read again (its writer is dead now),
    and node B added, as an autoscaler would.
    -> (the ResultGrid, the checkpoint's epoch or None if A was never removed, the classifier epochs reported,
    how many times Tune recovered the trial)."""
    import threading
    import time

    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from sweeps.results import ResultsCallback
    from sweeps.trial import trainable

    seen = {"epochs": [], "recovered": 0}

    class EpochLog(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("phase") == "classifier":
                seen["epochs"].append(int(result["clf_epoch"]))

        def on_trial_recover(self, iteration, trials, trial, **info):
            seen["recovered"] += 1

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    node_a = cluster.add_node(num_cpus=1)
    removed, outcome = {}, {}
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        fn = tune.with_resources(tune.with_parameters(trainable, **settings), {"cpu": 1})
        tuner = tune.Tuner(fn, param_space={"trial": tune.grid_search([BASELINE])},
                           tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                                     callbacks=[ResultsCallback(table), EpochLog()],
                                                     failure_config=tune.FailureConfig(max_failures=1)))
        # the sweep driver runs in a thread; this (main) thread plays the cluster (Ray adds nodes from it only)
        driver = threading.Thread(target=lambda: outcome.update(grid=tuner.fit()), daemon=True)
        driver.start()
        deadline = time.time() + timeout
        while driver.is_alive() and time.time() < deadline and not removed:
            if checkpoint_epoch() is not None:
                # remove first: starting node B takes seconds, in which a fast trial could finish on A
                cluster.remove_node(node_a, allow_graceful=False)  # node A and the trial's process die
                removed["epoch"] = checkpoint_epoch()  # read again now that its writer is dead
                cluster.add_node(num_cpus=1)
            time.sleep(0.1)
        driver.join(timeout=timeout)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return outcome.get("grid"), removed.get("epoch"), seen["epochs"], seen["recovered"]
