"""DCGAN generator and discriminator, parameterised by image side (32/64/128/256), channels and widths.

    G = Generator(image_size=64, channels=3, latent_dim=100, ngf=64)        # ~3.58M params
    D = Discriminator(image_size=64, channels=3, ndf=64, norm="batch")     # ~2.77M params

Each side-doubling is one ConvTranspose(4, 2, 1) block in G and one Conv(4, 2, 1) block in D, so a
128 px model has 5 up/down blocks. Widths double per block towards the 4x4 end, capped at 16x the
base width (a 256 px model would otherwise reach 2048 channels). D's normalisation depends on the loss:
"batch" (DCGAN, bce), "spectral" (hinge; spectral norm on every conv, no batch norm) or "none"
(wgan-gp: batch norm would break the per-sample gradient penalty). Init: N(0, 0.02) as in DCGAN.

Class-conditional variant (num_classes > 0, cfg.conditional): G concatenates a learned label embedding
(latent_dim wide) to z; D is a projection discriminator (Miyato & Koyama 2018): score = head(h) +
<embed(y), sum_xy h>, h = D's last hidden feature map (4x4), embed spectrally normalised with the hinge loss.
Labels are class indices 0..K-1 (positions in cfg.classes, not manifest labels).
`D(x, y, return_features=True)` / `D.features(x, y)` also return h flattened: the feature-matching loss uses it.
With num_classes = 0 the networks (and their state_dict keys) are exactly the unconditional DCGAN.
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


class _SpectralNormFP32(nn.utils.parametrizations._SpectralNorm):
    """torch's spectral norm with the power iteration and sigma computed in fp32 with autocast off.

    Under bf16 autocast torch.mv (the power iteration's matrix-vector product) runs in bf16 on CUDA: u and v lose
    precision every step, and sigma = vdot(u, mv(W, v)) mixes an fp32 u with a bf16 product (an error in some
    torch versions). The normalised weight comes out fp32; the conv that uses it is still autocast to bf16.
    Same buffers and state_dict keys as nn.utils.parametrizations.spectral_norm."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight.float())


def spectral_norm_fp32(module: nn.Module, name: str = "weight") -> nn.Module:
    """nn.utils.parametrizations.spectral_norm (1 power iteration, eps 1e-12, dim 0) with an fp32 power iteration."""
    weight = getattr(module, name)
    nn.utils.parametrize.register_parametrization(module, name, _SpectralNormFP32(weight, 1, 0, 1e-12))
    return module


def _check_labels(y: torch.Tensor | None, num_classes: int, batch: int, who: str) -> torch.Tensor:
    if y is None:
        raise ConfigError(f"the class-conditional {who} needs class indices y (0..{num_classes - 1}) with the input")
    if y.shape != (batch,):
        raise ConfigError(f"{who}: y must have shape ({batch},), got {tuple(y.shape)}")
    return y


class Generator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, latent_dim: int = 100, ngf: int = 64,
                 num_classes: int = 0):
        super().__init__()
        n = _num_blocks(image_size)
        mults = _mults(n)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        z_in = latent_dim
        if num_classes:
            self.embed = nn.Embedding(num_classes, latent_dim)  # N(0, 1), the scale of z
            z_in = 2 * latent_dim
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_in, ngf * mults[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ngf * mults[0]), nn.ReLU(True)]
        for a, b in zip(mults[:-1], mults[1:]):
            layers += [nn.ConvTranspose2d(ngf * a, ngf * b, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * b),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf * mults[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim) or (B, latent_dim, 1, 1) [+ class indices y (B,)] -> images (B, C, S, S) in [-1, 1]."""
        b = z.shape[0]
        z = z.reshape(b, self.latent_dim)
        if self.num_classes:
            z = torch.cat([z, self.embed(_check_labels(y, self.num_classes, b, "generator")).to(z.dtype)], 1)
        return self.net(z.reshape(b, -1, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, ndf: int = 64, norm: str = "batch",
                 num_classes: int = 0):
        super().__init__()
        if norm not in D_NORMS:
            raise ConfigError(f"unknown discriminator norm {norm!r}; valid: {list(D_NORMS)}")
        n = _num_blocks(image_size)
        mults = list(reversed(_mults(n)))  # 64px -> [1, 2, 4, 8]
        sn = spectral_norm_fp32 if norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, ndf * mults[0], 4, 2, 1, bias=norm != "batch")),
                                   nn.LeakyReLU(0.2, True)]
        for a, b in zip(mults[:-1], mults[1:]):
            layers.append(sn(nn.Conv2d(ndf * a, ndf * b, 4, 2, 1, bias=norm != "batch")))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(ndf * b))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(sn(nn.Conv2d(ndf * mults[-1], 1, 4, 1, 0, bias=False)))
        self.net = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.feature_dim = ndf * mults[-1] * 16  # the 4x4 map before the head, flattened
        if num_classes:
            self.embed = sn(nn.Embedding(num_classes, ndf * mults[-1]))
        dcgan_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, return_features: bool = False):
        """images (B, C, S, S) [+ class indices y (B,)] -> one raw score (logit) per image, shape (B,);
        with return_features also D's last hidden feature map, flattened (B, feature_dim)."""
        b = x.shape[0]
        h = x
        for layer in self.net[:-1]:
            h = layer(h)
        score = self.net[-1](h).reshape(b)
        if self.num_classes:  # projection: <embed(y), sum-pooled features>
            e = self.embed(_check_labels(y, self.num_classes, b, "discriminator"))
            score = score + (e.to(h.dtype) * h.sum((2, 3))).sum(1)
        return (score, h.reshape(b, -1)) if return_features else score

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """D's last hidden feature map (before the scoring head), flattened: (B, feature_dim)."""
        return self.forward(x, y, return_features=True)[1]


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
    if isinstance(module, Discriminator) and module.num_classes:  # projection: same scale as the head conv
        e = module.embed
        nn.init.normal_(e.parametrizations.weight.original if hasattr(e, "parametrizations") else e.weight, 0.0, 0.02)


def build_networks(cfg) -> tuple[Generator, Discriminator]:
    """Resolved GanConfig -> (G, D) with D's normalisation chosen by the loss table."""
    from trainables.gan.losses import get_loss

    k = num_classes_of(cfg)
    G = Generator(cfg.image_size, cfg.channels, cfg.latent_dim, cfg.ngf, num_classes=k)
    D = Discriminator(cfg.image_size, cfg.channels, cfg.ndf, norm=get_loss(cfg.loss).d_norm, num_classes=k)
    return G, D


def num_classes_of(cfg) -> int:
    """Classes a (resolved) config's networks are conditioned on; 0 = unconditional."""
    if not cfg.conditional:
        return 0
    if not cfg.classes:
        raise ConfigError("a conditional GAN config needs its classes resolved (resolve_config with the manifest)")
    return len(cfg.classes)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
