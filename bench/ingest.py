"""Ingest benchmark: decode + resize + normalise throughput of our Ray Data path vs ImageFolder + DataLoader.

    python bench/ingest.py [--num-majority 2000 --num-minority 200 --size 64 --resize 32 --workers 2]

Writes the demo set as PNG files in a temp folder, then, side by side in one run:
  ours   : manifest rows -> data_prep.shards.split_dataset (Ray Data map_batches, materialised) -> iterate
  torch  : torchvision.datasets.ImageFolder + DataLoader(num_workers=W) with Resize/ToTensor/Normalize
Both produce float32 (C, S, S) tensors in [-1, 1] (ours keeps uint8 and normalises each batch, as the loops
do). Ray starts, and both pipelines are warmed on 64 images, before timing.
Prints images/s for the first pass and for a second epoch (ours reads the materialised cache) and the ratios.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-majority", type=int, default=2000)
    p.add_argument("--num-minority", type=int, default=200)
    p.add_argument("--size", type=int, default=64, help="side of the PNGs written")
    p.add_argument("--resize", type=int, default=32, help="side both pipelines resize to")
    p.add_argument("--workers", type=int, default=2, help="CPUs for Ray and DataLoader workers")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()

    import ray
    import torch
    from torchvision import datasets, transforms

    import data_prep
    from data_prep.demo import write_demo_pngs
    from data_prep.arrays import normalize_batch
    from data_prep.shards import split_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = write_demo_pngs(Path(tmp) / "pngs", args.num_majority, args.num_minority, args.size)
        m = data_prep.prepare(data_prep.PrepConfig(source=str(root)), Path(tmp) / "prep", progress=False)
        n = len(m.df)
        print(f"{n} PNG images {args.size}px -> {args.resize}px, {args.workers} workers, batch {args.batch_size}")

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False

        # one-time costs (module imports in Ray workers, the first iter_torch_batches' setup) are paid
        # once per process in a sweep: warm both pipelines on a few images before timing
        for _ in split_dataset(m, "warm-up", args.resize, 3, rows=m.df.iloc[:64]).iter_torch_batches(batch_size=32):
            pass

        t0 = time.perf_counter()
        ds = split_dataset(m, "all", args.resize, 3, rows=m.df)
        count = sum(len(normalize_batch(b["image"])) for b in ds.iter_torch_batches(batch_size=args.batch_size))
        ours_first = time.perf_counter() - t0
        assert count == n
        t0 = time.perf_counter()
        count = sum(len(normalize_batch(b["image"])) for b in ds.iter_torch_batches(batch_size=args.batch_size))
        ours_second = time.perf_counter() - t0

        tf = transforms.Compose([transforms.Resize((args.resize, args.resize)), transforms.ToTensor(),
                                 transforms.Normalize([0.5] * 3, [0.5] * 3)])
        loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), transform=tf),
                                             batch_size=args.batch_size, num_workers=args.workers)
        warm = torch.utils.data.Subset(loader.dataset, range(64))
        for _ in torch.utils.data.DataLoader(warm, batch_size=32, num_workers=args.workers):
            pass
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            count = sum(len(y) for _, y in loader)
            times.append(time.perf_counter() - t0)
            assert count == n
        ray.shutdown()

    rows = [("ours (Ray Data)", ours_first, ours_second), ("ImageFolder+DataLoader", times[0], times[1])]
    print(f"{'pipeline':<24}{'pass 1 img/s':>14}{'epoch 2 img/s':>15}")
    for name, a, b in rows:
        print(f"{name:<24}{n / a:>14,.0f}{n / b:>15,.0f}")
    print(f"ratio ours/torch  pass 1: {times[0] / ours_first:.2f}x   epoch 2: {times[1] / ours_second:.2f}x"
          f"   (goal >= 1.0)")


if __name__ == "__main__":
    main()
