"""CLI: python -m data_prep --source demo|PATH --out DIR [--seed N] [--image-size S] [--channels 1|3] [--dry-run]
                           [--smoke-test]

Prints per-split, per-class counts and the imbalance ratio; writes DIR/manifest.parquet unless --dry-run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from data_prep import PrepConfig, parse_label_map, prepare
from data_prep.errors import ConfigError, DataError, LeakageError


def summary(m) -> str:
    real = m.df[~m.df["is_synthetic"]]
    table = real.groupby(["split", "label_name"]).size().unstack("label_name", fill_value=0)
    table = table.reindex(["train", "val", "test"]).fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    counts = real["label_name"].value_counts()
    lines = [table.to_string(), "",
             f"classes: {m.classes}   positive (minority) class: {m.positive_class!r} (label {m.positive_label})",
             f"imbalance ratio (largest / smallest class): {counts.max() / counts.min():.2f}:1"]
    if m.meta.get("skipped_files"):
        lines.append(f"skipped {len(m.meta['skipped_files'])} unreadable file(s):")
        lines += [f"  {f}: {why}" for f, why in m.meta["skipped_files"]]
    if m.meta.get("duplicates_moved_to_held_out"):
        lines.append(f"{m.meta['duplicates_moved_to_held_out']} duplicate image(s) that straddled the given "
                     f"splits were moved to the most held-out split holding a copy")
    if m.meta.get("groups_moved_to_held_out"):
        g = m.meta["groups_moved_to_held_out"]
        lines.append(f"{g['images']} image(s) of {g['groups']} group(s) (patients) that crossed the given splits were "
                     f"moved to the most held-out split holding one of their images (--move-crossing-groups)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="'demo', a class-folder directory (or DIR/{train,val,test}/<class>/), "
                                                   "a .csv (path,label[,group][,split]) or a .npz")
    p.add_argument("--out", help="output folder for manifest.parquet (required unless --dry-run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test (sum 1)")
    p.add_argument("--use-given-split", action="store_true",
                   help="keep the source's split: npz train/val/test keys, DIR/{train,val,test}/<class>/ folders or a "
                        "CSV split column (a missing val is carved from train)")
    p.add_argument("--resplit", action="store_true",
                   help="split folders / CSV split column: pool all images and split anew with --fractions, --seed")
    p.add_argument("--move-crossing-groups", action="store_true",
                   help="given split: a group (patient) with images in several splits moves whole to the most held-out "
                        "of them (test > val > train) instead of being an error")
    p.add_argument("--relabel", help="merge classes: SRC=TASK,SRC=TASK,... (e.g. MT_Crack=defect,MT_Free=good)")
    p.add_argument("--positive", help="task class that counts as positive (default: least frequent in train)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--skip-bad", action="store_true", help="report and skip unreadable images instead of failing")
    p.add_argument("--allow-outside-root", action="store_true", help="CSV paths may leave the CSV's folder")
    p.add_argument("--demo-counts", default="1000,100", help="demo: majority,minority image counts")
    p.add_argument("--dry-run", action="store_true", help="scan and split, print counts, write nothing")
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny and fast: the demo source (unless --source is given) with 60 + 12 images of 16 px, "
                        "written to --out or, without it, to a temporary folder that is removed")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.smoke_test:
        args.source = args.source or "demo"
        args.demo_counts, args.image_size = "60,12", 16
        args.dry_run = args.dry_run or not args.out
    if not args.source:
        p.error("--source is required: 'demo', a class-folder directory, a .csv or a .npz")
    try:
        fractions = tuple(float(x) for x in args.fractions.split(","))
        maj, mino = (int(x) for x in args.demo_counts.split(","))
    except ValueError:
        print(f"error: --fractions must be three numbers and --demo-counts two integers "
              f"(got {args.fractions!r}, {args.demo_counts!r})", file=sys.stderr)
        return 2
    if not args.out and not args.dry_run:
        print("error: --out DIR is required (or use --dry-run)", file=sys.stderr)
        return 2
    try:
        demo_size = {"demo_image_size": 16} if args.smoke_test else {}
        cfg = PrepConfig(**demo_size, source=args.source, seed=args.seed, fractions=fractions,
                         use_given_split=args.use_given_split, resplit=args.resplit,
                         move_crossing_groups=args.move_crossing_groups, label_map=parse_label_map(args.relabel),
                         positive_class=args.positive, channels=args.channels, image_size=args.image_size,
                         skip_bad=args.skip_bad, allow_outside_root=args.allow_outside_root,
                         demo_num_majority=maj, demo_num_minority=mino)
        if args.dry_run:
            with tempfile.TemporaryDirectory() as tmp:  # demo.npz and the manifest go nowhere
                m = prepare(cfg, tmp)
        else:
            m = prepare(cfg, args.out)
    except (DataError, ConfigError, LeakageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(m))
    if not args.dry_run:
        print(f"\nwrote {Path(args.out) / 'manifest.parquet'}")
    else:
        print("\n(dry run: nothing written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
