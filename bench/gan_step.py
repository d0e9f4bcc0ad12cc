"""Benchmark: images/s of our GAN training step vs a bare PyTorch eager fp32 DCGAN loop, same nets, same batch.

    python bench/gan_step.py                          # GPU: 64 px RGB, batches 64,128,512, + numerics checks
    python bench/gan_step.py --cpu-small              # CPU, 32 px narrow nets, < 1 minute (CI)
    python bench/gan_step.py --batch-sizes 64 --json out.json
    python bench/gan_step.py --arch resnet --attention --ada --modes fast,eager   # the residual GAN with ADA

"ours" is `train_gan` driving `GanTrainer.train_step` exactly as the Ray Train worker does (one worker, so
prepare_model only moves the nets to the device; the GPU switches bf16 / channels_last / CUDA graphs on
their "auto" defaults), fed device-resident batches; images/s is the loop's own per-epoch report, first
epoch (warm-up, graph capture) excluded. "bare" is the PyTorch DCGAN example step (BCE, separate real/fake
D passes, one G step) in eager fp32 on the same Generator/Discriminator. Both exclude data loading.
--modes fast,eager also times ours with every GPU switch off (eager fp32, our step: augmentation, EMA, stats), so
the fast path's own gain shows beside the bare loop's. --arch resnet [--attention] [--ada] measures the residual
GAN (trainables.gan.resnet) with ADA instead of DiffAugment; the numerics checks then run on it too.

On GPU numerics checks run first (skipped on CPU; exit 1 when one fails), for every loss with DiffAugment on,
TF32 off and deterministic cuDNN (trainables.gan.step_checks):
  * graphed vs eager: from copied state (weights, Adam, EMA, random stream), one graph replay vs one eager step
    on the same batch; every gradient of G and D must agree within --graph-tol (fp32) / --graph-tol-bf16
    (bf16 + channels_last), as max |a - b| / max |b| per tensor; gradients, because one Adam step moves every
    weight by about lr whatever the gradient;
  * bf16 vs fp32: same init, data and noise; each of the first --bf16-steps steps' loss_D and loss_G must agree
    within --bf16-tol * max(|fp32 loss|, 1).
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


def ours_images_per_s(cfg: GanConfig, batch: int, steps: int, epochs: int, device: torch.device,
                      eager: bool = False) -> float:
    cfg = dataclasses.replace(cfg, batch_size=batch, num_epochs=epochs, n_critic=1)
    if eager:  # our step with every GPU switch off
        cfg = dataclasses.replace(cfg, bf16="off", channels_last="off", cuda_graphs="off")
    data = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    reports: list[dict] = []
    trainer = GanTrainer(cfg, device)
    if cfg.ada:  # ADA at work (p > 0), as in a run on few images
        trainer.ada_p_value = 0.5
        trainer.ada_p.fill_(0.5)
    train_gan(cfg, lambda epoch: (data for _ in range(steps)), reports.append, trainer=trainer)
    rates = [r["images_per_s"] for r in reports[1:]]  # epoch 1 = warm-up (+ graph capture)
    return sorted(rates)[len(rates) // 2]


CHECK_AUGMENT = "color,translation,cutout"  # DiffAugment on: the checks also cover the random stream


def numerics_checks(cfg: GanConfig, batch: int, device: torch.device, args) -> dict:
    """Graphed vs eager gradients (fp32, and bf16 + channels_last) and bf16 vs fp32 losses, for every loss."""
    from trainables.gan.losses import GAN_LOSSES
    from trainables.gan.step_checks import bf16_vs_fp32_losses, graph_vs_eager_step, strict_numerics

    out: dict = {"graph_vs_eager": [], "bf16_vs_fp32": []}
    with strict_numerics():  # TF32 off, deterministic cuDNN: what differs is what is checked
        for loss in sorted(GAN_LOSSES):
            base = dataclasses.replace(cfg, loss=loss, batch_size=batch, cuda_graphs="on",
                                       diffaugment="" if cfg.ada else CHECK_AUGMENT)
            for label, bf16, cl, tol in (("fp32", "off", "off", args.graph_tol),
                                         ("bf16+channels_last", "on", "on", args.graph_tol_bf16)):
                r = graph_vs_eager_step(dataclasses.replace(base, bf16=bf16, channels_last=cl), device, tolerance=tol,
                                        ada_p=0.5 if cfg.ada else 0.0)
                r["precision"] = label
                out["graph_vs_eager"].append(r)
                print(f"graphed vs eager  {loss:8s} {label:19s} max rel grad diff {r['max_rel_grad_diff']:.2e} "
                      f"({r['worst_tensor'] or '-'}), loss diff {r['max_rel_loss_diff']:.1e}, tol {tol:g}: "
                      f"{'ok' if r['ok'] else 'FAIL'}", flush=True)
            r = bf16_vs_fp32_losses(base, device, steps=args.bf16_steps, tolerance=args.bf16_tol)
            out["bf16_vs_fp32"].append(r)
            print(f"bf16 vs fp32      {loss:8s} first {r['steps']} steps: max rel loss diff {r['max_rel_diff']:.2e} "
                  f"(tol {r['tolerance']:g}, {r['tolerance_rule']}): {'ok' if r['ok'] else 'FAIL'}", flush=True)
    out["ok"] = all(r["ok"] for k in ("graph_vs_eager", "bf16_vs_fp32") for r in out[k])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-small", action="store_true", help="CPU, 32 px, ngf=ndf=16, batch 16, < 1 minute")
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default 64,128,512; cpu-small: 16)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--loss", default="bce")
    p.add_argument("--arch", default="dcgan", help="dcgan | resnet")
    p.add_argument("--attention", action="store_true", help="resnet: the self-attention block")
    p.add_argument("--ada", action="store_true", help="ADA (p held at 0.5) instead of no augmentation")
    p.add_argument("--modes", default="fast", help="ours with the GPU switches on 'auto' (fast) and/or all off (eager)")
    p.add_argument("--steps", type=int, default=None, help="steps per measured epoch (default 100; cpu-small 5)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of our loop (the first is warm-up)")
    p.add_argument("--graph-tol", type=float, default=1e-3,
                   help="graphed vs eager, fp32: max |grad diff| / max |grad| per tensor")
    p.add_argument("--graph-tol-bf16", type=float, default=2e-2, help="the same with bf16 autocast + channels_last")
    p.add_argument("--bf16-steps", type=int, default=10, help="bf16 vs fp32: compare the losses of this many first steps")
    p.add_argument("--bf16-tol", type=float, default=0.05, help="bf16 vs fp32: |diff| <= tol * max(|fp32 loss|, 1)")
    p.add_argument("--no-checks", action="store_true", help="throughput only")
    p.add_argument("--checks-only", action="store_true", help="numerics checks only (GPU)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    variant = dict(arch=args.arch, attention=args.attention, ada=args.ada)
    modes = [m for m in args.modes.split(",") if m]
    if args.cpu_small:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
        cfg = GanConfig(image_size=32, channels=3, ngf=16, ndf=16, loss=args.loss, device="cpu", **variant)
        batches, steps, epochs = [16], args.steps or 5, 3
    else:
        cfg = GanConfig(image_size=args.image_size, channels=3, loss=args.loss, device="auto", **variant)
        batches = [64, 128, 512]
        steps, epochs = args.steps or 100, args.epochs
    if args.batch_sizes:
        batches = [int(b) for b in args.batch_sizes.split(",")]
    cfg = resolve_config(cfg)
    device = torch.device(cfg.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; {cfg.arch}{' + attention' if cfg.attention else ''}{' + ADA' if cfg.ada else ''}, "
          f"{cfg.image_size}px x{cfg.channels}, ngf={cfg.ngf} ndf={cfg.ndf}, loss={cfg.loss}, "
          f"switches bf16={cfg.bf16} channels_last={cfg.channels_last} cuda_graphs={cfg.cuda_graphs} (auto = on for 1 GPU)")
    out = {"device": name, "torch": torch.__version__, "config": dataclasses.asdict(cfg), "throughput": []}

    def save() -> None:  # after every row: a timed-out run still leaves what it measured
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")

    if device.type == "cuda" and not args.no_checks:
        out["numerics"] = numerics_checks(cfg, 64, device, args)
        save()
    elif not args.no_checks:
        print("numerics checks (graphed vs eager gradients, bf16 vs fp32 losses) need a CUDA GPU: skipped")
    if not args.checks_only:
        print(f"{'batch':>6} {'mode':>6} {'bare eager fp32 img/s':>22} {'ours img/s':>12} {'ratio':>7}")
        for b in batches:
            bare = bare_eager_images_per_s(cfg, b, steps, warmup=10, device=device)  # CPU needed >10 to settle
            for mode in modes:
                ours = ours_images_per_s(cfg, b, steps, epochs, device, eager=mode == "eager")
                row = {"batch": b, "bare_eager_fp32": bare, "ours": ours, "ratio": ours / bare}
                out["throughput" if mode == "fast" else "throughput_eager"] = out.get(
                    "throughput" if mode == "fast" else "throughput_eager", []) + [row]
                print(f"{b:>6} {mode:>6} {bare:>22,.0f} {ours:>12,.0f} {ours / bare:>7.2f}x", flush=True)
                save()
    save()
    return 0 if out.get("numerics", {}).get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
