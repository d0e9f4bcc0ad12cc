"""DCGAN generator and discriminator, parameterised by image side (32/64/128/256), channels and widths.

    G = Generator(image_size=64, channels=3, latent_dim=100, ngf=64)        # ~3.58M params
    D = Discriminator(image_size=64, channels=3, ndf=64, norm="batch")     # ~2.77M params

Each side-doubling is one ConvTranspose(4, 2, 1) block in G and one Conv(4, 2, 1) block in D, so a
128 px model has 5 up/down blocks. Widths double per block towards the 4x4 end, capped at 16x the
base width (a 256 px model would otherwise reach 2048 channels). D's normalisation depends on the loss:
"batch" (DCGAN, bce), "spectral" (hinge; spectral norm on every conv, no batch norm) or "none"
(wgan-gp: batch norm would break the per-sample gradient penalty). Init: N(0, 0.02) as in DCGAN.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from data_prep.errors import ConfigError
from trainables.gan.config import SUPPORTED_SIZES

MAX_WIDTH_MULT = 16
D_NORMS = ("batch", "spectral", "none")


def _num_blocks(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ConfigError(f"image size {image_size} is not supported by the DCGAN networks; "
                          f"supported: {list(SUPPORTED_SIZES)}")
    return int(math.log2(image_size // 4))  # 4x4 -> image_size in this many doublings


def _mults(n: int) -> list[int]:
    """Width multipliers from the 4x4 end outwards: 64px -> [8, 4, 2, 1]."""
    return [min(2 ** (n - 1 - i), MAX_WIDTH_MULT) for i in range(n)]


class Generator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, latent_dim: int = 100, ngf: int = 64):
        super().__init__()
        n = _num_blocks(image_size)
        mults = _mults(n)
        self.latent_dim = latent_dim
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, ngf * mults[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ngf * mults[0]), nn.ReLU(True)]
        for a, b in zip(mults[:-1], mults[1:]):
            layers += [nn.ConvTranspose2d(ngf * a, ngf * b, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * b),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf * mults[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) or (B, latent_dim, 1, 1) -> images (B, C, S, S) in [-1, 1]."""
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        if norm not in D_NORMS:
            raise ConfigError(f"unknown discriminator norm {norm!r}; valid: {list(D_NORMS)}")
        n = _num_blocks(image_size)
        mults = list(reversed(_mults(n)))  # 64px -> [1, 2, 4, 8]
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, ndf * mults[0], 4, 2, 1, bias=norm != "batch")),
                                   nn.LeakyReLU(0.2, True)]
        for a, b in zip(mults[:-1], mults[1:]):
            layers.append(sn(nn.Conv2d(ndf * a, ndf * b, 4, 2, 1, bias=norm != "batch")))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(ndf * b))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(sn(nn.Conv2d(ndf * mults[-1], 1, 4, 1, 0, bias=False)))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, C, S, S) -> one raw score (logit) per image, shape (B,)."""
        return self.net(x).reshape(x.shape[0])


def dcgan_init(module: nn.Module) -> None:
    """Conv weights N(0, 0.02), batch-norm scale N(1, 0.02) and shift 0 (Radford et al. 2016)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(w, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_networks(cfg) -> tuple[Generator, Discriminator]:
    """Resolved GanConfig -> (G, D) with D's normalisation chosen by the loss table."""
    from trainables.gan.losses import get_loss

    G = Generator(cfg.image_size, cfg.channels, cfg.latent_dim, cfg.ngf)
    D = Discriminator(cfg.image_size, cfg.channels, cfg.ndf, norm=get_loss(cfg.loss).d_norm)
    return G, D


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
