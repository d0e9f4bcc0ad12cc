"""Bulk generation from a trained GAN checkpoint: PNG files + synthetic manifest rows (training data only).

    python -m trainables.gan.sample --checkpoint RUN/checkpoints/checkpoint_000050.pt --num-samples 1000 \
        --batch-size 256 --output-dir runs/synthetic [--preview-only] [--seed S] [--device auto|cpu|cuda] [--overwrite]
        [--label NAME ...]      (class-conditional generators: which trained classes; default all of them)

writes DIR/synthetic_<label name>_000000.png ... and DIR/manifest.parquet (data_prep.manifest.write_synthetic_rows:
image_id, source, label, label_name, sha256, generator, width, height, channels; split is always "train").
--preview-only writes DIR/preview.png (an 8x8 grid) and nothing else. Existing files are never overwritten
unless --overwrite is given (then the old synthetic_<label>_* files are removed first).

A class-conditional generator writes --num-samples images PER CLASS, for each --label (repeatable or a
comma list; default: every class it was trained on), each class with its name in the file names and its
label in the rows; the noise depends on --seed only, so a class's images are the same whichever other
classes are sampled with it. Asking for a class the generator was not trained on is an error naming the
trained classes (an unconditional generator knows exactly one class).

Python: `load_generator(path, device)` -> (G_ema, GanConfig, meta); `generate_images(path, n, seed[, label])`
-> uint8 NHWC.
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
from trainables.gan.batching import iter_generated
from trainables.gan.networks import build_generator
from trainables.gan.run_files import check_writable_dir, image_grid, load_checkpoint, save_png


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is visible")
    return device


def load_generator(checkpoint_path: str | Path, device: str = "cpu"
                   ) -> tuple[torch.nn.Module, GanConfig, dict[str, Any]]:
    """Checkpoint -> (G_ema in eval mode on `device`, its GanConfig, meta incl. label, label_name, epoch)."""
    device = resolve_device(device)
    state = load_checkpoint(checkpoint_path, "cpu")
    cfg = gan_config_from_dict(state["config"])
    G = build_generator(cfg)  # the checkpoint's arch (configs older than the field: dcgan)
    try:
        G.load_state_dict(state["G_ema"])
    except RuntimeError as exc:  # the weights do not fit the architecture the saved config describes
        raise ConfigError(f"{checkpoint_path}: G_ema weights do not match its config (arch={cfg.arch}, "
                          f"image_size={cfg.image_size}, "
                          f"channels={cfg.channels}, latent_dim={cfg.latent_dim}, ngf={cfg.ngf}, "
                          f"conditional={cfg.conditional}, classes={list(cfg.classes)}): {exc}") from exc
    meta = dict(state.get("meta") or {})
    meta.setdefault("label", 1)
    meta.setdefault("label_name", str(meta["label"]))
    meta["conditional"] = bool(cfg.conditional)
    if cfg.conditional:
        names = meta.get("trained_label_names") or [str(c) for c in cfg.classes]
        meta["trained_labels"], meta["trained_label_names"] = [int(c) for c in cfg.classes], list(names)
    else:
        meta["trained_labels"], meta["trained_label_names"] = [int(meta["label"])], [str(meta["label_name"])]
    meta["epoch"] = int(state["epoch"])
    meta["checkpoint"] = str(Path(checkpoint_path).resolve())
    return G.to(device).eval(), cfg, meta


def _check_num_samples(num_samples: int) -> None:
    if not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")


def sample_classes(meta: dict[str, Any], labels=None, where: str = "generator") -> list[tuple[int | None, int, str]]:
    """Requested classes (names or labels; a comma list is split; None = every trained class) ->
    [(class index for G or None when unconditional, manifest label, label name)]. A class the generator
    was not trained on is a ConfigError naming it and the trained ones."""
    names, ints = list(meta["trained_label_names"]), [int(x) for x in meta["trained_labels"]]
    if labels is None:
        wanted = names
    else:
        wanted = [w.strip() for item in ([labels] if isinstance(labels, (str, int)) else labels)
                  for w in str(item).split(",") if w.strip()]
        if not wanted:
            raise ConfigError(f"no class given to sample; {where} was trained on {names}")
    out = []
    for w in wanted:
        if w in names:
            i = names.index(w)
        elif w.lstrip("-").isdigit() and int(w) in ints:
            i = ints.index(int(w))
        else:
            kind = "class-conditional generator" if meta["conditional"] else "unconditional generator"
            raise ConfigError(f"cannot sample class {w!r}: the {kind} {where} was trained on "
                              f"{names} (labels {ints}) only" + ("" if meta["conditional"] else
                              "; train a GAN on that class (classes=[...]) or a conditional one"))
        entry = (i if meta["conditional"] else None, ints[i], names[i])
        if entry in out:
            raise ConfigError(f"class {names[i]!r} requested more than once")
        out.append(entry)
    return out


def generate_images(checkpoint_path: str | Path, num_samples: int, seed: int = 0, device: str = "cpu",
                    batch_size: int = 256, label: str | int | None = None) -> np.ndarray:
    """num_samples images from the checkpoint's G_ema as uint8 (N, H, W, C); same seed -> same images.
    A conditional generator samples class `label` (name or manifest label; default its main/minority label)."""
    _check_num_samples(num_samples)
    G, cfg, meta = load_generator(checkpoint_path, device)
    ((idx, _, _),) = sample_classes(meta, meta["label_name"] if label is None else [label], str(checkpoint_path))
    return np.concatenate(list(iter_generated(G, num_samples, cfg.latent_dim, seed, device, batch_size, idx)))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "class"


def write_samples(checkpoint_path: str | Path, num_samples: int, output_dir: str | Path, batch_size: int = 256,
                  seed: int = 0, device: str = "auto", preview_only: bool = False, overwrite: bool = False,
                  progress: bool = True, labels=None) -> Path:
    """Write PNGs + DIR/manifest.parquet (or only DIR/preview.png); returns the manifest/preview path.
    labels: classes to sample from a conditional generator (names/labels; None = all it was trained on),
    num_samples each; an unconditional generator accepts only its own class."""
    from tqdm import tqdm

    from data_prep.images import image_sha256
    from data_prep.manifest import write_synthetic_rows

    _check_num_samples(num_samples)
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = resolve_device(device)
    G, cfg, meta = load_generator(checkpoint_path, device)
    wanted = sample_classes(meta, labels, str(checkpoint_path))
    out = check_writable_dir(output_dir)
    prefixes = [f"synthetic_{_safe(name)}_" for _, _, name in wanted]
    if preview_only:
        path = out / "preview.png"
        if path.exists() and not overwrite:
            raise DataError(f"{path} exists; pass --overwrite to replace it")
        per_class = max(1, min(num_samples, 64) // len(wanted))  # one block of rows per class
        images = np.concatenate([np.concatenate(list(iter_generated(G, per_class, cfg.latent_dim, seed, device,
                                                                    batch_size, idx))) for idx, _, _ in wanted])
        save_png(image_grid(images), path)
        return path
    existing = sorted(f for prefix in prefixes for f in out.glob(f"{prefix}*.png"))
    existing += [out / "manifest.parquet"] if (out / "manifest.parquet").exists() else []
    if existing and not overwrite:
        raise DataError(f"{out} already holds {len(existing)} generated file(s) (e.g. {existing[0].name}); "
                        f"refusing to overwrite - pass --overwrite or choose another --output-dir")
    for old in existing:
        old.unlink()
    rows = []
    generator_name = meta["checkpoint"]
    with tqdm(total=num_samples * len(wanted), desc="generating", unit="img", disable=not progress) as bar:
        for (idx, label, label_name), prefix in zip(wanted, prefixes):
            i = 0
            for batch in iter_generated(G, num_samples, cfg.latent_dim, seed, device, batch_size, idx):
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
    p.add_argument("--checkpoint", help="RUN/checkpoints/checkpoint_XXXXXX.pt (or RUN/checkpoints/best.pt)")
    p.add_argument("--num-samples", type=int, help="images to generate (> 0), per class")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="class to sample (repeatable or comma list; conditional generators; default: all trained)")
    p.add_argument("--batch-size", type=int, default=256, help="images per generator forward pass")
    p.add_argument("--output-dir")
    p.add_argument("--smoke-test", action="store_true", help="tiny and fast: a 1-epoch GAN of width 8 on 12 demo "
                   "images, 16 of its samples into --output-dir or a temporary folder that is removed")
    p.add_argument("--preview-only", action="store_true", help="write only DIR/preview.png (8x8 grid)")
    p.add_argument("--seed", type=int, default=0, help="noise seed: same seed -> same images")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing generated files in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.smoke_test:
        return _smoke(args)
    if not (args.checkpoint and args.num_samples is not None and args.output_dir):
        p.error("--checkpoint, --num-samples and --output-dir are required (or --smoke-test)")
    try:
        path = write_samples(args.checkpoint, args.num_samples, args.output_dir, args.batch_size, args.seed,
                             args.device, args.preview_only, args.overwrite, progress=not args.no_progress,
                             labels=args.label)
    except (ConfigError, DataError, LeakageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}" if args.preview_only else f"wrote {args.num_samples} images per class and {path}")
    return 0


def smoke_gan(folder: Path) -> tuple[Path, Path]:
    """A real GAN in seconds for smoke tests: data_prep's smoke demo (60 + 12 images) -> a 1-epoch GAN of width 8
    in `folder` -> (its manifest, its checkpoint). Used by this module's and analysis.export's --smoke-test."""
    from data_prep import PrepConfig, prepare
    from trainables.gan.run import run_gan_local

    folder = Path(folder)
    prepare(PrepConfig(source="demo", demo_image_size=16, image_size=32, demo_num_majority=60, demo_num_minority=12),
            folder / "data", progress=False)
    manifest = folder / "data" / "manifest.parquet"
    run_gan_local(manifest, folder / "gan", {"num_epochs": 1, "ngf": 8, "ndf": 8, "batch_size": 8, "device": "cpu",
                                             "eval_every": 0, "sample_every": 0}, report=lambda m: None)
    return manifest, sorted((folder / "gan" / "checkpoints").glob("checkpoint_*.pt"))[-1]


def _smoke(args) -> int:
    """--smoke-test: smoke_gan's 1-epoch GAN -> 16 samples (a real checkpoint, seconds)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sample_smoke_") as tmp:
        _, ckpt = smoke_gan(Path(tmp))
        out = Path(args.output_dir) if args.output_dir else Path(tmp) / "samples"
        write_samples(ckpt, 16, out, seed=args.seed, device="cpu", overwrite=args.overwrite, progress=False)
        n = len(list(out.glob("*.png")))
        print(f"smoke test: {n} PNG(s) and their manifest.parquet from a 1-epoch GAN in "
              f"{out if args.output_dir else 'a temporary folder, removed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
