"""Bulk generation from a trained GAN checkpoint: PNG files + synthetic manifest rows (training data only).

    python -m trainables.gan.sample --checkpoint RUN/checkpoints/checkpoint_000050.pt --num-samples 1000 \
        --batch-size 256 --output-dir runs/synthetic [--preview-only] [--seed S] [--device auto|cpu|cuda] [--overwrite]

writes DIR/synthetic_<label name>_000000.png ... and DIR/manifest.parquet (data_prep.manifest.write_synthetic_rows:
image_id, source, label, label_name, sha256, generator, width, height, channels; split is always "train").
--preview-only writes DIR/preview.png (an 8x8 grid) and nothing else. Existing files are never overwritten
unless --overwrite is given (then the old synthetic_<label>_* files are removed first).

Python: `load_generator(path, device)` -> (G_ema, GanConfig, meta); `generate_images(path, n, seed)` -> uint8 NHWC.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data_prep.errors import ConfigError, DataError, LeakageError
from trainables.gan.config import GanConfig, gan_config_from_dict
from trainables.gan.loop import iter_generated
from trainables.gan.networks import Generator
from trainables.gan.run_files import check_writable_dir, image_grid, load_checkpoint, save_png


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is visible")
    return device


def load_generator(checkpoint_path: str | Path, device: str = "cpu") -> tuple[Generator, GanConfig, dict[str, Any]]:
    """Checkpoint -> (G_ema in eval mode on `device`, its GanConfig, meta incl. label, label_name, epoch)."""
    device = resolve_device(device)
    state = load_checkpoint(checkpoint_path, "cpu")
    cfg = gan_config_from_dict(state["config"])
    G = Generator(cfg.image_size, cfg.channels, cfg.latent_dim, cfg.ngf)
    try:
        G.load_state_dict(state["G_ema"])
    except RuntimeError as exc:  # the weights do not fit the architecture the saved config describes
        raise ConfigError(f"{checkpoint_path}: G_ema weights do not match its config (image_size={cfg.image_size}, "
                          f"channels={cfg.channels}, latent_dim={cfg.latent_dim}, ngf={cfg.ngf}): {exc}") from exc
    meta = dict(state.get("meta") or {})
    meta.setdefault("label", 1)
    meta.setdefault("label_name", str(meta["label"]))
    meta["epoch"] = int(state["epoch"])
    meta["checkpoint"] = str(Path(checkpoint_path).resolve())
    return G.to(device).eval(), cfg, meta


def _check_num_samples(num_samples: int) -> None:
    if not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")


def generate_images(checkpoint_path: str | Path, num_samples: int, seed: int = 0, device: str = "cpu",
                    batch_size: int = 256) -> np.ndarray:
    """num_samples images from the checkpoint's G_ema as uint8 (N, H, W, C); same seed -> same images."""
    _check_num_samples(num_samples)
    G, cfg, _ = load_generator(checkpoint_path, device)
    return np.concatenate(list(iter_generated(G, num_samples, cfg.latent_dim, seed, device, batch_size)))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "class"


def write_samples(checkpoint_path: str | Path, num_samples: int, output_dir: str | Path, batch_size: int = 256,
                  seed: int = 0, device: str = "auto", preview_only: bool = False, overwrite: bool = False,
                  progress: bool = True) -> Path:
    """Write PNGs + DIR/manifest.parquet (or only DIR/preview.png); returns the manifest/preview path."""
    from tqdm import tqdm

    from data_prep.images import image_sha256
    from data_prep.manifest import write_synthetic_rows

    _check_num_samples(num_samples)
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = resolve_device(device)
    G, cfg, meta = load_generator(checkpoint_path, device)
    out = check_writable_dir(output_dir)
    label, label_name = int(meta["label"]), str(meta["label_name"])
    prefix = f"synthetic_{_safe(label_name)}_"
    if preview_only:
        path = out / "preview.png"
        if path.exists() and not overwrite:
            raise DataError(f"{path} exists; pass --overwrite to replace it")
        images = np.concatenate(list(iter_generated(G, min(num_samples, 64), cfg.latent_dim, seed, device, batch_size)))
        save_png(image_grid(images), path)
        return path
    existing = sorted(out.glob(f"{prefix}*.png")) + ([out / "manifest.parquet"] if (out / "manifest.parquet").exists() else [])
    if existing and not overwrite:
        raise DataError(f"{out} already holds {len(existing)} generated file(s) (e.g. {existing[0].name}); "
                        f"refusing to overwrite - pass --overwrite or choose another --output-dir")
    for old in existing:
        old.unlink()
    rows = []
    generator_name = meta["checkpoint"]
    i = 0
    with tqdm(total=num_samples, desc="generating", unit="img", disable=not progress) as bar:
        for batch in iter_generated(G, num_samples, cfg.latent_dim, seed, device, batch_size):
            for img in batch:
                path = out / f"{prefix}{i:06d}.png"
                save_png(img, path)
                digest = image_sha256(img)
                rows.append({"image_id": f"{path.stem}-{digest[:12]}", "source": str(path), "label": label,
                             "label_name": label_name, "sha256": digest, "generator": generator_name,
                             "width": img.shape[1], "height": img.shape[0], "channels": img.shape[2]})
                i += 1
            bar.update(len(batch))
    return write_synthetic_rows(pd.DataFrame(rows), out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.gan.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="RUN/checkpoints/checkpoint_XXXXXX.pt")
    p.add_argument("--num-samples", type=int, required=True, help="images to generate (> 0)")
    p.add_argument("--batch-size", type=int, default=256, help="images per generator forward pass")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--preview-only", action="store_true", help="write only DIR/preview.png (8x8 grid)")
    p.add_argument("--seed", type=int, default=0, help="noise seed: same seed -> same images")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing generated files in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        path = write_samples(args.checkpoint, args.num_samples, args.output_dir, args.batch_size, args.seed,
                             args.device, args.preview_only, args.overwrite, progress=not args.no_progress)
    except (ConfigError, DataError, LeakageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}" if args.preview_only else f"wrote {args.num_samples} images and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
