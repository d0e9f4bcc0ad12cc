"""Ray Train entry point: the same classifier loop under DDP over Ray Data shards (TorchTrainer).

    run_classifier_ray("runs/demo/manifest.parquet", "runs/clf_ddp", {"num_epochs": 10}, num_workers=2)

Train rows are sharded with `data_prep.shards.split_dataset` + `ray.train.get_dataset_shard("train")`
(equal shards, so every rank runs the same number of DDP steps). Val/test are NOT split by Ray
(an equal split may drop rows): every rank reads them and predicts the rows with index % world == rank;
predictions travel with their index, are all-gathered and deduplicated (`merge_predictions`), so each
val/test image counts exactly once and every rank computes the same whole-split metrics (Tune's
TuneReportCallback forwards rank 0's). `imbalance_fix="oversample"` resamples the train rows once on the
driver (seeded, inverse class frequency or the minority's oversample_share) before sharding; the local path
redraws every epoch. With cfg.epoch_size E each worker stops an epoch after ceil(E / (batch_size * world))
batches (passing over its shard again, reshuffled, if the shard is shorter), so the steps match the local path's.
Each epoch rank 0 reports train_loss, val metrics, images_per_s with a checkpoint holding last.pt
(resume state) and best.pt; a restarted run resumes from `ray.train.get_checkpoint()`.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from data_prep.arrays import decode_rows
from data_prep.config import config_to_dict
from data_prep.errors import ConfigError
from data_prep.manifest import read_manifest
from data_prep.shards import decode_in_parallel, decode_remote_args, split_dataset
from trainables.classifier.config import ClassifierConfig, classifier_config
from trainables.classifier.data import epoch_indices, sample_weights_for
from trainables.classifier.loop import evaluate_best, merge_predictions, strip_models, train_classifier
from trainables.classifier.run import (as_config, best_checkpoint, curated_data, name_per_class, run_sources,
                                       scores_csv, write_run_files)
from trainables.ray_worker import CheckpointReporter, fit, load_from_ray_checkpoint, trainer_kwargs

_SHUFFLE_BUFFER = 1024  # rows per worker mixed between batches
MAX_FAILURES = 2  # worker restarts (process or node loss) per run; each resumes from the last reported checkpoint


def indexed_dataset(rows: pd.DataFrame, image_size: int, channels: int):
    """Eval rows -> materialised ray.data.Dataset with image, label and index (row position in the split)."""
    import ray

    cols = rows[["source", "source_key", "source_index", "label"]].reset_index(drop=True)
    cols["index"] = np.arange(len(cols), dtype=np.int64)

    def decode(batch: pd.DataFrame) -> dict:
        return {"image": decode_rows(batch, image_size, channels, channels_first=True),  # uint8: loop normalises
                "label": batch["label"].to_numpy(np.int64), "index": batch["index"].to_numpy(np.int64)}

    return decode_in_parallel(ray.data.from_pandas(cols)).map_batches(decode, batch_format="pandas", batch_size=256,
                                                                       **decode_remote_args()).materialize()


def _eval_batches(name: str, batch_size: int, rank: int, world: int):
    """Val/test batches of this rank: every rank reads the whole split and keeps the rows with index % world == rank."""
    import ray.train

    it = ray.train.get_dataset_shard(name)

    def gen():
        for b in it.iter_torch_batches(batch_size=batch_size):
            keep = b["index"] % world == rank
            if bool(keep.any()):
                yield b["image"][keep], b["label"][keep], b["index"][keep]
    return gen


def _gatherer(world: int):
    """gather(local predictions, expected_n): all ranks' predictions, each val/test image exactly once."""
    import torch.distributed as dist

    def gather(local, expected_n):
        parts = [local]
        if world > 1:
            parts = [None] * world
            dist.all_gather_object(parts, local)
        return merge_predictions(parts, expected_n)
    return gather


def _worker_hooks(config: dict, rank: int) -> tuple[CheckpointReporter, Callable[[dict, bool], None]]:
    """report (each epoch's row + the checkpoint staged since) and save_state (rank 0 stages last.pt + best.pt)."""
    before = config.get("before_report")

    def before_report(row: dict) -> None:  # an injection point: tests kill the worker here
        if before is not None and rank == 0 and not row.get("final"):
            before(int(row["epoch"]))

    reporter = CheckpointReporter("clf_ckpt_", before_report=before_report)

    def save_state(state: dict, is_best: bool) -> None:
        if rank == 0:
            reporter.stage({"last.pt": state, "best.pt": _best(state["best"], config)})
    return reporter, save_state


def _best(best: dict, config: dict) -> dict:
    return best_checkpoint(best, config["cfg"], config["classes"], config["positive_label"])


def _capped_batches(shard, cfg, epoch: int, world: int):
    """One epoch of this worker's train batches: one pass over its shard, or with cfg.epoch_size E exactly
    ceil(E / (batch_size * world)) batches (the same on every worker: equal shards), over as many reshuffled
    passes as that takes. Every worker stops at the same batch, so the split iterators stay in step."""
    cap = math.ceil(int(cfg.epoch_size) / (cfg.batch_size * world)) if cfg.epoch_size else None
    taken, rounds = 0, 0
    while True:
        for b in shard.iter_torch_batches(batch_size=cfg.batch_size, local_shuffle_buffer_size=_SHUFFLE_BUFFER,
                                          local_shuffle_seed=cfg.seed * 1000 + epoch + 7919 * rounds):
            if cap is not None and taken >= cap:
                return
            taken += 1
            yield b["image"], b["label"]
        rounds += 1
        if cap is None or taken >= cap or taken == 0:
            return


def _train_loop_per_worker(config: dict) -> None:
    import ray.data
    import ray.train
    import ray.train.torch

    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar per eval pass per worker is noise
    cfg = classifier_config(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")

    def train_data(epoch: int):
        return _capped_batches(train_shard, cfg, epoch, world)

    def batches(name: str):
        return _eval_batches(name, cfg.batch_size, rank, world)

    report, save_state = _worker_hooks(config, rank)
    gather = _gatherer(world)
    kw = dict(num_classes=config["num_classes"], positive_label=config["positive_label"])
    outcome = train_classifier(cfg, train_data, batches("val"), report, train_labels=np.asarray(config["train_labels"]),
                               channels=config["channels"], image_size=config["image_size"], num_val=config["num_val"],
                               gather=gather, wrap_model=ray.train.torch.prepare_model, device=device,
                               resume_state=load_from_ray_checkpoint("last.pt"), save_state=save_state,
                               world_size=world, rank=rank, **kw)
    kept: list = []  # merged (index, probs, labels) of val, then test: the scores of the one evaluation pass

    def keep(local, expected_n):
        kept.append(gather(local, expected_n))
        return kept[-1]

    final = evaluate_best(outcome, {"val": (batches("val"), config["num_val"]),
                                    "test": (batches("test"), config["num_test"])}, device=device, gather=keep, **kw)
    slim = strip_models(outcome)
    row = {"epoch": len(slim["history"]), "final": True, "best_epoch": slim["best"]["epoch"],
           "threshold": slim["best"]["threshold"],
           **{f"{s}_{k}": float(final[s][k]) for s in ("val", "test") for k in final[s] if isinstance(final[s][k], float)}}
    if rank == 0:
        report.stage({"best.pt": _best(outcome["best"], config),
                      "final.json": json.dumps({**final, **slim}, default=str),
                      "test_scores.csv": scores_csv(kept[-1], config["positive_label"])})
    report(row)


def run_classifier_ray(manifest_path, out_dir, cfg: ClassifierConfig | Mapping[str, Any] | None = None,
                       synthetic_dir=None, num_workers: int = 2, use_gpu: bool = False, storage_path=None,
                       name: str | None = None, callbacks: list | None = None,
                       max_failures: int = MAX_FAILURES, resources_per_worker: Mapping[str, float] | None = None,
                       before_report: Callable[[int], Any] | None = None, curation_scorer=None) -> dict:
    """TorchTrainer run of the classifier (DDP when num_workers > 1); writes the same RUN files as the local path.

    `name` names the Train run (use the Tune trial id, no timestamps) so a restarted run resumes from its
    last checkpoint under storage_path (default RUN/ray). A worker that dies (process killed, node lost) is
    restarted up to `max_failures` times and resumes from the last reported checkpoint. resources_per_worker
    (e.g. {"CPU": 0.5, "GPU": 1}) overrides Ray Train's default of 1 CPU (+1 GPU) per worker.
    before_report(epoch): a picklable callable rank 0 calls just before reporting each epoch (an injection
    point: tests/faults kill the worker there to prove a restart resumes from the last checkpoint).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = as_config(cfg)
    if cfg.num_folds:
        raise ConfigError("k-fold CV (num_folds > 0) runs on the local path (run_classifier_local / no --ray)")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(manifest_path)
    data, curation = curated_data(manifest, manifest_path, cfg, synthetic_dir, out_dir, curation_scorer)
    size, ch = data.image_size, data.channels
    train_rows = data.train_rows
    weights = sample_weights_for(cfg.imbalance_fix, train_rows["label"].to_numpy(), data.num_classes,
                                 cfg.oversample_share, data.positive_label)
    if weights is not None:  # enough draws for an epoch of epoch_size
        draws = epoch_indices(len(train_rows), weights, cfg.seed, 0, max(len(train_rows), int(cfg.epoch_size)))
        train_rows = train_rows.iloc[draws.numpy()].reset_index(drop=True)
    datasets = {"train": split_dataset(data.manifest, "train", size, ch, rows=train_rows),
                "val": indexed_dataset(data.val_rows, size, ch), "test": indexed_dataset(data.test_rows, size, ch)}
    loop_config = {"cfg": config_to_dict(cfg), "num_classes": data.num_classes, "positive_label": data.positive_label,
                   "train_labels": train_rows["label"].astype(int).tolist(), "channels": ch, "image_size": size,
                   "num_val": len(data.val_rows), "num_test": len(data.test_rows), "classes": data.classes,
                   "before_report": before_report}
    trainer = TorchTrainer(
        _train_loop_per_worker, train_loop_config=loop_config,
        datasets=datasets, dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        **trainer_kwargs(name=name or "classifier", storage_path=storage_path or out_dir / "ray",
                         num_workers=num_workers, use_gpu=use_gpu, max_failures=max_failures, num_to_keep=2,
                         callbacks=callbacks, resources_per_worker=resources_per_worker))
    result = fit(trainer)  # out of retries: raises why instead of failing on a missing checkpoint
    with result.checkpoint.as_directory() as d:
        final = json.loads((Path(d) / "final.json").read_text())
        (out_dir / "checkpoints").mkdir(exist_ok=True)
        shutil.copy(Path(d) / "best.pt", out_dir / "checkpoints" / "best.pt")
        shutil.copy(Path(d) / "test_scores.csv", out_dir / "test_scores.csv")
    out = {"val": final["val"], "test": final["test"], "threshold": final["best"]["threshold"],
           "best_epoch": final["best"]["epoch"], "select_metric": cfg.select_metric, "n_synthetic": data.n_synthetic,
           "steps": int(final.get("steps", 0)), "epoch_size": int(cfg.epoch_size) or len(data.train_rows),
           "data": data.summary(), "classes": data.classes, "positive_label": data.positive_label,
           "num_workers": num_workers, "run_dir": str(out_dir), "config": config_to_dict(cfg),
           "history": final["history"], "curation": curation, **run_sources(manifest, synthetic_dir)}
    name_per_class(out, data.classes)
    write_run_files(out_dir, cfg, out, data.classes)
    return out
