"""Old home of the GAN entry points, kept so existing imports work: use trainables.gan.run (in-process,
`run_gan_local`) and trainables.gan.ray_train (Ray Train, `run_gan_ray`), the layout of trainables.classifier."""
from trainables.gan.ray_train import CHECKPOINT_FILE, RAY_RUN_NAME, gan_train_loop_per_worker, run_gan_ray
from trainables.gan.run import as_config, format_progress, run_gan_local, trained_labels

__all__ = ["run_gan_local", "run_gan_ray", "as_config", "format_progress", "trained_labels", "gan_train_loop_per_worker",
           "RAY_RUN_NAME", "CHECKPOINT_FILE"]
