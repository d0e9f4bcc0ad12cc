"""CLI: python -m trainables.classifier --manifest M --out RUN [--synthetic DIR --synthetic-ratio R]
       [--synthetic DIR_A:0.5 --synthetic DIR_B:0.25 --synthetic DIR_C:0.25]   (generator mix; sums to 1)
       [--imbalance-fix none|class_weight|oversample] [--augment none|standard|xray|dermoscopy|industrial]
       [--class-weight-power P] [--oversample-share S] [--augment-strength A] [--epoch-size N]
       [--curation none|copies|copies+off_class [--curation-scorer DIR]]
       [--model resnet18|resnet50|small_cnn]
       [--weights PATH [--freeze-epochs N] [--input-norm auto|imagenet|none]] [--epochs E] [--seed N] [--folds K]
       [--config FILE.yaml] [--smoke-test] [--ray --workers N [--gpu]]

Writes RUN/metrics.json ({"val": {...}, "test": {...}, "threshold", "best_epoch", ...}), RUN/config.json,
RUN/history.jsonl + RUN/history.csv (train and val loss per epoch), RUN/confusion_matrix.png and
RUN/checkpoints/; prints per-epoch progress and the final real val/test table. --smoke-test: small CNN,
32 px, 4 epochs, CPU (seconds on the demo set).

Control knobs: --class-weight-power P in [0.5, 1] (with class_weight: weights (n / (C n_c)) ** P),
--oversample-share S in [0.25, 0.5] (with oversample: the minority's share of each epoch's draws; default: each
class 1/C), --augment-strength A in [0.5, 1.5] (scales the policy's rotation, brightness and contrast).
--epoch-size N: images per epoch, so ceil(N / batch size) optimizer steps an epoch (default: the training set's
size); metrics.json "steps" counts the steps taken.

Curation (with --synthetic): --curation copies drops synthetic images that are near-copies of real train images
(pixel RMS to the nearest real train minority image <= the 5th percentile of the real images' own nearest-neighbour
distances: the memorisation audit's pixel rule); copies+off_class also drops images that a classifier trained on
the real train images only scores as the other class (minority score below the 5th percentile of the real val
minority images' scores). The ratio's count is drawn from what is left. The scorer is trained in RUN/curation_scorer
unless --curation-scorer DIR holds one (trained there when DIR is empty, so several runs share it). Writes
RUN/curation_dropped.png (dropped images beside their nearest real train image), RUN/curation_dropped.csv and
metrics.json "curation" (how many each step dropped).

Transfer learning: --weights PATH loads a local torchvision-layout state dict (nothing is downloaded; a
grayscale manifest gets the RGB stem summed over its channels), inputs are then normalised with ImageNet's
mean/std (--input-norm auto), and --freeze-epochs N trains only the head for the first N epochs.
ResNet-50 at 224 px, as in the X-ray studies: --model resnet50 --image-size 224 --weights resnet50.pth.

--config FILE (YAML or JSON; `python -m analysis.export` writes one) holds ClassifierConfig keys, at the top
level or under `classifier:`, and optionally `manifest`, `out` and `synthetic` (a folder, or a list of
{dir, proportion}); relative paths are relative to the file. Flags given on the command line win.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from data_prep.errors import ConfigError, DataError, LeakageError
from trainables.classifier.config import SMOKE_OVERRIDES, classifier_config
from trainables.metrics.classification import METRIC_KEYS


def results_table(result: dict) -> str:
    cv = "val_std" in result
    w = 18 if cv else 10
    lines = [f"{'metric':<18}{'val':>{w}}{'test':>{w}}"]
    for k in METRIC_KEYS:
        sv, st = f"{result['val'][k]:.4f}", f"{result['test'][k]:.4f}"
        if cv:
            sv, st = sv + f" ± {result['val_std'][k]:.3f}", st + f" ± {result['test_std'][k]:.3f}"
        lines.append(f"{k:<18}{sv:>{w}}{st:>{w}}")
    lines.append(f"threshold (chosen on val) {result['threshold']:.4f}   best epoch {result['best_epoch']}   "
                 f"optimizer steps {result.get('steps', '?')}")
    return "\n".join(lines)


def synthetic_arg(specs: list[str] | None):
    """--synthetic values -> None, one folder, or [(folder, proportion), ...] (checked for summing to 1)."""
    from trainables.classifier.data import parse_synthetic_arg, synthetic_sources

    if not specs:
        return None
    pairs = [parse_synthetic_arg(s) for s in specs]
    if len(pairs) == 1 and pairs[0][1] is None:
        return pairs[0][0]
    missing = [d for d, p in pairs if p is None]
    if missing:
        raise ConfigError(f"--synthetic {missing[0]} has no proportion; with several --synthetic folders give "
                          f"each as DIR:P (proportions summing to 1)")
    return synthetic_sources(pairs)


RUN_KEYS = ("manifest", "out", "synthetic")  # --config keys that are not ClassifierConfig fields


def load_run_config(path: str) -> tuple[dict, dict]:
    """--config FILE -> (run keys {manifest, out, synthetic}, ClassifierConfig values); paths made absolute
    relative to the file. Unknown keys are an error naming them and the valid ones."""
    from data_prep.config import read_mapping_file
    from trainables.classifier.config import ClassifierConfig

    p = Path(path).expanduser()
    data = read_mapping_file(p, "classifier config")
    fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
    values = dict(data.pop("classifier", None) or {})
    run = {k: data.pop(k) for k in RUN_KEYS if k in data}
    values.update(data)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; valid keys: {sorted(fields | set(RUN_KEYS) | {'classifier'})}")
    base = p.resolve().parent

    def absolute(x) -> str:
        return str(base / Path(str(x)).expanduser())  # an absolute path stays as it is

    for k in ("manifest", "out"):
        if run.get(k):
            run[k] = absolute(run[k])
    syn = run.get("synthetic")
    if syn:
        if isinstance(syn, (str, Path)):
            syn = [syn]
        specs = []
        for item in syn:
            if isinstance(item, dict):
                if set(item) - {"dir", "proportion"} or "dir" not in item:
                    raise ConfigError(f"{p}: synthetic entry {item} must be a folder or {{dir, proportion}}")
                specs.append(absolute(item["dir"]) + (f":{item['proportion']}" if "proportion" in item else ""))
            else:
                specs.append(absolute(item))
        run["synthetic"] = specs
    if values.get("weights"):
        values["weights"] = absolute(values["weights"])
    return run, values


def _parser() -> argparse.ArgumentParser:
    from trainables.arms import AUGMENT_NAMES, IMBALANCE_FIXES

    p = argparse.ArgumentParser(prog="python -m trainables.classifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", help="manifest.parquet from python -m data_prep (required unless --config has it)")
    p.add_argument("--out", help="run folder for metrics.json, confusion_matrix.png, checkpoints "
                                 "(required unless --config has it)")
    p.add_argument("--config", help="YAML/JSON file of ClassifierConfig keys (+ manifest, out, synthetic); "
                                    "written by python -m analysis.export; flags override it")
    p.add_argument("--synthetic", action="append", metavar="DIR[:P]",
                   help="folder of synthetic images: our GAN's (PNGs + manifest.parquet, python -m trainables.gan.sample) "
                        "or one made elsewhere, no manifest needed (a plain folder of minority-class images, or "
                        "DIR/<class>/ folders; any size or mode, resized like real images); repeat as DIR:P to mix "
                        "several generators in proportions P that sum to 1")
    p.add_argument("--synthetic-ratio", type=float, help="synthetic / real minority train images, 0..10")
    p.add_argument("--imbalance-fix", choices=tuple(IMBALANCE_FIXES))
    p.add_argument("--augment", choices=tuple(AUGMENT_NAMES))
    p.add_argument("--class-weight-power", type=float, help="with --imbalance-fix class_weight: loss weights "
                   "(n / (C n_c)) ** P, P in [0.5, 1] (default 1: inverse class frequency)")
    p.add_argument("--oversample-share", type=float, help="with --imbalance-fix oversample: the minority class's "
                   "share of each epoch's draws, in [0.25, 0.5] (default: each class 1/C)")
    p.add_argument("--augment-strength", type=float, help="with --augment POLICY: scales its rotation, brightness and "
                   "contrast, in [0.5, 1.5] (default 1)")
    p.add_argument("--epoch-size", type=int, help="images drawn per epoch: ceil(N / batch size) optimizer steps "
                   "(default: the training set's size)")
    p.add_argument("--curation", choices=("none", "copies", "copies+off_class"),
                   help="with --synthetic: drop near-copies of real train images (copies) and images a real-only "
                        "classifier scores as the other class (off_class) before the ratio's draw (default none)")
    p.add_argument("--curation-scorer", metavar="DIR", help="with --curation copies+off_class: the off-class "
                   "scorer's folder (read if it holds one, else trained there); default RUN/curation_scorer")
    p.add_argument("--model", help="resnet18 | resnet50 | small_cnn")
    p.add_argument("--weights", help="local state-dict file to start from, e.g. torchvision ImageNet weights saved "
                                     "on another machine (nothing is downloaded)")
    p.add_argument("--freeze-epochs", type=int, help="with --weights: train only the head for the first N epochs")
    p.add_argument("--input-norm", choices=("auto", "imagenet", "none"),
                   help="input normalisation: auto = ImageNet mean/std when --weights is given (default)")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the manifest's)")
    p.add_argument("--threshold-rule", choices=("max_f1", "target_sensitivity"))
    p.add_argument("--target-sensitivity", type=float)
    p.add_argument("--select-metric", help="real-val metric that picks the best epoch (default f1)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--folds", type=int, help="k-fold CV over train+val (test untouched); 0 = off")
    p.add_argument("--smoke-test", action="store_true", help="small CNN, 32 px, 4 epochs, CPU")
    p.add_argument("--ray", action="store_true", help="run under Ray Train (TorchTrainer, DDP over Ray Data shards)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers with --ray")
    p.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker")
    return p


# flag -> ClassifierConfig key
_FLAG_KEYS = (("synthetic_ratio", "synthetic_ratio"), ("imbalance_fix", "imbalance_fix"), ("augment", "augment"),
              ("model", "model"), ("weights", "weights"), ("epochs", "num_epochs"), ("batch_size", "batch_size"),
              ("lr", "lr"), ("image_size", "image_size"), ("threshold_rule", "threshold_rule"),
              ("target_sensitivity", "target_sensitivity"), ("select_metric", "select_metric"),
              ("seed", "seed"), ("device", "device"), ("folds", "num_folds"),
              ("freeze_epochs", "freeze_epochs"), ("input_norm", "input_norm"),
              ("class_weight_power", "class_weight_power"), ("oversample_share", "oversample_share"),
              ("augment_strength", "augment_strength"), ("epoch_size", "epoch_size"), ("curation", "curation"))


def _run(args: argparse.Namespace, cfg, synthetic) -> dict:
    if args.ray:
        from trainables.classifier.ray_train import run_classifier_ray
        result = run_classifier_ray(args.manifest, args.out, cfg, synthetic_dir=synthetic,
                                    num_workers=args.workers, use_gpu=args.gpu,
                                    curation_scorer=args.curation_scorer)
        for row in result["history"]:
            print(f"epoch {row['epoch']}  loss {row['train_loss']:.4f}  val f1 {row['val_f1']:.3f}  "
                  f"{row['images_per_s']:.0f} img/s")
        return result
    from trainables.classifier.run import run_classifier_local
    return run_classifier_local(args.manifest, args.out, cfg, synthetic_dir=synthetic,
                                log=lambda s: print(s, flush=True), curation_scorer=args.curation_scorer)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        run, values = load_run_config(args.config) if args.config else ({}, {})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.smoke_test:
        values.update(SMOKE_OVERRIDES)
    args.manifest = args.manifest or run.get("manifest")
    args.out = args.out or run.get("out")
    args.synthetic = args.synthetic or run.get("synthetic")
    missing = [f"--{k}" for k in ("manifest", "out") if not getattr(args, k)]
    if missing:
        print(f"error: {' and '.join(missing)} required (on the command line or in --config)", file=sys.stderr)
        return 2
    for flag, key in _FLAG_KEYS:
        if getattr(args, flag) is not None:
            values[key] = getattr(args, flag)
    if values.get("synthetic_ratio") and not args.synthetic:
        print("error: --synthetic-ratio > 0 needs --synthetic DIR", file=sys.stderr)
        return 2
    if args.synthetic and "synthetic_ratio" not in values:
        values["synthetic_ratio"] = 1.0
    try:
        synthetic = synthetic_arg(args.synthetic)
        cfg = classifier_config(values)
        print(f"config: {dataclasses.asdict(cfg)}")
        result = _run(args, cfg, synthetic)
    except (ConfigError, DataError, LeakageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(results_table(result))
    cur = result.get("curation") or {}
    if cur.get("curation", "none") != "none":
        print(f"curation {cur['curation']}: of {cur['candidates']} candidate synthetic images, {cur['dropped_copies']} "
              f"dropped as near-copies, {cur['dropped_off_class']} as off-class; grid {cur.get('grid')}")
    print(f"\nwrote {args.out}/metrics.json and {args.out}/confusion_matrix.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
