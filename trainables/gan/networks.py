"""The GAN architectures (GAN_ARCHS: "dcgan" here, "resnet" in trainables.gan.resnet; build_networks(cfg) picks by
cfg.arch) and the DCGAN generator and discriminator, parameterised by image side (32/64/128/256), channels, widths.

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

import torch
from torch import nn

from data_prep.errors import ConfigError
from trainables.gan.layers import (MAX_WIDTH_MULT, _check_labels, _mults, _num_blocks,  # noqa: F401  (old home)
                                   _SpectralNormFP32, spectral_norm_fp32)

D_NORMS = ("batch", "spectral", "none")


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


def _dcgan(cfg, k: int):
    from trainables.gan.losses import get_loss

    return (Generator(cfg.image_size, cfg.channels, cfg.latent_dim, cfg.ngf, num_classes=k),
            Discriminator(cfg.image_size, cfg.channels, cfg.ndf, norm=get_loss(cfg.loss).d_norm, num_classes=k))


def _resnet(cfg, k: int):
    from trainables.gan.resnet import ResDiscriminator, ResGenerator

    attention = bool(getattr(cfg, "attention", False))
    return (ResGenerator(cfg.image_size, cfg.channels, cfg.latent_dim, cfg.ngf, num_classes=k, attention=attention),
            ResDiscriminator(cfg.image_size, cfg.channels, cfg.ndf, num_classes=k, attention=attention))


# GanConfig.arch -> builder of (G, D). dcgan: D's normalisation follows the loss table; resnet: spectral norm always.
GAN_ARCHS = {"dcgan": _dcgan, "resnet": _resnet}


def build_networks(cfg) -> tuple[nn.Module, nn.Module]:
    """Resolved GanConfig -> (G, D) of its architecture (cfg.arch; configs older than the field are DCGANs)."""
    arch = getattr(cfg, "arch", "dcgan")
    if arch not in GAN_ARCHS:
        raise ConfigError(f"unknown GAN arch {arch!r}; valid: {sorted(GAN_ARCHS)}")
    return GAN_ARCHS[arch](cfg, num_classes_of(cfg))


def build_generator(cfg) -> nn.Module:
    """G alone (sampling from a checkpoint needs no D)."""
    return build_networks(cfg)[0]


def num_classes_of(cfg) -> int:
    """Classes a (resolved) config's networks are conditioned on; 0 = unconditional."""
    if not cfg.conditional:
        return 0
    if not cfg.classes:
        raise ConfigError("a conditional GAN config needs its classes resolved (resolve_config with the manifest)")
    return len(cfg.classes)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
