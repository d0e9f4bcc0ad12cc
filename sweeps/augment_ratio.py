"""Does GAN augmentation of the minority class help a classifier on REAL held-out images? The main command.

    python sweeps/augment_ratio.py                         # full demo sweep on a local Ray (~16 min, 2 CPUs)
    python sweeps/augment_ratio.py --smoke-test            # every stage, tiny (~1 min)
    python sweeps/augment_ratio.py --config sweeps/configs/skin_lesion_64.yaml --data ~/isic
    python sweeps/augment_ratio.py --address auto --storage-path s3://bucket/sweeps --gpus-per-trial 0.25
    python sweeps/augment_ratio.py --resume                # continue an interrupted sweep of the same --name

Phases (each a Ray Tune run; results.parquet grows as trials finish; real test metrics never choose anything):
  1. search  : OptunaSearch, multi-objective on real-val minority F1 and sensitivity, over GAN loss, G/D LRs,
               architecture, augmentation of D's inputs (DiffAugment / ADA), n_critic (wgan-gp), synthetic ratio,
               the fix / augmentation the GAN is stacked on, classifier LR; ASHA stops weak GANs on KID. Each GAN
               config is trained once; a GAN that fails the quality gate feeds no classifier (status "gated"). The
               picks' GANs are retrained on guard seeds and must pass the gate there too (sweeps/selection.py).
  2. controls: as many trials, no GAN: fix, augmentation, knobs, LR (sweeps/controls.py) -> the best control C.
  3. confirm : baseline, C, the top-k GAN configs (rank 1 = the search's best on val) and C + the rank-1 GAN, x
               the same classifier-LR grid x the same fresh seeds (every seed retrains its GAN), every arm the
               same optimizer steps. Each arm's LR is chosen on val; the verdict is a paired test.
  4. exchange: --exchange-rate: C and the headline arm on real-minority subsets -> their worth (sweeps/exchange.py).
Ends by printing the real-test numbers of the arms and writing <storage>/<name>/results.parquet and report/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python sweeps/augment_ratio.py` from a checkout

from data_prep.errors import ConfigError, DataError, LeakageError  # noqa: E402
from sweeps import config as sweep_config  # noqa: E402
from sweeps.answer import disk_use, finish, summarize  # noqa: E402
from sweeps.curation_scorers import build_curation_scorers  # noqa: E402  issue 24: before any trial
from sweeps.claim import claim_sweep, release_claims, save_state  # noqa: E402  one driver per sweep (the store's claim)
from sweeps.config import SweepConfig  # noqa: E402
from sweeps.exchange import prepare as prepare_exchange, resume_phase  # noqa: E402  the --exchange-rate phase
from sweeps.data import prepare_data, trial_data  # noqa: E402,F401  (trial_data: tests and bench use it here too)
from sweeps.plan import DDP_TRIAL_CPU  # noqa: E402  what a DDP trial's own (coordinating) process reserves
from sweeps.selection import confirmed_picks, pick_best  # noqa: E402,F401  (pick_best: tests use it here too)
from sweeps.external import arms  # noqa: E402  the external sets that are arms (sweep_state.json)
from sweeps.quality import build_quality_reference  # noqa: E402  the real reference, before any trial
from sweeps.storage import is_remote, sweep_store, tune_storage  # noqa: E402,F401  (tune_storage: its old home)


def parse_args(argv: list[str] | None) -> tuple[dict, dict]:
    """-> (values from --config YAML, values of the flags given). Every SweepConfig field is a flag
    (sweeps/flags.py generates them from the dataclass and its comments, so they cannot drift)."""
    from sweeps.flags import add_config_flags

    p = argparse.ArgumentParser(prog="python sweeps/augment_ratio.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML file of sweep settings (keys = the field names below, with _ or -)")
    p.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    p.add_argument("--verbose", action="store_true", help="print Tune's status tables and every trial process's "
                   "output (default: one line per trial end, GAN warnings once per GAN, a progress line every 30 s)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved settings, the planned trials and "
                   "GAN trainings per phase and whether the trials fit this machine (or --address cluster); "
                   "start nothing (exit 2 if no trial could ever be scheduled)")
    add_config_flags(p, SweepConfig)
    args = vars(p.parse_args(argv))
    yaml_values = sweep_config.load_yaml(args.pop("config")) if "config" in args else {}
    return yaml_values, args


# A finished trial's process runs the next trial: importing torch and (through the first optimizer) torch._dynamo
# costs a fresh process ~3 s before its first step on 2 CPUs. bench/sweep.py --cpu-small --rounds 3: 6 trials
# took 9.2 s of Tuner.fit reused vs 19.2 s with a process per trial. Tune falls back to a new process when the
# old trial's thread does not stop within TUNE_FUNCTION_THREAD_TIMEOUT_S.
REUSE_TRIAL_PROCESSES = True
# the console: False = sweeps/progress.py's lines; True = Tune's tables and the trial processes' output (--verbose)
VERBOSE = False


def concurrency(cfg: SweepConfig, cap=None) -> int:
    """Trials at once: --max-concurrent if given; else, on a cluster, what its autoscaler can grow to (so
    pending trials make it add nodes); else what this Ray has now. Says which (sweeps/capacity.py). cap: the
    Capacity the sweep already probed (None: probe now)."""
    from sweeps.plan import choose_concurrency, probe

    n, source = choose_concurrency(cfg, cap if cap is not None else probe(cfg))
    print(f"concurrency: {n} trial(s) at once, from {source}", flush=True)
    return n


def reattach_callbacks(tuner, callbacks: list) -> None:
    """Ray 2.60's Tuner.restore takes no run_config or callbacks (Tune does not restore callbacks), so the only
    way to keep writing results.parquet on --resume is the restored tuner's private run config."""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    if run_config is None or not hasattr(run_config, "callbacks"):
        raise RuntimeError("this Ray version's restored Tuner has no _local_tuner._run_config.callbacks; "
                           "--resume cannot record results: pin ray 2.60 (pyproject.toml) or update reattach_callbacks")
    run_config.callbacks = list(callbacks)


def run_phase(cfg: SweepConfig, phase: str, data, table, tune_config, param_space: dict | None,
              deadline: float = 0.0) -> object:
    from ray import tune

    from sweeps.results import ResultsCallback, reconcile
    from sweeps.trial import trainable

    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    if cfg.workers_per_trial > 1:  # the TorchTrainer inside the trial reserves the workers itself
        resources = {"cpu": DDP_TRIAL_CPU, "gpu": 0}
    fn = tune.with_resources(tune.with_parameters(trainable, sweep=cfg, data=data), resources)
    name = f"{cfg.name}-{phase}"
    storage, fs = tune_storage(cfg)
    exp_path = f"{storage.rstrip('/')}/{name}"
    table.phase = phase
    callbacks = [ResultsCallback(table, cfg.trial_time_budget_s, deadline)]
    if not VERBOSE:
        from sweeps.progress import ProgressCallback

        callbacks.append(ProgressCallback(phase, trial_count(tune_config, param_space)))
    stop = {"time_total_s": cfg.trial_time_budget_s} if cfg.trial_time_budget_s else None
    if cfg.resume and tune.Tuner.can_restore(exp_path, storage_filesystem=fs):
        print(f"[{phase}] resuming {exp_path}", flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable=fn, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False, param_space=param_space, storage_filesystem=fs)
        reattach_callbacks(tuner, callbacks)
    else:
        tuner = tune.Tuner(fn, param_space=param_space or {}, tune_config=tune_config,
                           run_config=tune.RunConfig(name=name, storage_path=storage, storage_filesystem=fs,
                                                     callbacks=callbacks, stop=stop,
                                                     failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                                     verbose=1 if VERBOSE else 0))
    grid = tuner.fit()
    added = reconcile(table, grid)
    if added:
        print(f"[{phase}] recovered {added} finished trial(s) missing from results.parquet", flush=True)
    return grid


def trial_count(tune_config, param_space: dict | None) -> int:
    """Trials a phase runs: num_samples x the grid's size (the confirm phase's grid of configs)."""
    grid = (param_space or {}).get("trial")
    n = len(grid["grid_search"]) if isinstance(grid, dict) and "grid_search" in grid else 1
    return int(getattr(tune_config, "num_samples", 1) or 1) * n


def time_left(deadline: float) -> float | None:
    """Seconds of the sweep's budget left (None: no budget), for TuneConfig(time_budget_s=...)."""
    return max(1.0, deadline - time.time()) if deadline else None


def search_phase(cfg: SweepConfig, data, table, max_conc: int, deadline: float = 0.0):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.space import OBJECTIVES, SearchSpace

    searcher = OptunaSearch(space=SearchSpace(cfg), metric=list(OBJECTIVES), mode=["max", "max"], seed=cfg.split_seed)
    scheduler = None
    if cfg.early_stop and cfg.gan_eval_every:
        # max_t past the last GAN epoch: ASHA stops a trial that reaches max_t, and the classifier follows
        scheduler = ASHAScheduler(time_attr="gan_epoch", metric="gan_kid", mode="min",
                                  grace_period=cfg.gan_eval_every, max_t=cfg.gan_epochs + 1, reduction_factor=2)
    tc = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=cfg.num_samples,
                         max_concurrent_trials=max_conc, reuse_actors=REUSE_TRIAL_PROCESSES,
                         time_budget_s=time_left(deadline))
    return run_phase(cfg, "search", data, table, tc, None, deadline)


def controls_phase(cfg: SweepConfig, data, table, max_conc: int, deadline: float = 0.0) -> dict | None:
    """The controls search (sweeps/controls.py) -> the best control C on validation (None: none allowed/finished)."""
    from sweeps import controls

    if controls.has_controls(cfg):
        print(controls.search_line(cfg), flush=True)
        tc = controls.tune_config(cfg, max_conc, REUSE_TRIAL_PROCESSES, time_left(deadline))
        run_phase(cfg, controls.PHASE, data, table, tc, None, deadline)
    control = controls.pick_control(table.frame(), cfg)
    print(controls.describe(control, cfg), flush=True)
    return control


def confirm_phase(cfg: SweepConfig, data, table, max_conc: int, best: list[dict], control: dict | None = None,
                  deadline: float = 0.0, externals: list[dict] = ()):
    from sweeps.controls import confirm_configs, confirm_line

    configs = confirm_configs(cfg, best, control, externals)
    print(confirm_line(cfg, configs, len(best), bool(control), data.n_train_real, externals), flush=True)
    return grid_phase(cfg, "confirm", data, table, max_conc, configs, deadline)


def grid_phase(cfg: SweepConfig, phase: str, data, table, max_conc: int, configs: list, deadline: float):
    """A phase that runs a fixed list of whole trial configs (confirm, exchange) once each; none: nothing to run."""
    from ray import tune

    if not configs:
        return None
    tc = tune.TuneConfig(num_samples=1, max_concurrent_trials=max_conc, reuse_actors=REUSE_TRIAL_PROCESSES,
                         time_budget_s=time_left(deadline))
    return run_phase(cfg, phase, data, table, tc, {"trial": tune.grid_search(configs)}, deadline)


def start_ray(cfg: SweepConfig, cap=None) -> int:
    """Connect to / start Ray with this checkout on the workers' path; -> trials at once. Tune settings that
    depend on it are set here too."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Trial workers import this checkout's packages even when it is not pip-installed.
    root = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    # "local": a new Ray of our own; with no address ray.init would join whatever Ray already runs on this machine
    env_vars = {"PYTHONPATH": pythonpath}
    if cfg.s3_endpoint:  # pyarrow reads it on every process: our store, Tune's and Train's storage alike
        os.environ["AWS_ENDPOINT_URL"] = env_vars["AWS_ENDPOINT_URL"] = cfg.s3_endpoint
    ray.init(address=cfg.address or "local", ignore_reinit_error=True, runtime_env={"env_vars": env_vars},
             log_to_driver=VERBOSE)  # quiet: a trial's warnings and errors reach the console through its row
    max_conc = concurrency(cfg, cap)
    # With a search algorithm Tune keeps one pending trial at a time by default, which serialises short
    # trials; let as many be pending as may run at once.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max_conc)
    # A trial reports in phases (GAN epochs with KID, classifier epochs, then the final val/test row);
    # only the final row carries the search objectives, so Tune must not demand them in every result.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Snapshot the experiment state often (it is small): a killed driver then resumes with every
    # finished trial known, instead of re-running trials finished since the last snapshot.
    # Remote storage: every snapshot is an upload, so every 30 s (our own results.parquet and sweep_state.json,
    # which --resume reads first, are published as each trial ends).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "30" if is_remote(cfg.storage_path) else "2")
    if is_remote(cfg.storage_path):
        from sweeps.leases import start_leases

        start_leases(cfg.sweep_dir, cfg.lease_ttl_s)  # the cross-node GAN cache's leases, on the driver's node
    return max_conc


def run_phases(cfg: SweepConfig, data, table, state: dict, state_path: Path, max_conc: int,
               deadline: float = 0.0) -> None:
    """Search, controls, confirm, exchange (--exchange-rate), each resumable: sweep_state.json records the phase reached,
    the search's picks and the best control C, each saved before the next phase starts. deadline (time.time(), 0 =
    none): the sweep's time budget; a phase it cuts short is left to --resume (no C from a cut controls search)."""
    if state["phase"] == "search" and not cfg.train_gan:
        print("[search] no GAN search (train_gan false): the external set(s) are judged alone", flush=True)
        state.update(phase="controls", best=[])
        write_state(cfg, state, state_path)
    if state["phase"] == "search":
        search_phase(cfg, data, table, max_conc, deadline)
        best = confirmed_picks(cfg, data, table, max_conc)  # on val; each pick's GAN passed the gate on every seed
        from sweeps.space import TRIAL_KEYS

        state.update(phase="controls", best=[{k: b.get(k) for k in (*TRIAL_KEYS, "config_id", "val_f1",
                                                                      "val_sensitivity")} for b in best])
        write_state(cfg, state, state_path)
    state["phase"] = resume_phase(cfg, state["phase"], table.frame())  # --exchange-rate: opt-in, addable later
    for phase, after in (("controls", "confirm"), ("confirm", "exchange" if cfg.exchange_rate else "done"),
                         ("exchange", "done")):
        if state["phase"] != phase:
            continue
        if deadline and time.time() >= deadline:
            print(f"[{phase}] not started: the sweep's time budget ({cfg.time_budget_s:g} s) is spent; run again "
                  "with --resume and a larger --time-budget-s to finish", flush=True)
            return
        best, control = state.get("best", []), state.get("control")
        out = (controls_phase(cfg, data, table, max_conc, deadline) if phase == "controls" else
               confirm_phase(cfg, data, table, max_conc, best, control, deadline,
                             **({"externals": ext} if (ext := arms(state)) else {})) if phase == "confirm" else
               grid_phase(cfg, "exchange", data, table, max_conc,  # C and the headline arm on minority subsets
                          prepare_exchange(cfg, data, table.frame(), best, control), deadline))
        if deadline and time.time() >= deadline - 1:  # cut by the budget: --resume runs the trials left
            print(f"[{phase}] the sweep's time budget ({cfg.time_budget_s:g} s) ended the phase; trials it stopped "
                  "are rows marked stopped; --resume with a larger --time-budget-s runs the rest", flush=True)
            return
        state.update(phase=after, **({"control": out} if phase == "controls" else {}))
        write_state(cfg, state, state_path)


def setup(cfg: SweepConfig, cap) -> tuple[SweepConfig, Path, object, dict, Path]:
    """Work dir, data split, sweep state and what trials know of the data; raises ConfigError / DataError / LeakageError.
    cap: where the trials will run (sweeps.plan.probe)."""
    from sweeps.plan import check_fits

    check_fits(cfg, cap)  # a trial no node (type) can ever hold would wait PENDING forever
    from sweeps.artifacts import stored_data
    from sweeps.data import write_fold_manifests

    work, store = cfg.local_work_dir, sweep_store(cfg, cfg.local_work_dir)
    state_path = work / "sweep_state.json"
    home = claim_sweep(cfg, work, store)  # a held store without --resume, a live driver: refused; state+rows merged
    stored = stored_data(store) if cfg.resume else None  # remote --resume: the split from the store, not --data
    manifest = stored[0] if stored else prepare_data(cfg, work)
    state = json.loads(state_path.read_text()) if state_path.exists() else {"phase": "search"}
    state.setdefault("config", json.loads(json.dumps(cfg.__dict__, default=list)))
    write_state(cfg, state, state_path)
    folds = stored[1] if stored else write_fold_manifests(manifest, work, cfg.folds, cfg.split_seed,
                                                          cfg.resume) if cfg.folds else []
    data = trial_data(manifest, work, folds)  # --folds K: the confirm phase's fold manifests, written once
    if data.gan_reference_split != "val":
        from sweeps.trial import MIN_VAL_REFERENCE_IMAGES

        print(f"note: validation holds {data.n_val_positive} real minority image(s), fewer than "
              f"{MIN_VAL_REFERENCE_IMAGES}: GAN quality (KID/FID) is measured against the training images instead "
              f"(labelled gan_kid_reference=train), which rewards memorisation, so ASHA does not prune on it "
              f"(early stopping off)", flush=True)
        cfg = replace(cfg, early_stop=False)
    if cfg.gan_eval_every:
        for i, d in enumerate((data, *data.folds)):  # each fold's reference: its own val part, not its GAN's
            build_quality_reference(cfg, d, f"fold {i - 1}'s trials" if i else "")
    if cfg.external:  # sets made elsewhere: imported, audited (quality, leaks) and judged once, before any trial
        from sweeps.external import import_externals

        state["external"] = import_externals(cfg, data, store)
        write_state(cfg, state, state_path)
    build_curation_scorers(cfg, data, store, bool(stored))  # the off-class scorer, once per split / fold
    if store.remote:  # trials on any node get the data, the reference and weights from the store, not this disk
        from sweeps.artifacts import publish_for_cluster, publish_weights

        data = publish_for_cluster(data, store, cfg.image_size, cfg.channels, bool(stored), home.run_id)
        cfg = publish_weights(cfg, store)
    return cfg, work, data, state, state_path


def write_state(cfg: SweepConfig, state: dict, state_path: Path) -> None:
    """sweep_state.json (phase reached, the search's picks) on the driver's disk (atomically) and in remote storage."""
    save_state(sweep_store(cfg, state_path.parent), state, state_path)


def main(argv: list[str] | None = None) -> int:
    try:
        yaml_values, cli = parse_args(argv)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(yaml_values, cli)[0]


def run(yaml_values: dict, cli: dict) -> tuple[int, Path | None]:
    """The sweep from YAML values and flag values (SweepConfig field names; plus no_report, dry_run, verbose)
    -> (exit status, the sweep's local work folder: results.parquet and report/ are there; None if it never
    started). The command and the Python API (sweeps.api.run_sweep) both come here."""
    global VERBOSE
    t0 = time.time()
    cli = dict(cli)
    no_report, dry = cli.pop("no_report", False), cli.pop("dry_run", False)
    VERBOSE = bool(cli.pop("verbose", False))
    if not VERBOSE:
        from sweeps.progress import quiet_console

        quiet_console()
    try:
        cfg = sweep_config.resolve(yaml_values, cli).with_absolute_paths()
        from sweeps.plan import dry_run, probe

        if dry:
            return dry_run(cfg), None

        cap = probe(cfg)  # this machine, or what the cluster at --address can grow to: looked up once
        cfg, work, data, state, state_path = setup(cfg, cap)
    except (DataError, ConfigError, LeakageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        release_claims()  # a claim taken before the error: the same command may run again at once
        return 2, None
    import ray

    from sweeps.results import ResultsTable

    table = ResultsTable(work / "results.parquet", cfg.name, store=sweep_store(cfg, work))
    max_conc = start_ray(cfg, cap)
    print(f"sweep {cfg.name!r}: {max_conc} trial(s) at once; work dir {work}", flush=True)
    try:
        run_phases(cfg, data, table, state, state_path, max_conc, t0 + cfg.time_budget_s if cfg.time_budget_s else 0.0)
    finally:
        if is_remote(cfg.storage_path):  # the lease actor is detached: it would outlive the sweep
            from sweeps.leases import stop_leases

            stop_leases(cfg.sweep_dir)
    ray.shutdown()
    finish(cfg, table, work, no_report)  # the answer printed, the report written
    release_claims()  # the next driver of this sweep may start now
    print(f"disk used by this sweep: {disk_use(work) / 1e6:.1f} MB in {work}; took {(time.time() - t0) / 60:.1f} min")
    return 0, work


if __name__ == "__main__":
    sys.exit(main())
