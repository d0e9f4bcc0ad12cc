"""CLI: train the GAN on a manifest's minority class.

    python -m trainables.gan --manifest runs/demo/manifest.parquet --out runs/gan [--loss bce|hinge|wgan-gp]
        [--epochs E] [--config FILE.yaml] [--smoke-test] [--workers N] [--ray] [--gpu]
        [--conditional] [--classes NAME,NAME] [--feature-matching W] [--perceptual W --vgg-weights PATH]
        [--arch dcgan|resnet] [--attention] [--ada [--ada-policy standard|xray|dermoscopy|industrial]]

--classes picks the class(es) to learn (default: the minority class); with --conditional one generator
learns them all (default: every class), sampled per class by python -m trainables.gan.sample --label NAME.
--feature-matching W / --perceptual W add weighted terms to G's loss (any --loss); the perceptual term needs
a local VGG16 state_dict file (--vgg-weights; nothing is downloaded). --arch resnet trains the residual GAN
(spectrally normalised residual D; --attention adds a self-attention block), --ada adaptive discriminator
augmentation (its flips/rotations limited by --ada-policy: xray never flips); RUN/loss_curve.png then plots ADA's p.

Default: in-process training (same loop and files as the Ray path, no ~40 s Ray Train start-up).
--ray, or --workers > 1, runs the Ray Train TorchTrainer on a local Ray (or the cluster RAY_ADDRESS names).
Re-running with the same --out resumes from the latest checkpoint. Writes RUN/config.json,
RUN/checkpoints/, RUN/samples/, RUN/preview.png, RUN/loss_curve.png, RUN/history.jsonl, RUN/metrics.json.
Exit status: 0 finished, 3 diverged (see metrics.json "reason"), 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.errors import ConfigError, DataError, LeakageError

# --smoke-test: tiny and CPU-only, seconds not minutes; the tests run the real entry point this way.
SMOKE = {"image_size": 32, "ngf": 8, "ndf": 8, "batch_size": 8, "num_epochs": 2, "checkpoint_every": 1,
         "sample_every": 1, "device": "cpu"}


def load_yaml(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of GanConfig keys, got {type(data).__name__}")
    return data.get("gan", data) if isinstance(data.get("gan"), dict) else data


def config_values(args: argparse.Namespace) -> dict:
    """GanConfig values: the --config file, --smoke-test's, then each flag given (flags win)."""
    values = load_yaml(args.config) if args.config else {}
    if args.smoke_test:
        values = {**values, **SMOKE}
    if args.loss:
        values["loss"] = args.loss
    if args.epochs is not None:
        values["num_epochs"] = args.epochs
    for flag in ("conditional", "balanced_epochs", "attention", "ada"):  # store_true flags: only ever switch on
        if getattr(args, flag):
            values[flag] = True
    if args.classes is not None:
        values["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]  # names or labels
    for key in ("feature_matching", "perceptual", "vgg_weights", "arch", "ada_policy"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.gan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="manifest.parquet from python -m data_prep")
    p.add_argument("--out", required=True, help="run directory (created; re-use it to resume)")
    p.add_argument("--loss", help="bce | hinge | wgan-gp (overrides the config file)")
    p.add_argument("--epochs", type=int, help="num_epochs (overrides the config file)")
    p.add_argument("--config", help="YAML file of GanConfig keys (optionally under a top-level 'gan:' key)")
    p.add_argument("--smoke-test", action="store_true", help="tiny CPU run: 32 px, narrow nets, 2 epochs")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP); > 1 implies --ray")
    p.add_argument("--ray", action="store_true", help="train through Ray Train TorchTrainer")
    p.add_argument("--gpu", action="store_true", help="Ray workers each use one GPU")
    p.add_argument("--conditional", action="store_true", help="one class-conditional GAN over --classes")
    p.add_argument("--balanced-epochs", action="store_true",
                   help="with --conditional: each epoch = every image of the smallest class + as many of each other "
                        "class, drawn afresh (single-process path)")
    p.add_argument("--classes", help="comma list of class names or labels to learn (default: minority class; "
                                     "all classes with --conditional)")
    p.add_argument("--feature-matching", type=float, help="weight of the feature-matching G term (0 = off)")
    p.add_argument("--perceptual", type=float, help="weight of the VGG16 perceptual G term (0 = off)")
    p.add_argument("--vgg-weights", help="local VGG16 state_dict file for --perceptual (never downloaded)")
    p.add_argument("--arch", help="dcgan | resnet (overrides the config file)")
    p.add_argument("--attention", action="store_true", help="resnet: one self-attention block in G and D")
    p.add_argument("--ada", action="store_true", help="adaptive discriminator augmentation (instead of DiffAugment)")
    p.add_argument("--ada-policy", help="which flips/rotations ADA may use: standard | xray | dermoscopy | industrial")
    args = p.parse_args(argv)
    try:
        from trainables.gan.ray_train import run_gan_ray
        from trainables.gan.run import as_config, run_gan_local

        values = config_values(args)
        cfg = as_config(values)
        if args.ray or args.workers > 1:
            import ray

            if not ray.is_initialized():
                ray.init(num_cpus=max(2, args.workers + 1) if args.smoke_test else None)
            result = run_gan_ray(args.manifest, args.out, cfg, num_workers=args.workers, use_gpu=args.gpu)
        else:
            result = run_gan_local(args.manifest, args.out, cfg)
    except (ConfigError, DataError, LeakageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nstatus: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else "")
          + f"; {result['epochs']} epoch(s) in {result['time_s']:.1f} s; run files in {args.out}")
    return 0 if result["status"] == "finished" else 3


if __name__ == "__main__":
    sys.exit(main())
