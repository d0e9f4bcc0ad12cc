"""Benchmark: images/s of our GAN training step vs a bare PyTorch eager fp32 DCGAN loop, same nets, same batch.

    python bench/gan_step.py                          # GPU: 64 px RGB, batches 64,128,512, + numerics checks
    python bench/gan_step.py --cpu-small              # CPU, 32 px narrow nets, < 1 minute (CI)
    python bench/gan_step.py --batch-sizes 64 --json out.json

"ours" is `train_gan` driving `GanTrainer.train_step` exactly as the Ray Train worker does (one worker, so
prepare_model only moves the nets to the device; the GPU switches bf16 / channels_last / CUDA graphs on
their "auto" defaults), fed device-resident batches; images/s is the loop's own per-epoch report, first
epoch (warm-up, graph capture) excluded. "bare" is the PyTorch DCGAN example step (BCE, separate real/fake
D passes, one G step) in eager fp32 on the same Generator/Discriminator. Both exclude data loading.

On GPU two numerics checks run (skipped on CPU):
  * graphed vs eager: identical start, inputs and noise, fp32; after the graph replays, every weight of G and D
    must agree with the eager run to within --graph-tol (relative max-abs);
  * bf16 vs fp32: several hundred steps on the same data; the mean loss_D / loss_G over the last window must
    agree within --bf16-tol (absolute), i.e. bf16 training tracks fp32 training.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.gan.config import GanConfig, resolve_config  # noqa: E402
from trainables.gan.loop import GanTrainer, train_gan  # noqa: E402
from trainables.gan.networks import build_networks  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_eager_images_per_s(cfg: GanConfig, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """The PyTorch examples/dcgan step, fp32 eager, on our networks."""
    torch.manual_seed(0)
    G, D = build_networks(dataclasses.replace(cfg, loss="bce"))
    G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    crit = torch.nn.BCEWithLogitsLoss()
    real = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)

    def step():
        D.zero_grad()
        crit(D(real), ones).backward()
        fake = G(torch.randn(batch, cfg.latent_dim, device=device))
        crit(D(fake.detach()), zeros).backward()
        opt_d.step()
        G.zero_grad()
        crit(D(fake), ones).backward()
        opt_g.step()

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def ours_images_per_s(cfg: GanConfig, batch: int, steps: int, epochs: int, device: torch.device) -> float:
    cfg = dataclasses.replace(cfg, batch_size=batch, num_epochs=epochs, n_critic=1)
    data = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    reports: list[dict] = []
    train_gan(cfg, lambda epoch: (data for _ in range(steps)), reports.append, trainer=GanTrainer(cfg, device))
    rates = [r["images_per_s"] for r in reports[1:]]  # epoch 1 = warm-up (+ graph capture)
    return sorted(rates)[len(rates) // 2]


def check_graph_vs_eager(cfg: GanConfig, batch: int, steps: int, device: torch.device, tol: float) -> dict:
    """Same init, inputs and noise; fp32; graphs on vs off -> weights must match."""
    base = dataclasses.replace(cfg, batch_size=batch, bf16="off", channels_last="off", diffaugment="")
    gen = torch.Generator(device="cpu").manual_seed(1)
    reals = [torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, generator=gen).to(device) * 2 - 1
             for _ in range(steps)]
    zs = [torch.randn(batch, cfg.latent_dim, generator=gen).to(device) for _ in range(steps)]
    results = {}
    for graphs in ("on", "off"):
        tr = GanTrainer(dataclasses.replace(base, cuda_graphs=graphs), device)
        static_z = torch.empty_like(zs[0])
        tr._noise = lambda n, z=static_z: z  # fixed noise through a static buffer (graph-safe)
        for real, z in zip(reals, zs):
            static_z.copy_(z)
            tr.train_step(real)
        sync(device)
        results[graphs] = {**{f"G.{k}": v for k, v in tr.G_module.state_dict().items()},
                           **{f"D.{k}": v for k, v in tr.D_module.state_dict().items()}}
    worst, worst_key = 0.0, ""
    for k, a in results["on"].items():
        b = results["off"][k]
        if not a.is_floating_point():
            continue
        rel = ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
        if rel > worst:
            worst, worst_key = rel, k
    return {"graph_vs_eager_max_rel_diff": worst, "worst_tensor": worst_key, "tolerance": tol,
            "graph_steps_replayed": max(0, steps - 3), "ok": worst <= tol}


def check_bf16_vs_fp32(cfg: GanConfig, batch: int, steps: int, device: torch.device, tol: float) -> dict:
    window = max(steps // 4, 10)
    gen = torch.Generator(device="cpu").manual_seed(2)
    data = (torch.rand(8 * batch, cfg.channels, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1).to(device)
    means = {}
    for bf16 in ("on", "off"):
        c = dataclasses.replace(cfg, batch_size=batch, bf16=bf16, num_epochs=steps // window)

        def batches(epoch, c=c):
            for i in range(window):
                j = (epoch * window + i) % 8
                yield data[j * batch:(j + 1) * batch]

        reports: list[dict] = []
        train_gan(c, batches, reports.append, trainer=GanTrainer(c, device))
        means[bf16] = reports[-1]
    dd = abs(means["on"]["loss_D"] - means["off"]["loss_D"])
    dg = abs(means["on"]["loss_G"] - means["off"]["loss_G"])
    return {"steps": steps, "window": window, "fp32_loss_D": means["off"]["loss_D"], "bf16_loss_D": means["on"]["loss_D"],
            "fp32_loss_G": means["off"]["loss_G"], "bf16_loss_G": means["on"]["loss_G"], "abs_diff_D": dd,
            "abs_diff_G": dg, "tolerance": tol, "ok": dd <= tol and dg <= tol}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-small", action="store_true", help="CPU, 32 px, ngf=ndf=16, batch 16, < 1 minute")
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default 64,128,512; cpu-small: 16)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--loss", default="bce")
    p.add_argument("--steps", type=int, default=None, help="steps per measured epoch (default 100; cpu-small 5)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of our loop (the first is warm-up)")
    p.add_argument("--graph-tol", type=float, default=1e-3)
    p.add_argument("--bf16-steps", type=int, default=400)
    p.add_argument("--bf16-tol", type=float, default=0.15)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    if args.cpu_small:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
        cfg = GanConfig(image_size=32, channels=3, ngf=16, ndf=16, loss=args.loss, device="cpu")
        batches, steps, epochs = [16], args.steps or 5, 3
    else:
        cfg = GanConfig(image_size=args.image_size, channels=3, loss=args.loss, device="auto")
        batches = [64, 128, 512]
        steps, epochs = args.steps or 100, args.epochs
    if args.batch_sizes:
        batches = [int(b) for b in args.batch_sizes.split(",")]
    cfg = resolve_config(cfg)
    device = torch.device(cfg.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; {cfg.image_size}px x{cfg.channels}, ngf={cfg.ngf} ndf={cfg.ndf}, loss={cfg.loss}, "
          f"switches bf16={cfg.bf16} channels_last={cfg.channels_last} cuda_graphs={cfg.cuda_graphs} (auto = on for 1 GPU)")
    rows = []
    print(f"{'batch':>6} {'bare eager fp32 img/s':>22} {'ours img/s':>12} {'ratio':>7}")
    for b in batches:
        bare = bare_eager_images_per_s(cfg, b, steps, warmup=3, device=device)
        ours = ours_images_per_s(cfg, b, steps, epochs, device)
        rows.append({"batch": b, "bare_eager_fp32": bare, "ours": ours, "ratio": ours / bare})
        print(f"{b:>6} {bare:>22,.0f} {ours:>12,.0f} {ours / bare:>7.2f}x", flush=True)
    out = {"device": name, "config": dataclasses.asdict(cfg), "throughput": rows}
    if device.type == "cuda":
        out["graph_vs_eager"] = check_graph_vs_eager(cfg, 64, 8, device, args.graph_tol)
        print("graphed vs eager (fp32, same inputs/noise):", json.dumps(out["graph_vs_eager"]))
        out["bf16_vs_fp32"] = check_bf16_vs_fp32(cfg, 64, args.bf16_steps, device, args.bf16_tol)
        print("bf16 vs fp32 losses:", json.dumps(out["bf16_vs_fp32"]))
    else:
        print("numerics checks (graphed vs eager, bf16 vs fp32) need a CUDA GPU: skipped")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    ok = all(out.get(k, {}).get("ok", True) for k in ("graph_vs_eager", "bf16_vs_fp32"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
