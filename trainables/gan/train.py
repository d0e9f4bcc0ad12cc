"""Entry points that train the GAN on a manifest's minority class (or cfg.classes) and write the run directory.

    run_gan_local(manifest_path, out_dir, cfg)                  # in-process: single-device sweep trials
    run_gan_ray(manifest_path, out_dir, cfg, num_workers=2)     # Ray Train TorchTrainer (DDP over workers)

Both run the same `train_gan` loop, write the same files (see trainables.gan.run_files) and the same
checkpoint format, and resume from the latest checkpoint when the run directory already holds one
(Ray: `ray.train.get_checkpoint()`, the Train run is named "gan" under RUN/ray so a restart finds it).
Ray Train costs ~40 s per fit, so sweeps train single-device trials with `run_gan_local`.

Which images: cfg.classes = () -> the minority class (unconditional, as always); one class -> a GAN of that
class (one GAN per class); cfg.conditional -> one class-conditional GAN over cfg.classes (all classes when
empty), trained on the real training images of those classes with their class indices.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from data_prep.errors import ConfigError, DataError
from trainables.gan.config import GanConfig, gan_config_from_dict, resolve_config
from trainables.gan.loop import GanTrainer, array_batches, train_gan
from trainables.gan.run_files import RunFiles, json_safe, load_checkpoint

RAY_RUN_NAME = "gan"  # fixed (no timestamp): a restarted run finds its own checkpoints
CHECKPOINT_FILE = "checkpoint.pt"  # inside a Ray checkpoint directory; same payload as RUN/checkpoints/*.pt
PROGRESS_KEYS = ("loss_D", "loss_G", "D_x", "D_G_z", "images_per_s", "epoch_time_s")


def as_config(cfg: GanConfig | Mapping[str, Any] | None) -> GanConfig:
    return cfg if isinstance(cfg, GanConfig) else gan_config_from_dict(cfg)


def format_progress(m: Mapping[str, Any], num_epochs: int | None = None) -> str:
    parts = [f"epoch {m.get('epoch')}" + (f"/{num_epochs}" if num_epochs else "")]
    for k in PROGRESS_KEYS:
        v = m.get(k)
        parts.append(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}")
    extra = {k: v for k, v in m.items() if k not in PROGRESS_KEYS and k not in ("epoch", "status", "reason")}
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()]
    if m.get("reason"):
        parts.append(f"STOPPED: {m['reason']}")
    return "  ".join(parts)


def trained_labels(cfg: GanConfig, manifest) -> list[int]:
    """Manifest labels the (resolved) config trains on: cfg.classes, or the minority class when empty."""
    return [int(c) for c in cfg.classes] if cfg.classes else [manifest.positive_label]


def _minority_meta(manifest, cfg: GanConfig | None = None) -> dict[str, Any]:
    labels = trained_labels(cfg, manifest) if cfg is not None else [manifest.positive_label]
    # the GAN's main label (evaluation samples, single-class file names): the minority class when learnt
    label = manifest.positive_label if manifest.positive_label in labels else labels[0]
    return {"label": label, "label_name": manifest.classes[label], "classes": manifest.classes,
            "manifest": str(manifest.path), "conditional": bool(cfg is not None and cfg.conditional),
            "trained_labels": labels, "trained_label_names": [manifest.classes[x] for x in labels]}


def _run_extra(meta: dict) -> dict:
    return {"manifest": meta["manifest"], "label": meta["label"], "label_name": meta["label_name"],
            "conditional": meta["conditional"], "trained_labels": meta["trained_labels"],
            "trained_label_names": meta["trained_label_names"], "num_train_images": meta["num_train_images"]}


def _prepare(manifest_path, out_dir, cfg):
    from data_prep.manifest import read_manifest

    manifest = read_manifest(manifest_path)
    cfg = resolve_config(as_config(cfg), manifest)
    files = RunFiles(out_dir)
    return manifest, cfg, files


def _interleave(parts: list) -> np.ndarray:
    """Per-class image arrays -> one array, 8 per class in turn (a real preview that shows every class)."""
    out, k = [], 0
    while len(out) < 64 and any(k < len(p) for p in parts):
        for p in parts:
            out.extend(p[k:k + 8])
        k += 8
    return np.stack(out[:64])


def _finish(files: RunFiles, cfg: GanConfig, result: dict, preview, t0: float) -> dict:
    history = files.read_history()
    last = history[-1] if history else {}
    for k in ("loss_D", "loss_G", "D_x", "D_G_z", "images_per_s"):
        if result.get(k) is None and k in last:  # resumed an already finished run: nothing trained now
            result[k] = last[k]
    if preview is not None:
        files.save_preview(preview)
    files.save_loss_curve(history)
    latest = files.latest_checkpoint()
    result.update(time_s=time.perf_counter() - t0, num_epochs=cfg.num_epochs, loss=cfg.loss,
                  checkpoint=str(latest) if latest else None, run_dir=str(files.root))
    files.write_metrics(result)
    return result


def run_gan_local(manifest_path: str | Path, out_dir: str | Path, cfg: GanConfig | Mapping[str, Any] | None = None,
                  report: Callable[[dict], Any] | None = None,
                  evaluate: Callable[[Callable[[int], Any], int], dict] | None = None,
                  vgg: torch.nn.Module | None = None) -> dict[str, Any]:
    """Train in this process on the manifest's minority-class real training images (or cfg.classes'); resume
    from out_dir/checkpoints if present. `report(metrics)` gets each epoch (default: print a progress line);
    `vgg`: a VGG-layout feature net for the perceptual term instead of loading cfg.vgg_weights (tests).
    Returns the final metrics (also in out_dir/metrics.json): status "finished" | "diverged", reason, ..."""
    from data_prep.arrays import load_split_arrays, normalize

    t0 = time.perf_counter()
    manifest, cfg, files = _prepare(manifest_path, out_dir, cfg)
    meta = _minority_meta(manifest, cfg)
    parts, class_idx = [], []
    for i, label in enumerate(meta["trained_labels"]):
        imgs, _ = load_split_arrays(manifest, "train", cfg.image_size, cfg.channels, label=label,
                                    include_synthetic=False)
        if len(imgs) == 0:
            what = "minority class" if label == manifest.positive_label else "class"
            raise DataError(f"manifest {manifest.path} has no real training images of the {what} "
                            f"{manifest.classes[label]!r} (label {label}): nothing to train the GAN on")
        parts.append(imgs)
        class_idx.append(np.full(len(imgs), i, np.int64))
    images = np.concatenate(parts)
    meta["num_train_images"] = int(len(images))
    meta["num_train_images_per_class"] = {manifest.classes[x]: int(len(a)) for x, a in zip(meta["trained_labels"], parts)}
    files.save_real_preview(images if not cfg.conditional else _interleave(parts))
    trainer = GanTrainer(cfg, cfg.device, meta=meta, vgg=vgg)
    latest = files.latest_checkpoint()
    if latest is not None:
        trainer.load_state_dict(load_checkpoint(latest, trainer.device), where=str(latest))
    files.truncate_history(trainer.epoch)
    files.write_config(cfg, {**_run_extra(meta), "num_train_images_per_class": meta["num_train_images_per_class"],
                             "resumed_from_epoch": trainer.epoch})

    def on_epoch(metrics: dict) -> None:
        files.append_history(metrics)
        if report is None:
            print(format_progress(metrics, cfg.num_epochs), flush=True)
        else:
            report(metrics)

    data = torch.from_numpy(normalize(images)).to(trainer.device)  # a minority class fits in device memory
    labels = torch.from_numpy(np.concatenate(class_idx)).to(trainer.device) if cfg.conditional else None
    result = train_gan(cfg, array_batches(data, cfg.batch_size, cfg.seed, labels=labels, balanced=cfg.balanced_epochs),
                       on_epoch,
                       trainer=trainer, checkpoint=lambda s, e: files.save_checkpoint(s, e, cfg.keep_checkpoints),
                       samples=files.save_samples, evaluate=evaluate)
    return _finish(files, cfg, result, trainer.fixed_samples(), t0)


# ---- Ray Train ---------------------------------------------------------------------------------------------
def gan_train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: G and D through prepare_model (DDP when >1 worker), the minority-class shard from
    get_dataset_shard("train"), one ray.train.report per epoch, checkpoints every K epochs from rank 0."""
    import tempfile

    import ray.train
    import ray.train.torch

    cfg = gan_config_from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    files = RunFiles(config["out_dir"]) if rank == 0 else None
    trainer = GanTrainer(cfg, device, wrap_model=ray.train.torch.prepare_model, rank=rank, world_size=world_size,
                         meta=config["meta"])
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            path = Path(d) / CHECKPOINT_FILE
            trainer.load_state_dict(load_checkpoint(path, device), where=f"Ray checkpoint {ckpt.path}")
    elif config.get("local_checkpoint"):  # a run started in-process and continued under Ray
        path = config["local_checkpoint"]
        trainer.load_state_dict(load_checkpoint(path, device), where=path)
    if files is not None:
        files.truncate_history(trainer.epoch)
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

    pending: dict[str, Any] = {}

    def checkpoint(state: dict, epoch: int) -> None:
        tmp = tempfile.mkdtemp(prefix="gan_ckpt_")
        torch.save(state, Path(tmp) / CHECKPOINT_FILE)
        pending["dir"] = tmp

    def report(metrics: dict) -> None:
        import shutil

        if files is not None:
            files.append_history(metrics)
            print(format_progress(metrics, cfg.num_epochs), flush=True)
        tmp = pending.pop("dir", None)
        ray.train.report(json_safe(metrics),
                         checkpoint=ray.train.Checkpoint.from_directory(tmp) if tmp else None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    result = train_gan(cfg, batches, report, trainer=trainer, checkpoint=checkpoint if rank == 0 else None,
                       samples=files.save_samples if files is not None else None,
                       evaluate=config.get("evaluate") if rank == 0 else None)
    if config.get("save_rank_weights"):  # debugging aid / test: every rank's final weights, to compare DDP replicas
        ranks = Path(config["out_dir"]) / "rank_weights"
        ranks.mkdir(exist_ok=True)
        torch.save({"G": trainer.G_module.state_dict(), "D": trainer.D_module.state_dict()}, ranks / f"rank_{rank}.pt")
    if files is not None:  # the driver reads the full result (fit.metrics holds only the last report)
        (files.root / ".ray_result.json").write_text(json.dumps(json_safe(result)))


def run_gan_ray(manifest_path: str | Path, out_dir: str | Path, cfg: GanConfig | Mapping[str, Any] | None = None,
                num_workers: int = 1, use_gpu: bool = False, evaluate: Callable | None = None,
                storage_path: str | Path | None = None, save_rank_weights: bool = False,
                max_failures: int = 2, resources_per_worker: Mapping[str, float] | None = None,
                callbacks: list | None = None) -> dict[str, Any]:
    """Train with a Ray Train TorchTrainer (DDP across num_workers; gloo on CPU, NCCL on GPU) on the local or
    connected Ray cluster. The Train run is named "gan" under storage_path (default RUN/ray), so calling this
    again after an interruption resumes from the latest checkpoint. Returns the final metrics like run_gan_local.
    save_rank_weights=True makes every rank write RUN/rank_weights/rank_<r>.pt (to check DDP replicas agree).
    resources_per_worker (e.g. {"CPU": 0.5, "GPU": 1}) overrides Ray Train's default of 1 CPU (+1 GPU) per worker;
    callbacks are Ray Train callbacks (the sweep forwards each epoch's report to its Tune trial with one)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from data_prep.config import config_to_dict
    from data_prep.shards import split_dataset

    t0 = time.perf_counter()
    if as_config(cfg).balanced_epochs:
        raise ConfigError("balanced_epochs (a per-epoch class-balanced draw) runs on the single-process path "
                          "(run_gan_local); a Ray Train run's shards are fixed, so it trains on every image")
    manifest, cfg, files = _prepare(manifest_path, out_dir, cfg)
    # Workers take their device from Ray (ray.train.torch.get_device); record what they will use.
    cfg = dataclasses.replace(cfg, device="cuda" if use_gpu else "cpu")
    meta = _minority_meta(manifest, cfg)
    train_rows = manifest.split("train").query("~is_synthetic")
    train_rows = train_rows[train_rows["label"].isin(meta["trained_labels"])]
    for label in meta["trained_labels"]:
        if not (train_rows["label"] == label).any():
            raise DataError(f"manifest {manifest.path} has no real training images of the class "
                            f"{manifest.classes[label]!r} (label {label}): nothing to train the GAN on")
    n_train = len(train_rows)
    if n_train < num_workers:
        raise DataError(f"{n_train} minority-class training image(s) cannot be sharded over {num_workers} workers")
    meta["num_train_images"] = n_train
    if not ray.is_initialized():
        ray.init()
    ds = split_dataset(manifest, "train", cfg.image_size, cfg.channels, rows=train_rows.reset_index(drop=True))
    latest = files.latest_checkpoint()
    files.write_config(cfg, {**_run_extra(meta), "num_workers": num_workers, "use_gpu": use_gpu})
    (files.root / ".ray_result.json").unlink(missing_ok=True)
    storage = Path(storage_path or files.root / "ray").resolve()
    trainer = TorchTrainer(
        gan_train_loop_per_worker,
        train_loop_config={"cfg": config_to_dict(cfg), "out_dir": str(files.root.resolve()), "meta": meta,
                           "evaluate": evaluate, "local_checkpoint": str(latest) if latest else None,
                           "save_rank_weights": save_rank_weights},
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker=dict(resources_per_worker or {}) or None),
        run_config=ray.train.RunConfig(name=RAY_RUN_NAME, storage_path=str(storage), callbacks=callbacks or [],
                                       # a lost worker (process or node) restarts from the last checkpoint
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
        datasets={"train": ds})
    fit = trainer.fit()
    if fit.error is not None:
        raise fit.error
    done = files.root / ".ray_result.json"
    result = json.loads(done.read_text()) if done.is_file() else dict(fit.metrics or {})
    preview = None
    if fit.checkpoint is not None:  # copy the latest Ray checkpoint into RUN/checkpoints in the common format
        with fit.checkpoint.as_directory() as d:
            state = load_checkpoint(Path(d) / CHECKPOINT_FILE)
            files.save_checkpoint(state, int(state["epoch"]), cfg.keep_checkpoints)
        # the workers' state may be CUDA's (RNG, capturable Adam): load_state_dict adapts it to this CPU trainer
        local = GanTrainer(cfg, "cpu", meta=meta)
        local.load_state_dict(state)
        preview = local.fixed_samples()
    return _finish(files, cfg, result, preview, t0)
