"""Memory benchmark: peak RSS of one in-process classifier trial and one GAN trial, uint8 splits vs float32.

    python bench/memory.py [--sizes 64 224] [--train-images 2000] [--train-batches 3] [--modes uint8 float32]
    python bench/memory.py --code-root /path/to/other/checkout     # that tree's code, as it is, beside ours

Makes the built-in demo set (the project's own npz writer, 64 px sources, resized by the trials to each size)
in a temporary folder, never in the repo: --train-images images in the train split (90 %, val and test 5 %
each), a third of them of the minority class, so the GAN has a sizeable set too. Then, per size and mode,
runs run_classifier_local (small_cnn, batch 64) and run_gan_local (narrow DCGAN, batch 64; 224 px trains at
256) for one epoch each in a fresh child process, and prints the child's peak resident memory (getrusage
ru_maxrss), the same before the trial (after imports and the npz source's cache), their difference, and what
the kept splits weigh. The whole split is decoded and held as a real trial does, but an epoch trains only its
first --train-batches batches (0 = all): every batch has the same size, so the peak is reached in the first
ones, and a 224 px epoch on 2 CPU cores would take minutes for no other figure (evaluation stays whole).

Modes: uint8 = the code as it is (splits kept uint8, each batch made float on its device);
float32 = the old in-process path put back for comparison (the classifier's three splits and the GAN's
training images normalised to float32 up front, as before issue 16 item 5). --code-root runs another
checkout's code unchanged (e.g. `git archive <old commit> | tar -x -C DIR`), for a before/after check.
CPU only; every mode runs the same settings and seeds, in its own process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _patch_float32() -> None:
    """Put the old float32 split back: whole splits normalised up front (what the code did before)."""
    import numpy as np
    import torch

    import trainables.classifier.run as clf_run
    import trainables.gan.run as gan_run
    from data_prep.arrays import decode_rows, normalize

    def load_tensors_float32(rows, image_size, channels):
        x = normalize(decode_rows(rows, image_size, channels))
        return torch.from_numpy(np.array(x)), torch.as_tensor(rows["label"].to_numpy(np.int64).copy())

    real_training_images = gan_run.training_images

    def training_images_float32(manifest, cfg, meta):
        images, class_idx, preview = real_training_images(manifest, cfg, meta)
        return normalize(images.transpose(0, 2, 3, 1)), class_idx, preview

    clf_run.load_tensors = load_tensors_float32
    gan_run.training_images = training_images_float32


def _limit_train_batches(k: int) -> None:
    """Train on the first k batches of each epoch (the data is still loaded whole); evaluation is untouched."""
    import itertools

    import trainables.classifier.run as clf_run
    import trainables.gan.run as gan_run

    if k <= 0:
        return
    tensor_batches, array_batches = clf_run.tensor_batches, gan_run.array_batches

    def first_tensor_batches(*a, **kw):
        it = tensor_batches(*a, **kw)
        return it if kw.get("with_index") else itertools.islice(it, k)

    def first_array_batches(*a, **kw):
        batches = array_batches(*a, **kw)
        return lambda epoch: itertools.islice(batches(epoch), k)

    clf_run.tensor_batches, gan_run.array_batches = first_tensor_batches, first_array_batches


def _child(spec: dict) -> dict:
    """One trial in this (fresh) process -> its peak RSS before and after, and its wall time."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from data_prep.arrays import decode_rows
    from data_prep.manifest import read_manifest
    from trainables.classifier.run import run_classifier_local
    from trainables.gan.run import run_gan_local

    if spec["mode"] == "float32":
        _patch_float32()
    _limit_train_batches(int(spec["train_batches"]))
    m = read_manifest(spec["manifest"])
    decode_rows(m.df.iloc[:1], 8, 3)  # loads the npz source into its cache: counted in the baseline
    before = _peak_rss_mb()
    t0 = time.perf_counter()
    size, out = int(spec["size"]), Path(spec["out"])
    if spec["stage"] == "classifier":
        r = run_classifier_local(spec["manifest"], out, {"model": "small_cnn", "image_size": size, "batch_size": 64,
                                                         "num_epochs": 1, "device": "cpu"})
        n = r["data"]["train"]
    else:
        r = run_gan_local(spec["manifest"], out, {"image_size": size, "ngf": 8, "ndf": 8, "batch_size": 64,
                                                  "num_epochs": 1, "sample_every": 0,
                                                  "device": "cpu"}, report=lambda row: None)
        n = {"minority": r.get("num_train_images")}
    return {"peak_before_mb": before, "peak_mb": _peak_rss_mb(), "seconds": time.perf_counter() - t0,
            "train_images": n}


def _run_child(spec: dict, code_root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root), "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                       cwd=code_root, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"child {spec['stage']} {spec['size']} px {spec['mode']} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def make_data(work: Path, train_images: int) -> tuple[Path, dict]:
    """The demo set (64 px npz) split 90/5/5 -> manifest path and the per-split image counts."""
    sys.path.insert(0, str(ROOT))
    import data_prep

    total = round(train_images / 0.90)
    minority = total // 3
    m = data_prep.prepare(data_prep.PrepConfig(source="demo", demo_num_majority=total - minority,
                                               demo_num_minority=minority, demo_image_size=64,
                                               fractions=(0.90, 0.05, 0.05)), work / "data", progress=False)
    counts = m.df.groupby("split").size().to_dict()
    counts["train_minority"] = int(((m.df["split"] == "train") & (m.df["label"] == m.positive_label)).sum())
    return work / "data" / "manifest.parquet", counts


def split_mb(n: int, size: int, channels: int = 3) -> tuple[float, float]:
    """(uint8, float32) size in MB of n images of side `size`."""
    b = n * channels * size * size
    return b / MB, 4 * b / MB


def _gan_side(size: int) -> int:
    return min((32, 64, 128, 256), key=lambda s: (abs(s - size), s))


def _kept_mb(stage: str, size: int, counts: dict) -> tuple[float, float]:
    """What the trial keeps in memory: classifier = train + val + test at `size`; GAN = train minority at its side."""
    if stage == "classifier":
        return split_mb(counts["train"] + counts["val"] + counts["test"], size)
    return split_mb(counts["train_minority"], _gan_side(size))


def run(args) -> list[dict]:
    work = Path(args.work or tempfile.mkdtemp(prefix="memory_bench_", dir="/tmp"))
    manifest, counts = make_data(work, args.train_images)
    print(f"demo set in {work}: {counts} (npz sources 64 px, resized per trial)", flush=True)
    codes = [("this tree", ROOT, m) for m in args.modes]
    if args.code_root:
        codes.append((f"code at {args.code_root}", Path(args.code_root).resolve(), "as-is"))
    rows = []
    for size in args.sizes:
        for stage in ("classifier", "gan"):
            for label, root, mode in codes:
                spec = {"stage": stage, "size": size, "mode": mode, "manifest": str(manifest),
                        "train_batches": args.train_batches,
                        "threads": args.threads, "out": str(work / f"{stage}_{size}_{mode}_{len(rows)}")}
                r = _run_child(spec, root)
                u8, f32 = _kept_mb(stage, size, counts)
                rows.append({"size": size, "stage": stage, "code": label, "mode": mode, **r, "kept_uint8_mb": u8,
                             "trial_mb": r["peak_mb"] - r["peak_before_mb"], "kept_float32_mb": f32})
                _print_row(rows[-1])
    return rows


def _print_row(r: dict) -> None:
    print(f"{r['size']:>4} px  {r['stage']:<10}  {r['mode']:<7}  peak {r['peak_mb']:7.0f} MB  "
          f"(before trial {r['peak_before_mb']:5.0f}, trial +{r['trial_mb']:6.0f})  "
          f"splits kept: {r['kept_uint8_mb']:6.0f} MB as uint8 / {r['kept_float32_mb']:6.0f} MB as float32  "
          f"{r['seconds']:5.1f} s  [{r['code']}]", flush=True)


def summary(rows: list[dict]) -> None:
    print("\npeak RSS per trial, float32 path -> uint8 path (MB; the trial's own share in brackets):")
    for size in sorted({r["size"] for r in rows}):
        for stage in ("classifier", "gan"):
            by = {r["mode"]: r for r in rows if r["size"] == size and r["stage"] == stage}
            if "uint8" in by and "float32" in by:
                a, b = by["float32"], by["uint8"]
                print(f"  {size:>4} px {stage:<10}: {a['peak_mb']:6.0f} -> {b['peak_mb']:6.0f}  "
                      f"(+{a['trial_mb']:.0f} -> +{b['trial_mb']:.0f}; saved {a['peak_mb'] - b['peak_mb']:.0f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="image sides the trials train at")
    p.add_argument("--train-images", type=int, default=2000, help="images in the train split (90 %% of the set)")
    p.add_argument("--train-batches", type=int, default=3, help="batches trained per epoch (0 = all)")
    p.add_argument("--modes", nargs="+", default=["float32", "uint8"], choices=["float32", "uint8"])
    p.add_argument("--code-root", default=None, help="another checkout to run as it is, beside this tree")
    p.add_argument("--threads", type=int, default=2, help="torch threads per trial process")
    p.add_argument("--work", default=None, help="folder for the demo set and run folders (default: a new /tmp dir)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    rows = run(args)
    summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
