"""Benchmark: our FID/KID (cached real statistics) vs torchmetrics on the same images and feature network.

    python bench/fid.py                                   # CPU: 1000 + 1000 demo images, 64 px, DomainCNN
    python bench/fid.py --network inception --num-real 10000 --num-fake 10000    # GPU: InceptionV3 at 299 px
    python bench/fid.py --network inception --inception-weights PATH              # the real Inception weights

Checks (printed, exit 1 on failure):
  * values: our FID and KID (same KID subsets) equal torchmetrics' within 1e-3 relative;
  * time: one trial with the real reference cached (load the .npz + synthetic features + FID [+ KID]) vs
    torchmetrics for the same real + fake sets (update real + update fake + compute), as a ratio (goal <= 0.55).
"--network inception" without weights uses randomly initialised torchvision InceptionV3: the same cost as
the real network (timing), meaningless values (still the same for both sides, so agreement is checked).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.demo import make_demo_arrays  # noqa: E402
from trainables.metrics.features import DomainCNN, DomainFeatures, InceptionFeatures, extract_features  # noqa: E402
from trainables.metrics.generative import (RealReference, build_reference, frechet_distance,  # noqa: E402
                                           gaussian_stats, kernel_inception_distance)


class DoubleOut(torch.nn.Module):
    """torchmetrics' KID keeps the network's dtype; float64 output keeps its kernel sums exact enough."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def forward(self, x):
        return self.net(x).double()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_network(kind: str, size: int, weights: str | None, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "domain":  # the domain network, random weights (training does not change its cost)
        return DomainFeatures(DomainCNN(3, 2, size), name="bench-domain").to(device)  # BN calibrated in main
    if weights:
        from trainables.metrics.features import load_inception_extractor
        return load_inception_extractor(weights, device)
    import torchvision
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    net.fc = torch.nn.Identity()
    return InceptionFeatures(net, "bench-inception-random", (-1.0, 1.0)).to(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="domain", choices=("domain", "inception"))
    p.add_argument("--inception-weights")
    p.add_argument("--num-real", type=int)
    p.add_argument("--num-fake", type=int)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5, help="timings: best of this many interleaved runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convs on GPU (both sides)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    n_real = args.num_real or (10000 if gpu else 1000)
    n_fake = args.num_fake or n_real
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    # real = minority lesions; fake = majority lesions (a different distribution: FID clearly > 0)
    imgs, labels = make_demo_arrays(num_majority=n_fake, num_minority=n_real, size=args.image_size)
    real, fake = imgs[labels == 1], imgs[labels == 0]
    net = make_network(args.network, args.image_size, args.inception_weights, device)
    if not args.inception_weights:  # random weights: set BatchNorm statistics from data so features vary
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.momentum = None  # cumulative average
            m.train()
        with torch.no_grad():
            for i in range(0, min(len(imgs), 256 if args.network == "inception" and not gpu else 1024), 64):
                net(torch.from_numpy(imgs[i:i + 64]).permute(0, 3, 1, 2).to(device))
        for m in bns:
            m.eval()
    subset = min(1000, n_real // 2, n_fake // 2)  # subsets smaller than the sets, so KID has a spread
    print(f"device {device} ({torch.cuda.get_device_name(device) if gpu else 'cpu'}), network {args.network}, "
          f"{n_real} real + {n_fake} fake at {args.image_size}px, batch {args.batch_size}, KID {args.kid_subsets}x{subset}")

    to_t = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())  # noqa: E731
    real_t, fake_t = to_t(real), to_t(fake)

    def tm_run(with_kid: bool):
        fid = FrechetInceptionDistance(feature=DoubleOut(net)).to(device)
        kid = KernelInceptionDistance(feature=DoubleOut(net), subsets=args.kid_subsets, subset_size=subset).to(device) if with_kid else None
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for metric in [fid] + ([kid] if kid is not None else []):
                for src, is_real in ((real_t, True), (fake_t, False)):
                    for i in range(0, len(src), args.batch_size):
                        metric.update(src[i:i + args.batch_size].to(device, non_blocking=True), real=is_real)
            v_fid = float(fid.compute())
            if kid is not None:
                torch.manual_seed(123)
                km, ks = kid.compute()
        sync(device)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        return dt, v_fid, ((float(km), float(ks)) if kid is not None else None), dc

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "real_ref.npz"
        sync(device)
        t0 = time.perf_counter()
        build_reference(real, net, batch_size=args.batch_size).save(cache)
        sync(device)
        t_build = time.perf_counter() - t0

        def ours_run(with_kid: bool):
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            ref = RealReference.load(cache)  # what a trial does: read the cached real side
            ff = extract_features(net, fake, args.batch_size)
            v_fid = frechet_distance(ref.stats, gaussian_stats(ff))
            kid = (kernel_inception_distance(ref.features, ff, subsets=args.kid_subsets, subset_size=subset, seed=123,
                                             real_kernel=ref.real_kernel())[:2] if with_kid else None)
            sync(device)
            return time.perf_counter() - t0, v_fid, kid, time.process_time() - c0

        extract_features(net, fake[:8], args.batch_size)  # warm-up (cuDNN autotune, lazy init) for both sides
        rows, ok, figures = [], True, {}
        for with_kid in (False, True):
            runs = [(tm_run(with_kid), ours_run(with_kid)) for _ in range(args.repeats)]  # interleaved: fair
            # GPU: wall time. CPU: process CPU time (other processes on a shared machine distort wall time)
            key = 0 if gpu else 3
            tm = min((r[0] for r in runs), key=lambda r: r[key])
            ours = min((r[1] for r in runs), key=lambda r: r[key])
            what = "FID+KID" if with_kid else "FID"
            rel_fid = abs(ours[1] - tm[1]) / abs(tm[1])
            line = (f"{what:8s} torchmetrics {tm[0]:7.3f} s wall {tm[3]:7.3f} s cpu   ours (real cached) {ours[0]:7.3f} s "
                    f"wall {ours[3]:7.3f} s cpu   ratio {ours[key] / tm[key]:.3f} ({'wall' if gpu else 'cpu'} time)"
                    f"   FID {ours[1]:.6g} vs {tm[1]:.6g} (rel {rel_fid:.1e})")
            ok &= rel_fid < 1e-3
            if with_kid:
                rel_kid = abs(ours[2][0] - tm[2][0]) / abs(tm[2][0])
                line += f"   KID {ours[2][0]:.6g} vs {tm[2][0]:.6g} (rel {rel_kid:.1e}), std {ours[2][1]:.3g} vs {tm[2][1]:.3g}"
                ok &= rel_kid < 1e-3
            rows.append((what, ours[key] / tm[key]))
            figures[what] = {"torchmetrics_s": tm[key], "ours_s": ours[key], "ratio": ours[key] / tm[key],
                             "time": "wall" if gpu else "cpu", "fid_ours": ours[1], "fid_torchmetrics": tm[1],
                             "fid_rel_diff": rel_fid, **({"kid_ours": ours[2][0], "kid_torchmetrics": tm[2][0],
                                                          "kid_rel_diff": rel_kid} if with_kid else {})}
            print(line)
    print(f"one-off real reference build (features, stats, sqrt, k-NN radii, NN distances) + save: {t_build:.3f} s")
    goal = all(r <= 0.55 for _, r in rows)
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({
            "device": torch.cuda.get_device_name(device) if gpu else "cpu", "network": args.network,
            "num_real": n_real, "num_fake": n_fake, "image_size": args.image_size, "tf32": args.tf32,
            "reference_build_s": t_build, "values_within_1e-3": bool(ok), "time_ratio_goal_0.55_met": goal,
            "figures": figures}, indent=2) + "\n")
    print(f"values within 1e-3 relative: {'yes' if ok else 'NO'};  time ratio <= 0.55: "
          + ", ".join(f"{w} {'yes' if r <= 0.55 else 'NO'} ({r:.3f})" for w, r in rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
