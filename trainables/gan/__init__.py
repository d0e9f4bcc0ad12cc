"""GAN stage: DCGAN variants (bce | hinge | wgan-gp) trained on the minority class, checkpoints, samples.

    python -m trainables.gan --manifest runs/demo/manifest.parquet --out runs/gan --loss hinge --epochs 50
    python -m trainables.gan.sample --checkpoint runs/gan/checkpoints/checkpoint_000050.pt \
        --num-samples 1000 --output-dir runs/synthetic

Python: `run_gan_local` (trainables.gan.run, in-process) / `run_gan_ray` (trainables.gan.ray_train, Ray Train),
`train_gan` (trainables.gan.loop), `array_batches` / `iter_generated` (trainables.gan.batching),
`load_generator` / `generate_images` (trainables.gan.sample).
"""
from trainables.gan.config import GanConfig, gan_config_from_dict, resolve_config
from trainables.gan.losses import GAN_LOSSES
from trainables.gan.loop import GanTrainer, train_gan
from trainables.gan.ray_train import run_gan_ray
from trainables.gan.run import run_gan_local

__all__ = ["GanConfig", "gan_config_from_dict", "resolve_config", "GAN_LOSSES", "GanTrainer", "train_gan",
           "run_gan_local", "run_gan_ray"]
