"""GAN stage: DCGAN variants (bce | hinge | wgan-gp) trained on the minority class, checkpoints, samples.

    python -m trainables.gan --manifest runs/demo/manifest.parquet --out runs/gan --loss hinge --epochs 50
    python -m trainables.gan.sample --checkpoint runs/gan/checkpoints/checkpoint_000050.pt \
        --num-samples 1000 --output-dir runs/synthetic

Python: `run_gan_local` / `run_gan_ray` (trainables.gan.train), `train_gan` (trainables.gan.loop),
`load_generator` / `generate_images` (trainables.gan.sample).
"""
from trainables.gan.config import GanConfig, gan_config_from_dict, resolve_config
from trainables.gan.losses import GAN_LOSSES
from trainables.gan.loop import GanTrainer, train_gan
from trainables.gan.train import run_gan_local, run_gan_ray

__all__ = ["GanConfig", "gan_config_from_dict", "resolve_config", "GAN_LOSSES", "GanTrainer", "train_gan",
           "run_gan_local", "run_gan_ray"]
