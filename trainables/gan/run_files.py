"""The run directory of one GAN training run and everything written into it.

    RUN/config.json                 resolved GanConfig (+ the data it trained on)
    RUN/checkpoints/checkpoint_000010.pt   G, D, G_ema, both optimizers, epoch, config (last M kept)
    RUN/checkpoints/best.pt         the checkpoint of the lowest validation KID so far (kept whatever M is)
    RUN/samples/epoch_0010.png      fixed-noise 8x8 grid from G_ema every cfg.sample_every epochs
    RUN/history.jsonl               one JSON object per epoch (loss_D, loss_G, D_x, D_G_z, images_per_s, ...)
    RUN/preview.png                 final 8x8 grid; RUN/loss_curve.png; RUN/metrics.json (status, reason, ...)
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from data_prep.config import config_to_dict
from data_prep.errors import ConfigError, DataError

CHECKPOINT_RE = re.compile(r"^checkpoint_(\d{6})\.pt$")
BEST_CHECKPOINT = "best.pt"  # not matched by CHECKPOINT_RE: never pruned, never the one a run resumes from


def check_writable_dir(path: str | Path, what: str = "output directory") -> Path:
    """Create `path` if needed and prove it is writable; the error names the directory."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable: {exc.strerror or exc}") from exc
    return path


def image_grid(images: np.ndarray, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (rows*H + pads, cols*W + pads, C) grid image."""
    n, h, w, c = images.shape
    ncols = min(ncols, max(n, 1))
    nrows = max(1, math.ceil(n / ncols))
    grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def save_png(img: np.ndarray, path: str | Path) -> None:
    arr = img[:, :, 0] if img.shape[2] == 1 else img
    Image.fromarray(arr, mode="L" if img.shape[2] == 1 else "RGB").save(path)


def json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """torch.load(weights_only=True) of a checkpoint file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated file, pickle with code, not a torch file at all
        raise DataError(f"{path}: not a loadable GAN checkpoint ({type(exc).__name__}: {exc})") from exc
    from trainables.gan.state import check_checkpoint_format
    check_checkpoint_format(state, str(path))
    return state


class RunFiles:
    def __init__(self, out_dir: str | Path):
        self.root = check_writable_dir(out_dir, "run directory")
        self.checkpoints = self.root / "checkpoints"
        self.samples = self.root / "samples"
        self.checkpoints.mkdir(exist_ok=True)
        self.samples.mkdir(exist_ok=True)
        self.history_path = self.root / "history.jsonl"

    def write_config(self, cfg, extra: dict | None = None) -> None:
        data = config_to_dict(cfg)
        if extra:
            data["_run"] = json_safe(extra)
        (self.root / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    # history ------------------------------------------------------------------------------------------
    def read_history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def truncate_history(self, last_epoch: int) -> None:
        """On resume: drop epochs after the checkpoint (they will be trained again)."""
        rows = [r for r in self.read_history() if int(r.get("epoch", 0)) <= last_epoch]
        self.history_path.write_text("".join(json.dumps(json_safe(r)) + "\n" for r in rows))

    def append_history(self, metrics: dict) -> None:
        with self.history_path.open("a") as f:
            f.write(json.dumps(json_safe(metrics)) + "\n")

    # checkpoints --------------------------------------------------------------------------------------
    def checkpoint_paths(self) -> list[Path]:
        return sorted(p for p in self.checkpoints.iterdir() if CHECKPOINT_RE.match(p.name))

    def latest_checkpoint(self) -> Path | None:
        paths = self.checkpoint_paths()
        return paths[-1] if paths else None

    def best_checkpoint(self) -> Path | None:
        path = self.checkpoints / BEST_CHECKPOINT
        return path if path.is_file() else None

    def save_best(self, state: dict, epoch: int) -> Path:
        """The best-KID checkpoint (train_gan's best_checkpoint hook): one file, replaced atomically, never pruned."""
        path = self.checkpoints / BEST_CHECKPOINT
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def sampling_checkpoint(self) -> Path | None:
        """What a synthetic set is sampled from: the best-KID checkpoint when evaluations ran, else the latest."""
        return self.best_checkpoint() or self.latest_checkpoint()

    def save_checkpoint(self, state: dict, epoch: int, keep: int) -> Path:
        path = self.checkpoints / f"checkpoint_{epoch:06d}.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a crash mid-write never leaves a truncated "latest" checkpoint
        for old in self.checkpoint_paths()[:-keep]:
            old.unlink()
        return path

    # pictures and the final summary -------------------------------------------------------------------
    def save_samples(self, epoch: int, images: np.ndarray) -> Path:
        path = self.samples / f"epoch_{epoch:04d}.png"
        save_png(image_grid(images), path)
        return path

    def save_preview(self, images: np.ndarray) -> Path:
        path = self.root / "preview.png"
        save_png(image_grid(images[:64]), path)
        return path

    def save_real_preview(self, images: np.ndarray) -> Path:
        """The real training images the GAN learns from, as a grid beside preview.png (for the report)."""
        path = self.root / "real_preview.png"
        save_png(image_grid(images[:64]), path)
        return path

    def save_loss_curve(self, history: list[dict] | None = None) -> Path | None:
        history = self.read_history() if history is None else history
        if not history:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in history]
        ada = any(r.get("ada_p") is not None for r in history)
        fig, axes = plt.subplots(1, 3 if ada else 2, figsize=(15 if ada else 10, 3.5))
        ax1, ax2 = axes[0], axes[1]
        for key in ("loss_D", "loss_G"):
            ax1.plot(epochs, [np.nan if r.get(key) is None else r[key] for r in history], label=key)
        for key, label in (("D_x", "D(x)"), ("D_G_z", "D(G(z))")):
            ax2.plot(epochs, [np.nan if r.get(key) is None else r[key] for r in history], label=label)
        ax1.set_xlabel("epoch"), ax1.set_title("losses"), ax1.legend()
        ax2.set_xlabel("epoch"), ax2.set_title("discriminator outputs"), ax2.legend()
        if ada:  # ADA: the augmentation probability and the overfitting heuristic it follows
            for key, label in (("ada_p", "p (augment probability)"), ("ada_rt", "r_t (overfitting)")):
                axes[2].plot(epochs, [np.nan if r.get(key) is None else r[key] for r in history], label=label)
            axes[2].set_xlabel("epoch"), axes[2].set_title("ADA"), axes[2].legend()
        fig.tight_layout()
        path = self.root / "loss_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def write_metrics(self, metrics: dict) -> Path:
        path = self.root / "metrics.json"
        path.write_text(json.dumps(json_safe(metrics), indent=2, sort_keys=True) + "\n")
        return path
