"""Ray Train entry point: the same GAN loop under DDP over Ray Data shards (TorchTrainer).

    run_gan_ray("runs/demo/manifest.parquet", "runs/gan_ddp", {"num_epochs": 50}, num_workers=2)

G and D go through prepare_model (DDP when > 1 worker); each worker reads its shard of the real training
images of the trained classes from get_dataset_shard("train"); one ray.train.report per epoch, with a
checkpoint every cfg.checkpoint_every epochs from rank 0 (same payload as RUN/checkpoints/*.pt). The Train
run is named "gan" under storage_path (default RUN/ray), so calling again after an interruption, or a
worker restarted by FailureConfig, resumes from the latest checkpoint. Ray Train costs ~40 s per fit, so
sweeps train single-device trials with `trainables.gan.run.run_gan_local`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from data_prep.errors import ConfigError, DataError
from trainables.gan.config import GanConfig, gan_config_from_dict
from trainables.gan.loop import GanTrainer, train_gan
from trainables.gan.run import as_config, finish_run, format_progress, minority_meta, prepare_run, run_extra
from trainables.gan.run_files import RunFiles, json_safe, load_checkpoint
from trainables.ray_worker import CheckpointReporter, fit, load_from_ray_checkpoint, trainer_kwargs

RAY_RUN_NAME = "gan"  # fixed (no timestamp): a restarted run finds its own checkpoints
CHECKPOINT_FILE = "checkpoint.pt"  # inside a Ray checkpoint directory; same payload as RUN/checkpoints/*.pt
RESULT_FILE = ".ray_result.json"  # rank 0's full result (fit.metrics holds only the last report)


def _worker_trainer(cfg: GanConfig, config: dict, device, rank: int, world_size: int) -> GanTrainer:
    """This worker's trainer, resumed from the Train run's checkpoint, else from a run begun in-process."""
    import ray.train.torch

    trainer = GanTrainer(cfg, device, wrap_model=ray.train.torch.prepare_model, rank=rank, world_size=world_size,
                         meta=config["meta"])
    state = load_from_ray_checkpoint(CHECKPOINT_FILE, loader=lambda path, where: (load_checkpoint(path, device), where))
    if state is not None:
        trainer.load_state_dict(state[0], where=state[1])
    elif config.get("local_checkpoint"):  # a run started in-process and continued under Ray
        path = config["local_checkpoint"]
        trainer.load_state_dict(load_checkpoint(path, device), where=path)
    return trainer


def _shard_batches(cfg: GanConfig, config: dict, trainer: GanTrainer, device, rank: int) -> Callable[[int], Any]:
    """batches(epoch) over this worker's shard: images, or (images, class indices) for a conditional GAN."""
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    # A graphed step reads static device buffers: Ray's device= copy would run in its prefetch thread, unordered
    # with the replay, so graphed workers take pinned host batches and train_step copies them into the static
    # buffers on the replaying stream. Eager workers let Ray move batches to the device.
    host_batches = trainer.switches["cuda_graphs"]
    batch_device = torch.device("cpu") if host_batches else device
    lut = None
    if cfg.conditional:  # manifest label -> class index of the conditional networks
        labels = config["meta"]["trained_labels"]
        lut = torch.full((max(labels) + 1,), -1, dtype=torch.long, device=batch_device)
        lut[torch.tensor(labels, device=batch_device)] = torch.arange(len(labels), device=batch_device)

    def batches(epoch: int):
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, device=batch_device, pin_memory=host_batches,
                                              local_shuffle_buffer_size=4 * cfg.batch_size,
                                              local_shuffle_seed=cfg.seed * 100003 + epoch + rank):
            yield (batch["image"], lut[batch["label"].long()]) if lut is not None else batch["image"]

    return batches


def gan_train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: train_gan over this worker's shard; rank 0 keeps the run folder and checkpoints."""
    import ray.train
    import ray.train.torch

    cfg = gan_config_from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    files = RunFiles(config["out_dir"]) if rank == 0 else None
    trainer = _worker_trainer(cfg, config, device, rank, world_size)
    if files is not None:
        files.truncate_history(trainer.epoch)

    def log(metrics: dict) -> None:
        if files is not None:
            files.append_history(metrics)
            print(format_progress(metrics, cfg.num_epochs), flush=True)

    reporter = CheckpointReporter("gan_ckpt_", before_report=log)
    result = train_gan(cfg, _shard_batches(cfg, config, trainer, device, rank), lambda m: reporter(json_safe(m)),
                       trainer=trainer,
                       checkpoint=(lambda state, epoch: reporter.stage({CHECKPOINT_FILE: state})) if rank == 0 else None,
                       samples=files.save_samples if files is not None else None,
                       evaluate=config.get("evaluate") if rank == 0 else None,
                       best_checkpoint=files.save_best if files is not None else None)
    if config.get("after_training") is not None:  # e.g. tests: every rank saves its weights to compare replicas
        config["after_training"](trainer, rank, Path(config["out_dir"]))
    if files is not None:
        (files.root / RESULT_FILE).write_text(json.dumps(json_safe(result)))


def _ray_train_rows(manifest, meta: dict, num_workers: int):
    """The real training rows of the trained classes; refuses a class without images or too few to shard."""
    rows = manifest.split("train").query("~is_synthetic")
    rows = rows[rows["label"].isin(meta["trained_labels"])]
    for label in meta["trained_labels"]:
        if not (rows["label"] == label).any():
            raise DataError(f"manifest {manifest.path} has no real training images of the class "
                            f"{manifest.classes[label]!r} (label {label}): nothing to train the GAN on")
    if len(rows) < num_workers:
        raise DataError(f"{len(rows)} minority-class training image(s) cannot be sharded over {num_workers} workers")
    return rows.reset_index(drop=True)


def _copy_back(files: RunFiles, cfg: GanConfig, meta: dict, checkpoint):
    """The latest Ray checkpoint into RUN/checkpoints (the common format); its fixed-noise preview."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        state = load_checkpoint(Path(d) / CHECKPOINT_FILE)
        files.save_checkpoint(state, int(state["epoch"]), cfg.keep_checkpoints)
    # the workers' state may be CUDA's (RNG, capturable Adam): load_state_dict adapts it to this CPU trainer
    local = GanTrainer(cfg, "cpu", meta=meta)
    local.load_state_dict(state)
    return local.fixed_samples()


def run_gan_ray(manifest_path: str | Path, out_dir: str | Path, cfg: GanConfig | Mapping[str, Any] | None = None,
                num_workers: int = 1, use_gpu: bool = False, evaluate: Callable | None = None,
                storage_path: str | Path | None = None, after_training: Callable | None = None,
                max_failures: int = 2, resources_per_worker: Mapping[str, float] | None = None,
                callbacks: list | None = None) -> dict[str, Any]:
    """Train with a Ray Train TorchTrainer (DDP across num_workers; gloo on CPU, NCCL on GPU) on the local or
    connected Ray cluster. Returns the final metrics like run_gan_local.
    after_training(trainer, rank, out_dir): called on every rank after its last epoch (a picklable callable;
    tests save each rank's weights to check DDP replicas agree). resources_per_worker (e.g. {"CPU": 0.5,
    "GPU": 1}) overrides Ray Train's default of 1 CPU (+1 GPU) per worker; callbacks are Ray Train callbacks
    (the sweep forwards each epoch's report to its Tune trial with one)."""
    import ray
    from ray.train.torch import TorchTrainer

    from data_prep.config import config_to_dict
    from data_prep.shards import split_dataset

    t0 = time.perf_counter()
    if as_config(cfg).balanced_epochs:
        raise ConfigError("balanced_epochs (a per-epoch class-balanced draw) runs on the single-process path "
                          "(run_gan_local); a Ray Train run's shards are fixed, so it trains on every image")
    manifest, cfg, files = prepare_run(manifest_path, out_dir, cfg)
    # Workers take their device from Ray (ray.train.torch.get_device); record what they will use.
    cfg = dataclasses.replace(cfg, device="cuda" if use_gpu else "cpu")
    meta = minority_meta(manifest, cfg)
    train_rows = _ray_train_rows(manifest, meta, num_workers)
    meta["num_train_images"] = len(train_rows)
    if not ray.is_initialized():
        ray.init()
    ds = split_dataset(manifest, "train", cfg.image_size, cfg.channels, rows=train_rows)
    latest = files.latest_checkpoint()
    files.write_config(cfg, {**run_extra(meta), "num_workers": num_workers, "use_gpu": use_gpu})
    (files.root / RESULT_FILE).unlink(missing_ok=True)
    trainer = TorchTrainer(
        gan_train_loop_per_worker,
        train_loop_config={"cfg": config_to_dict(cfg), "out_dir": str(files.root.resolve()), "meta": meta,
                           "evaluate": evaluate, "local_checkpoint": str(latest) if latest else None,
                           "after_training": after_training},
        datasets={"train": ds},
        **trainer_kwargs(name=RAY_RUN_NAME, storage_path=storage_path if "://" in str(storage_path or "")
                         else Path(storage_path or files.root / "ray").resolve(),  # a URI: s3://, gs://
                         num_workers=num_workers, use_gpu=use_gpu, max_failures=max_failures,
                         num_to_keep=cfg.keep_checkpoints, callbacks=callbacks,
                         resources_per_worker=resources_per_worker))
    result = fit(trainer)
    done = files.root / RESULT_FILE
    metrics = json.loads(done.read_text()) if done.is_file() else dict(result.metrics or {})
    return finish_run(files, cfg, metrics, _copy_back(files, cfg, meta, result.checkpoint), t0)
