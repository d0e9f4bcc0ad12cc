"""Classifier stage: train on real train + ratio x synthetic minority images, select on real val, report real test.

    python -m trainables.classifier --manifest runs/demo/manifest.parquet --out runs/clf --smoke-test
    python -m trainables.classifier --manifest M --out RUN --synthetic runs/gan/samples --synthetic-ratio 1.0
    python -m trainables.classifier --manifest M --out RUN --imbalance-fix oversample --augment standard
    python -m trainables.classifier --manifest M --out RUN --ray --workers 2      # Ray Train DDP

Python: `run_classifier_local(...)` (in-process, the sweep's single-device trials) and
`run_classifier_ray(...)` (TorchTrainer, DDP over Ray Data shards); both return
{"val": {...}, "test": {...}, "threshold": t, "best_epoch": e, ...} and write RUN/metrics.json.
"""
from trainables.classifier.config import ClassifierConfig, classifier_config
from trainables.classifier.run import run_classifier_local


def run_classifier_ray(*args, **kwargs):
    """See trainables.classifier.ray_train.run_classifier_ray (imported lazily: Ray stays out of plain imports)."""
    from trainables.classifier.ray_train import run_classifier_ray as run
    return run(*args, **kwargs)


__all__ = ["ClassifierConfig", "classifier_config", "run_classifier_local", "run_classifier_ray"]
