"""The sweep: Ray Tune + Optuna over GAN loss, learning rates, DiffAugment and synthetic ratio.

Main entry: `python sweeps/augment_ratio.py` (see its docstring). Pieces:
  config.py   SweepConfig (every flag, also settable from YAML)
  space.py    the Optuna define-by-run search space, the controls, seed repeats, config hashes
  trial.py    the Tune function trainable: GAN (trained once per GAN config) -> synthetic -> classifier
  results.py  results.parquet, written as trials finish, reconciled at the end of each phase
"""
