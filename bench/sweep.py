"""Benchmark: GAN images/s of one device under the sweep (trials packed side by side) vs one naive trial,
and the fixed overhead per trial from Tune's launch to its first training step.

    python bench/sweep.py                       # GPU: 4 trials x 0.25 GPU, 64px RGB, batch 64 (eager and graphed)
    python bench/sweep.py --cpu-small           # CPU: 2 trials x 1 CPU, 32px narrow nets (< 2 minutes)
    python bench/sweep.py --trials 8 --gpus-per-trial 0.125
    python bench/sweep.py --cpu-small --rounds 3   # 3 trials per slot: shows what reusing trial processes saves

One script, one device, side by side:
  naive : one process, the bare PyTorch eager fp32 DCGAN step at batch 64 (bench/gan_step.py's reference)
  sweep : Tune + OptunaSearch exactly as sweeps/augment_ratio.py sets it up (fractional resources,
          pending-trial limit = concurrency), each trial running our GAN step (GanTrainer via train_gan,
          GPU switches on "auto") on device-resident batches. Aggregate = all images trained by all trials
          / wall time from the first trial's first step to the last trial's last step.
  twice : with trial processes reused (reuse_actors, the sweep's setting) and with a fresh process per trial.
Overhead = first training step (trial-side clock) - trial start (driver-side on_trial_start), median; with
rounds > 1 compare Tuner.fit wall times too (a fresh process pays its imports before or after that start).
Goals (issue): aggregate >= 4x naive on one GPU; median overhead <= 3 s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def gan_trial(config: dict, settings: dict) -> None:
    """A sweep trial reduced to its GAN training: reports per-epoch images/s and its first-step time."""
    t_entry = time.time()
    import torch
    from ray import tune

    from trainables.gan.config import GanConfig
    from trainables.gan.loop import GanTrainer, train_gan

    torch.set_num_threads(max(1, int(settings["cpus_per_trial"])))
    device = torch.device("cuda" if settings["gpu"] else "cpu")
    cfg = GanConfig(image_size=settings["size"], channels=3, ngf=settings["width"], ndf=settings["width"],
                    batch_size=settings["batch"], num_epochs=settings["epochs"], lr_g=config["lr"], lr_d=config["lr"],
                    cuda_graphs=settings["graphs"], bf16=settings["graphs"], channels_last=settings["graphs"],
                    sample_every=0, seed=config["seed"])
    data = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    first: dict = {}

    def batches(epoch):
        for _ in range(settings["steps"]):
            if "t" not in first:
                first["t"] = time.time()
            yield data

    def report(m):
        tune.report({"epoch": m["epoch"], "images_per_s": m["images_per_s"], "t_entry": t_entry,
                     "t_first_step": first.get("t"), "t_now": time.time(),
                     "images": m["epoch"] * settings["steps"] * cfg.batch_size})

    train_gan(cfg, batches, report, trainer=GanTrainer(cfg, device))


def run_sweep(args, graphs: str, reuse: bool) -> dict:
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    class Starts(tune.Callback):
        def __init__(self):
            self.start: dict[str, float] = {}
            self.last: dict[str, dict] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.start[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.last[trial.trial_id] = result

    settings = {"gpu": args.gpus_per_trial > 0, "size": args.size, "width": args.width, "batch": args.batch,
                "epochs": args.epochs, "steps": args.steps, "graphs": graphs, "cpus_per_trial": args.cpus_per_trial}
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(args.trials)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    cb = Starts()
    fn = tune.with_resources(tune.with_parameters(gan_trial, settings=settings),
                             {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    searcher = OptunaSearch(space={"lr": tune.choice([1e-4, 2e-4]), "seed": tune.randint(0, 1000)},
                            metric="images_per_s", mode="max")
    tuner = tune.Tuner(fn, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=args.trials * args.rounds,
                                                       max_concurrent_trials=args.trials, reuse_actors=reuse),
                       run_config=tune.RunConfig(name=f"bench_sweep_{graphs}_{'reuse' if reuse else 'fresh'}", storage_path=args.storage,
                                                 callbacks=[cb], verbose=0))
    t0 = time.time()
    tuner.fit()
    wall_all = time.time() - t0
    firsts = [r["t_first_step"] for r in cb.last.values() if r.get("t_first_step")]
    ends = [r["t_now"] for r in cb.last.values()]
    images = sum(r["images"] for r in cb.last.values())
    overhead = [cb.last[t]["t_first_step"] - s for t, s in cb.start.items() if cb.last.get(t, {}).get("t_first_step")]
    entry = [cb.last[t]["t_entry"] - s for t, s in cb.start.items() if t in cb.last]
    return {"aggregate": images / (max(ends) - min(firsts)), "trials": len(cb.last),
            "overhead_median": statistics.median(overhead), "entry_median": statistics.median(entry),
            "wall_s": wall_all, "per_trial_median": statistics.median(r["images_per_s"] for r in cb.last.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-small", action="store_true")
    p.add_argument("--trials", type=int)
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--size", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, help="steps per epoch")
    p.add_argument("--epochs", type=int)
    p.add_argument("--rounds", type=int, default=1,
                   help="trials = concurrency x rounds: later rounds start on fresh worker processes (overhead "
                        "median over all; the aggregate then includes the gaps between rounds)")
    p.add_argument("--storage", default=str(Path("/tmp") / "ganaug_bench_sweep"))
    p.add_argument("--modes", help="comma-separated sweeps to run, from eager-reuse, eager-fresh, graphed-reuse "
                                   "(default: all three on GPU, the eager two on CPU)")
    p.add_argument("--json", help="write the figures here (after each sweep)")
    args = p.parse_args()
    import ray
    import torch

    from gan_step import bare_eager_images_per_s
    from trainables.gan.config import GanConfig

    gpu = torch.cuda.is_available() and not args.cpu_small
    if gpu:
        d = dict(trials=4, gpus_per_trial=0.25, size=64, width=64, steps=200, epochs=4)
    else:
        d = dict(trials=2, gpus_per_trial=0.0, size=32, width=16, steps=10, epochs=3)
    for k, v in d.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    device = torch.device("cuda" if gpu else "cpu")
    cfg = GanConfig(image_size=args.size, channels=3, ngf=args.width, ndf=args.width)
    naive = bare_eager_images_per_s(cfg, args.batch, steps=args.steps * 2, warmup=5, device=device)
    print(f"device: {torch.cuda.get_device_name() if gpu else 'CPU'}; {args.size}px RGB, ngf=ndf={args.width}, "
          f"batch {args.batch}; {args.trials} trials x {args.gpus_per_trial if gpu else args.cpus_per_trial} "
          f"{'GPU' if gpu else 'CPU'}")
    print(f"naive: one eager fp32 trial alone            {naive:>10,.0f} img/s")
    # trial processes reused (the sweep's setting) vs a fresh process per trial, side by side
    names = {"eager-reuse": ("off", True), "eager-fresh": ("off", False), "graphed-reuse": ("auto", True)}
    wanted = args.modes.split(",") if args.modes else ["eager-reuse", "eager-fresh"] + (["graphed-reuse"] if gpu else [])
    unknown = [m for m in wanted if m not in names]
    if unknown:
        p.error(f"unknown --modes {unknown}; valid: {sorted(names)}")
    modes = [names[m] for m in wanted]
    out = {"device": torch.cuda.get_device_name() if gpu else "CPU", "settings": {k: getattr(args, k) for k in (
        "trials", "gpus_per_trial", "cpus_per_trial", "size", "width", "batch", "steps", "epochs", "rounds")},
        "naive_images_per_s": naive, "goals": {"aggregate_vs_naive_min": 4.0, "overhead_median_max_s": 3.0},
        "sweeps": {}}
    ray.init(num_cpus=None if gpu else max(2, int(args.trials * args.cpus_per_trial)), include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path[:2])}})
    for graphs, reuse in modes:
        r = run_sweep(args, graphs, reuse)
        label = ("eager fp32" if graphs == "off" else "graphed bf16 (auto switches)") + \
            (", reused processes" if reuse else ", process per trial")
        print(f"sweep, {label:<42} aggregate {r['aggregate']:>10,.0f} img/s = {r['aggregate'] / naive:.2f}x naive "
              f"(per trial median {r['per_trial_median']:,.0f}); overhead start->first step median "
              f"{r['overhead_median']:.2f} s (start->trial code {r['entry_median']:.2f} s); {r['trials']} trials, "
              f"Tuner.fit {r['wall_s']:.1f} s")
        mode = next(k for k, v in names.items() if v == (graphs, reuse))
        out["sweeps"][mode] = {**r, "aggregate_vs_naive": r["aggregate"] / naive}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ray.shutdown()


if __name__ == "__main__":
    main()
