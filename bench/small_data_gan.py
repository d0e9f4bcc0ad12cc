"""Benchmark: GANs for a few dozen to a few hundred images - DCGAN + DiffAugment vs residual + ADA, at equal wall time.

    python bench/small_data_gan.py                       # breastmnist + pneumoniamnist minority, 32 px, 3 seeds
    python bench/small_data_gan.py --budget-s 60 --seeds 0,1 --data ../shared/data/breastmnist.npz
    python bench/small_data_gan.py --manifest runs/demo/manifest.parquet --arms resnet_ada   # any manifest

Each arm trains a GAN on the minority class's real training images (the given split) for the same wall time
(its epochs come from a 2-epoch timing run of that arm on this machine), evaluating every tenth of its epochs
on 500 fakes against the real VALIDATION minority images, as the sweep does; the synthetic set is sampled from
the best-KID checkpoint and audited like a sweep's (sweeps.quality.audit_gan). Printed per data set, arm and
seed, and as means: validation KID, recall at the validation set's size and the diversity ratio (domain features and
pixel thumbnails), each also as a ratio to the same metric of the real training images (the real-vs-real value),
plus ADA's final p; then the
arms side by side (resnet+ADA / DCGAN+DiffAugment). Torch uses --threads threads (default 2: the 2-core figure).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
# arm -> the GanConfig values it differs by (Adam betas as the sweep gives each arch: sweeps.config.ARCH_BETAS);
# both at the sweep's defaults otherwise: hinge loss, lr 2e-4, width 32, batch 16
POLICY = {"pneumoniamnist": "xray"}  # ADA's flips/rotations per data set (trainables.arms); others: "standard"
ARMS = {"dcgan_diffaugment": {"arch": "dcgan", "diffaugment": "color,translation,cutout", "betas": (0.5, 0.999)},
        "resnet_ada": {"arch": "resnet", "ada": True, "betas": (0.0, 0.9)}}
BASE = {"loss": "hinge", "lr_g": 2e-4, "lr_d": 2e-4, "ngf": 32, "ndf": 32, "batch_size": 16, "image_size": 32,
        "device": "cpu", "sample_every": 0, "keep_checkpoints": 1}


def prepare(npz: Path, out: Path) -> Path:
    """A 32 px manifest of the .npz's own split (written once under `out`)."""
    import data_prep

    path = out / npz.stem / "manifest.parquet"
    if not path.is_file():
        data_prep.prepare(data_prep.PrepConfig(source=str(npz), use_given_split=True, image_size=32, channels=1),
                          path.parent, progress=False)
    return path


def judge_gan(manifest: Path, values: dict, seed: int, out: Path, evaluator, num_samples: int) -> dict:
    """Train one GAN (run_gan_local with the evaluator), sample its best-KID checkpoint, audit it -> one result."""
    from sweeps.quality import audit_gan
    from trainables.gan.run import run_gan_local
    from trainables.gan.sample import load_generator, write_samples

    t0 = time.perf_counter()
    history: list[dict] = []
    result = run_gan_local(manifest, out, {**values, "seed": seed}, report=history.append, evaluate=evaluator)
    train_s = time.perf_counter() - t0
    if result["status"] != "finished":
        return {"status": result["status"], "reason": result.get("reason"), "train_s": train_s}
    ckpt = result.get("best_checkpoint") or result["checkpoint"]
    write_samples(ckpt, num_samples, out / "synthetic", seed=seed, device="cpu", overwrite=True, progress=False)
    write_samples(ckpt, 64, out / "grid", seed=seed, device="cpu", overwrite=True, progress=False, preview_only=True)
    q = audit_gan(evaluator, [out / "synthetic"], out / "quality")
    return {**q, "status": "ok", "train_s": round(train_s, 1), "epochs": result["epochs"],
            "checkpoint_epoch": load_generator(ckpt)[2]["epoch"], "ada_p": history[-1].get("ada_p"),
            "grid": str(out / "grid" / "preview.png")}


def epochs_for_budget(manifest: Path, values: dict, budget_s: float, work: Path) -> int:
    """Epochs this arm trains in budget_s seconds here: a 2-epoch run (no evaluation) timed, minus its first epoch."""
    from trainables.gan.run import run_gan_local

    hist: list[dict] = []
    run_gan_local(manifest, work, {**values, "num_epochs": 3, "seed": 99}, report=hist.append)
    per_epoch = float(np.mean([h["epoch_time_s"] for h in hist[1:]]))
    return max(2, int(budget_s * 0.85 / per_epoch))  # ~15 % of the budget goes to the evaluations


def run_dataset(manifest: Path, arms: list[str], seeds: list[int], budget_s: float, work: Path) -> list[dict]:
    from data_prep import read_manifest
    from trainables.metrics.generative import make_gan_evaluator

    m = read_manifest(manifest)
    evaluator = make_gan_evaluator(m, 32, int(m.meta.get("channels", 1)), work / "cache", "domain", split="val",
                                   num_samples=500, domain_epochs=8)
    n_train = int(((m.df["split"] == "train") & (m.df["label"] == m.positive_label) & ~m.df["is_synthetic"]).sum())
    rows = []
    for arm in arms:
        values = {**BASE, **ARMS[arm], "ada_policy": POLICY.get(manifest.parent.name, "standard")}
        epochs = epochs_for_budget(manifest, values, budget_s, work / f"{arm}_timing")
        values.update(num_epochs=epochs, eval_every=max(1, epochs // 10), checkpoint_every=max(1, epochs // 10))
        for seed in seeds:
            r = judge_gan(manifest, values, seed, work / f"{arm}_s{seed}", evaluator, min(2000, max(500, n_train)))
            rows.append({"data": manifest.parent.name, "arm": arm, "seed": seed, "n_train": n_train, **r})
            print(line(rows[-1]), flush=True)
    return rows


def line(r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r['data']:<16}{r['arm']:<20}{r['seed']:>5}  {r.get('status')}: {r.get('reason')}"
    p = r.get("ada_p")
    return (f"{r['data']:<16}{r['arm']:<20}{r['seed']:>5}{r['epochs']:>7}{r['checkpoint_epoch']:>6}"
            f"{r['gan_kid']:>9.4f}{r.get('gan_kid_real_ref', np.nan):>9.4f}{r['gan_recall_matched']:>8.3f}"
            f"{r['gan_recall_vs_real']:>8.2f}{r['gan_diversity_ratio']:>8.3f}{r['gan_diversity_vs_real']:>8.2f}"
            f"{r['gan_pixel_diversity_vs_real']:>8.2f}{'' if p is None else f'{p:>7.2f}'}")


HEADER = (f"{'data':<16}{'arm':<20}{'seed':>5}{'epochs':>7}{'ckpt':>6}{'KID':>9}{'KID rr':>9}{'recall':>8}"
          f"{'/real':>8}{'divers':>8}{'/real':>8}{'px/real':>8}{'ada p':>7}")


def summary(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r.get("status") == "ok"])
    if df.empty:
        return "no arm finished"
    cols = ["gan_kid", "gan_recall_vs_real", "gan_diversity_vs_real", "gan_pixel_diversity_vs_real", "train_s"]
    means = df.groupby(["data", "arm"])[cols].mean()
    out = ["means over seeds:", means.round(4).to_string()]
    if set(ARMS) <= set(df["arm"]):
        ratio = (means.xs("resnet_ada", level="arm")[cols[:4]] / means.xs("dcgan_diffaugment", level="arm")[cols[:4]])
        out += ["resnet+ADA / DCGAN+DiffAugment (KID: < 1 is better; recall and diversity shares: > 1 is better):",
                ratio.round(3).to_string()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", help=".npz files (default: breastmnist and pneumoniamnist in "
                                                   "../shared/data)")
    p.add_argument("--manifest", action="append", help="data_prep manifests to use as they are (instead of --data)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {list(ARMS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget-s", type=float, default=90.0, help="wall time of each GAN run (training + evaluations)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", help="folder for the runs (default: a temporary one, removed)")
    p.add_argument("--json", help="write every row here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        p.error(f"unknown arm(s) {bad}; valid: {list(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="small_data_gan_")
    work = Path(args.work or tmp.name)
    if args.manifest:
        manifests = [Path(m) for m in args.manifest]
    else:
        files = [Path(d) for d in (args.data or [DATA / "breastmnist.npz", DATA / "pneumoniamnist.npz"])]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            print(f"data not found: {missing} (the shared real data sets; pass --data or --manifest)", file=sys.stderr)
            return 2
        manifests = [prepare(f, work / "data") for f in files]
    print(f"{len(arms)} arm(s) x {len(seeds)} seed(s) x {len(manifests)} data set(s), {args.budget_s:g} s per GAN, "
          f"{args.threads} torch thread(s)\n{HEADER}", flush=True)
    rows = []
    for m in manifests:
        rows += run_dataset(m, arms, seeds, args.budget_s, work / m.parent.name)
    print(summary(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
