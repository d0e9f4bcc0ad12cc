"""Benchmark: the sweep driver's time per trial end spent on results (ResultsCallback -> ResultsTable), at 100
and at 1,000 trials, with the table written per trial end as a part (now) and rewritten whole (before).

    python bench/results_scale.py                  # local storage: 100 and 1,000 trials, both ways side by side
    python bench/results_scale.py --s3             # the same with every write published to an S3 server on
                                                   # 127.0.0.1 (moto, from the test extras)
    python bench/results_scale.py --trials 100 1000 5000

Each trial end is the callback of a real sweep row (every results column, a GAN trial's "gan" row with it) on a
fake Tune trial, back to back. "per trial end" = the callbacks' total time / trials, so the whole-file rewrites
are counted where they happen (amortised); "last 10%" = the mean of the last tenth of the trial ends (the cost
once the table is that big); "end" = the closing rewrite at the end of the phase. Goal (issue 23): per trial end
at 1,000 trials <= 1.5 x at 100.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def sweep_row(i: int) -> dict:
    """The last result a sweep trial reports (its row's values), trial i of a search phase."""
    from analysis.schema import GAN_COLUMNS, METRIC_NAMES

    row = {f"{split}_{m}": 0.5 + (i % 7) / 100 for split in ("val", "test") for m in METRIC_NAMES}
    row.update({c: 0.1 * (i % 5) for c in GAN_COLUMNS if c not in ("gan_kid_reference", "gan_extractor")})
    row.update(phase="final", status="ok", error="", image_size=64, channels=3, gan_trained_here=i % 3 == 0,
               gan_run_dir=f"s3://bucket/sweeps/s/gans/k{i // 3}/a-{i:06d}", clf_run_dir=f"s3://b/classifiers/t{i}",
               synthetic_dir="", clf_threshold=0.5, clf_best_epoch=3, n_synthetic=120, time_total_s=61.0,
               time_gan_s=40.0, time_classifier_s=20.0, gan_kid_reference="val", gan_extractor="domain")
    # what else a trial's last results carry into its row (the callback keeps every key reported): Tune's
    # bookkeeping and the last GAN and classifier epochs' values
    row.update(date="2026-12-04_00-48-57", hostname="ip-10-0-0-12", node_ip="10.0.0.12", pid=4242 + i,
               timestamp=1764809337 + i, time_this_iter_s=0.8, time_since_restore=61.0, training_iteration=160,
               iterations_since_restore=160, experiment_tag=f"{i}_arm=gan,gan_loss=hinge", done=True,
               checkpoint_dir_name=None, gan_epoch=150, gan_loss_D=0.61, gan_loss_G=1.92, gan_D_x=0.71,
               gan_D_G_z=0.29, gan_images_per_s=5200.0, gan_epoch_time_s=0.05, gan_key=f"k{i // 3}",
               clf_epoch=12, clf_train_loss=0.21, clf_val_loss=0.33, clf_images_per_s=9100.0,
               **{f"val_{m}_epoch": 0.5 for m in ("f1", "sensitivity", "specificity", "roc_auc")})
    return row


def trial(i: int) -> SimpleNamespace:
    config = {"arm": "gan", "seed": 0, "gan_loss": "hinge", "gan_lr_g": 2e-4, "gan_lr_d": 1e-4 * (1 + i % 3),
              "diffaugment": bool(i % 2), "n_critic": 1, "synthetic_ratio": 1.0, "clf_lr": 1e-3 * (1 + i % 10),
              "imbalance_fix": "none", "augment": "none"}
    return SimpleNamespace(trial_id=f"t{i:05d}", config=config)


def run(n: int, whole: bool, store=None) -> dict:
    """n trial ends through the callback -> seconds per trial end (mean, last 10%) and the closing rewrite."""
    from sweeps.results import ResultsCallback, ResultsTable

    class WholeTable(ResultsTable):  # before: every trial end rewrote (and published) the whole table
        def save(self) -> None:
            self.write()

    with tempfile.TemporaryDirectory() as tmp:
        if store is not None:
            store = type(store)(f"{store.root}/{n}-{int(whole)}", store.endpoint, scratch=tmp)
        table = (WholeTable if whole else ResultsTable)(Path(tmp) / "results.parquet", "bench", "search", store)
        cb = ResultsCallback(table)
        times = []
        for i in range(n):
            t = trial(i)
            cb.on_trial_result(i, [], t, sweep_row(i))
            t0 = time.perf_counter()
            cb.on_trial_complete(i, [], t)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        table.write()
        end = time.perf_counter() - t0
    tail = times[-max(1, n // 10):]
    return {"mean": sum(times) / n, "tail": statistics.mean(tail), "end": end}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--s3", action="store_true", help="publish to an S3 server on 127.0.0.1 (moto)")
    args = p.parse_args(argv)
    import contextlib

    from sweeps.storage import Store

    ctx = contextlib.nullcontext(None)
    if args.s3:
        from s3_server import s3_server
        ctx = s3_server()
    with ctx as endpoint:
        store = Store("s3://sweeps/bench", endpoint) if endpoint else None
        print(f"driver time per trial end on results ({'S3 server on 127.0.0.1' if store else 'local disk'}), ms:")
        print(f"{'trials':>7} {'how':>13} {'per trial end':>14} {'last 10%':>9} {'end':>8}")
        run(20, False, store), run(20, True, store)  # warm-up: first calls of pandas/pyarrow writers
        res = {}
        for n in args.trials:
            for whole in (False, True):
                r = run(n, whole, store)
                res.setdefault((n, whole), r)
                print(f"{n:>7} {'whole (before)' if whole else 'parts (now)':>13} {r['mean'] * 1e3:>14.2f} "
                      f"{r['tail'] * 1e3:>9.2f} {r['end'] * 1e3:>8.1f}", flush=True)
        lo, hi = args.trials[0], max(args.trials)
        for whole in (False, True):
            ratio = res[(hi, whole)]["mean"] / res[(lo, whole)]["mean"]
            print(f"{'whole (before)' if whole else 'parts (now)'}: per trial end at {hi} / at {lo} = {ratio:.2f} "
                  f"(goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
