"""In-process GAN runs (the sweep's single-device trials) and what both entry points share (meta, finish).

    run_gan_local(manifest_path, out_dir, cfg)                  # in-process: single-device sweep trials
    run_gan_ray(manifest_path, out_dir, cfg, num_workers=2)     # Ray Train TorchTrainer: trainables.gan.ray_train

Both run the same `train_gan` loop, write the same files (see trainables.gan.run_files) and the same
checkpoint format, and resume from the latest checkpoint when the run directory already holds one
(Ray: `ray.train.get_checkpoint()`, the Train run is named "gan" under RUN/ray so a restart finds it).
Ray Train costs ~40 s per fit, so sweeps train single-device trials with `run_gan_local`.

Which images: cfg.classes = () -> the minority class (unconditional, as always); one class -> a GAN of that
class (one GAN per class); cfg.conditional -> one class-conditional GAN over cfg.classes (all classes when
empty), trained on the real training images of those classes with their class indices.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from data_prep.errors import DataError
from trainables.gan.config import GanConfig, gan_config_from_dict, resolve_config
from trainables.gan.batching import array_batches
from trainables.gan.loop import GanTrainer, train_gan
from trainables.gan.run_files import RunFiles, load_checkpoint

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


def minority_meta(manifest, cfg: GanConfig | None = None) -> dict[str, Any]:
    labels = trained_labels(cfg, manifest) if cfg is not None else [manifest.positive_label]
    # the GAN's main label (evaluation samples, single-class file names): the minority class when learnt
    label = manifest.positive_label if manifest.positive_label in labels else labels[0]
    return {"label": label, "label_name": manifest.classes[label], "classes": manifest.classes,
            "manifest": str(manifest.path), "conditional": bool(cfg is not None and cfg.conditional),
            "trained_labels": labels, "trained_label_names": [manifest.classes[x] for x in labels]}


def run_extra(meta: dict) -> dict:
    return {"manifest": meta["manifest"], "label": meta["label"], "label_name": meta["label_name"],
            "conditional": meta["conditional"], "trained_labels": meta["trained_labels"],
            "trained_label_names": meta["trained_label_names"], "num_train_images": meta["num_train_images"]}


def prepare_run(manifest_path, out_dir, cfg):
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


def finish_run(files: RunFiles, cfg: GanConfig, result: dict, preview, t0: float) -> dict:
    history = files.read_history()
    last = history[-1] if history else {}
    for k in ("loss_D", "loss_G", "D_x", "D_G_z", "images_per_s"):
        if result.get(k) is None and k in last:  # resumed an already finished run: nothing trained now
            result[k] = last[k]
    if preview is not None:
        files.save_preview(preview)
    files.save_loss_curve(history)
    latest, best = files.latest_checkpoint(), files.best_checkpoint()
    result.update(time_s=time.perf_counter() - t0, num_epochs=cfg.num_epochs, loss=cfg.loss,
                  checkpoint=str(latest) if latest else None, run_dir=str(files.root),
                  best_checkpoint=str(best) if best else None)
    if best is not None and result.get("best_epoch") is None:  # resumed a finished run: the epoch is in the file
        result["best_epoch"] = int(torch.load(best, map_location="cpu", weights_only=True)["epoch"])
    files.write_metrics(result)
    return result


def training_images(manifest, cfg: GanConfig, meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real training images of the trained classes -> (uint8 (N, C, S, S), class indices (N,), a uint8
    (<= 64, S, S, C) preview). Decoded channels first and kept uint8 (a quarter of float32's memory);
    train_gan makes each batch float on the trainer's device (data_prep.arrays.normalize_batch, same bits)."""
    from data_prep.arrays import load_split_arrays

    parts = []
    for label in meta["trained_labels"]:
        imgs, _ = load_split_arrays(manifest, "train", cfg.image_size, cfg.channels, label=label,
                                    include_synthetic=False, channels_first=True)
        if len(imgs) == 0:
            what = "minority class" if label == manifest.positive_label else "class"
            raise DataError(f"manifest {manifest.path} has no real training images of the {what} "
                            f"{manifest.classes[label]!r} (label {label}): nothing to train the GAN on")
        parts.append(imgs)
    meta["num_train_images"] = int(sum(len(p) for p in parts))
    meta["num_train_images_per_class"] = {manifest.classes[x]: int(len(a))
                                          for x, a in zip(meta["trained_labels"], parts)}
    first = _interleave(parts) if cfg.conditional else np.concatenate([p[:64] for p in parts])[:64]
    preview = first.transpose(0, 2, 3, 1)  # channels last, as image files are
    class_idx = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(parts)])
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), class_idx, preview


def run_gan_local(manifest_path: str | Path, out_dir: str | Path, cfg: GanConfig | Mapping[str, Any] | None = None,
                  report: Callable[[dict], Any] | None = None,
                  evaluate: Callable[[Callable[[int], Any], int], dict] | None = None,
                  vgg: torch.nn.Module | None = None) -> dict[str, Any]:
    """Train in this process on the manifest's minority-class real training images (or cfg.classes'); resume
    from out_dir/checkpoints if present. `report(metrics)` gets each epoch (default: print a progress line);
    `vgg`: a VGG-layout feature net for the perceptual term instead of loading cfg.vgg_weights (tests).
    Returns the final metrics (also in out_dir/metrics.json): status "finished" | "diverged", reason, ..."""
    t0 = time.perf_counter()
    manifest, cfg, files = prepare_run(manifest_path, out_dir, cfg)
    meta = minority_meta(manifest, cfg)
    images, class_idx, preview = training_images(manifest, cfg, meta)
    files.save_real_preview(preview)
    trainer = GanTrainer(cfg, cfg.device, meta=meta, vgg=vgg)
    latest = files.latest_checkpoint()
    if latest is not None:
        trainer.load_state_dict(load_checkpoint(latest, trainer.device), where=str(latest))
    files.truncate_history(trainer.epoch)
    files.write_config(cfg, {**run_extra(meta), "num_train_images_per_class": meta["num_train_images_per_class"],
                             "resumed_from_epoch": trainer.epoch})

    def on_epoch(metrics: dict) -> None:
        files.append_history(metrics)
        if report is None:
            print(format_progress(metrics, cfg.num_epochs), flush=True)
        else:
            report(metrics)

    data = torch.from_numpy(images).to(trainer.device)  # uint8: the trained classes fit in device memory
    labels = torch.from_numpy(class_idx).to(trainer.device) if cfg.conditional else None
    result = train_gan(cfg, array_batches(data, cfg.batch_size, cfg.seed, labels=labels, balanced=cfg.balanced_epochs),
                       on_epoch,
                       trainer=trainer, checkpoint=lambda s, e: files.save_checkpoint(s, e, cfg.keep_checkpoints),
                       samples=files.save_samples, evaluate=evaluate, best_checkpoint=files.save_best)
    return finish_run(files, cfg, result, trainer.fixed_samples(), t0)
