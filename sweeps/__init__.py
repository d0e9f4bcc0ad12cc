"""The sweep: Ray Tune + Optuna over GAN loss, learning rates, architecture, augmentation and synthetic ratio,
against tuned classical controls.

Main entry: `python sweeps/augment_ratio.py` (see its docstring), or from Python `run_sweep` (sweeps/api.py).
Pieces:
  config.py   SweepConfig (every flag, also settable from YAML)
  space.py    the Optuna define-by-run search space, the controls, seed repeats, config hashes
  trial.py    the Tune function trainable: GAN (trained once per GAN config) -> synthetic -> classifier
  results.py  results.parquet, written as trials finish, reconciled at the end of each phase
"""


def run_sweep(*args, **kwargs):
    """See sweeps.api.run_sweep (imported on use: `import sweeps` stays light)."""
    from sweeps.api import run_sweep as run

    return run(*args, **kwargs)
