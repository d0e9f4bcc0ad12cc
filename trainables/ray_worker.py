"""What both Ray Train entry points (trainables.gan.ray_train, trainables.classifier.ray_train) share.

    reporter = CheckpointReporter("gan_ckpt_")
    reporter.stage({"checkpoint.pt": state})     # rank 0: files for the next report
    reporter(metrics)                             # ray.train.report(metrics, checkpoint=<staged files or None>)
    state = load_from_ray_checkpoint("checkpoint.pt")   # the restarted worker's resume state, or None
    TorchTrainer(loop, **trainer_kwargs(name=..., storage=..., ...))

Ray is imported inside the functions: importing this module costs nothing where Ray is absent.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping


class CheckpointReporter:
    """A worker's `report` callable: sends each metrics row with the files staged since the previous report
    (a Ray checkpoint), then deletes the staging folder (Ray has copied it to the run's storage)."""

    def __init__(self, prefix: str, before_report: Callable[[dict], Any] | None = None):
        self.prefix = prefix
        self.before_report = before_report  # called with the row first (progress lines, history files)
        self._dir: Path | None = None

    def stage(self, files: Mapping[str, Any]) -> None:
        """name -> object: str is written as text, anything else with torch.save. Replaces unsent staged files."""
        import torch

        self.discard()
        d = Path(tempfile.mkdtemp(prefix=self.prefix))
        for name, obj in files.items():
            if isinstance(obj, str):
                (d / name).write_text(obj)
            else:
                torch.save(obj, d / name)
        self._dir = d

    def discard(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __call__(self, metrics: dict) -> None:
        import ray.train

        if self.before_report is not None:
            self.before_report(metrics)
        d, self._dir = self._dir, None
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(d)) if d is not None else None)
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)


def load_from_ray_checkpoint(file_name: str, loader: Callable[[Path], Any] | None = None) -> Any:
    """The file `file_name` of the checkpoint this (restarted) worker resumes from, loaded with `loader`
    (default: torch.load weights_only on the CPU); None when the Train run starts fresh."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        path = Path(d) / file_name
        if loader is not None:
            return loader(path, f"Ray checkpoint {ckpt.path}")
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)


def trainer_kwargs(*, name: str, storage_path: str | Path, num_workers: int, use_gpu: bool, max_failures: int,
                   num_to_keep: int, callbacks: list | None = None,
                   resources_per_worker: Mapping[str, float] | None = None) -> dict:
    """scaling_config and run_config of a TorchTrainer: a fixed run name under storage_path (so a restarted run
    finds its checkpoints), FailureConfig (a lost worker restarts from the last checkpoint), num_to_keep."""
    import ray.train

    return {"scaling_config": ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                                      resources_per_worker=dict(resources_per_worker or {}) or None),
            "run_config": ray.train.RunConfig(name=name, storage_path=str(storage_path), callbacks=callbacks or [],
                                              failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                              checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep))}


def fit(trainer) -> Any:
    """trainer.fit(), raising the run's error (out of retries) instead of returning a result without checkpoint."""
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result
