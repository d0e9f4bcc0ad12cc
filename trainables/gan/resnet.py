"""Residual GAN for small data sets (SNGAN, Miyato et al. 2018; self-attention, SAGAN, Zhang et al. 2019): GanConfig
arch="resnet", 32-256 px, 1 or 3 channels, optionally class-conditional through a projection discriminator.

    G = ResGenerator(image_size=32, channels=3, latent_dim=100, ngf=32, attention=True)
    D = ResDiscriminator(image_size=32, channels=3, ndf=32, attention=True)

G: z -> linear -> 4x4 map -> one residual up block per side-doubling (BN, ReLU, nearest 2x upsample, 3x3 conv, BN,
ReLU, 3x3 conv; shortcut: upsample + 1x1 conv) -> BN, ReLU, 3x3 conv, tanh. Nearest upsampling + conv instead of a
transposed conv: no checkerboard artefacts. D: residual down blocks (ReLU, 3x3 conv, ReLU, 3x3 conv, 2x2 average
pool; shortcut 1x1 conv + pool; the first block without the leading ReLU) down to 4x4, ReLU, sum over positions,
a linear score. Spectral norm on every D layer whatever the loss: it bounds D's Lipschitz constant, which is what
keeps a D trained on a few dozen images from running away (with wgan-gp the gradient penalty comes on top).
Widths follow the DCGAN's rule (double per block towards 4x4, capped at 16x ngf/ndf), so `gan_width` means the same.

Self-attention (attention=True): one SAGAN block in G after the block that reaches ATTENTION side, and in D on the
map of that side; the side is half the image, at most 32 px (at 256 px a 128 px map's attention matrix would hold
16,384^2 entries per image). Its output is scaled by a learnt gamma that starts at 0, so it starts as identity.

Conditional (num_classes > 0): G concatenates a label embedding to z (as the DCGAN does), D adds the projection
<embed(y), pooled features> to its score (Miyato & Koyama 2018). D(x, y, return_features=True) also returns the
pooled features (B, feature_dim) that feature matching uses.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.gan.layers import _check_labels, _mults, _num_blocks, spectral_norm_fp32


def attention_side(image_size: int) -> int:
    """The feature-map side at which the self-attention block sits: half the image, at most 32 px."""
    return min(32, image_size // 2)


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + gamma * attend(x); keys/values max-pooled 2x (BigGAN's cheaper form)."""

    def __init__(self, ch: int, sn=lambda m: m):
        super().__init__()
        k = max(1, ch // 8)
        self.theta = sn(nn.Conv2d(ch, k, 1, bias=False))
        self.phi = sn(nn.Conv2d(ch, k, 1, bias=False))
        self.g = sn(nn.Conv2d(ch, max(1, ch // 2), 1, bias=False))
        self.o = sn(nn.Conv2d(max(1, ch // 2), ch, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (b, k, hw)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # (b, k, hw/4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (b, hw, hw/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # (b, c/2, hw/4)
        out = (g @ attn.transpose(1, 2)).reshape(b, -1, h, w)
        return x + self.gamma * self.o(out)


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.first = first  # the image itself comes in: no ReLU before the first conv (it would cut off half of it)
        self.conv1 = spectral_norm_fp32(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm_fp32(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = spectral_norm_fp32(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.first:  # pool then project: the SNGAN "optimised" first block
            return F.avg_pool2d(h, 2) + self.skip(F.avg_pool2d(x, 2))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.skip(x), 2)


class ResGenerator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, latent_dim: int = 100, ngf: int = 64,
                 num_classes: int = 0, attention: bool = False):
        super().__init__()
        n = _num_blocks(image_size)
        widths = [ngf * m for m in _mults(n)]
        widths.append(widths[-1])  # block i: widths[i] -> widths[i + 1]
        self.latent_dim, self.num_classes, self.width0 = latent_dim, num_classes, widths[0]
        z_in = latent_dim
        if num_classes:
            self.embed = nn.Embedding(num_classes, latent_dim)  # N(0, 1), the scale of z
            z_in = 2 * latent_dim
        self.fc = nn.Linear(z_in, 16 * widths[0])
        blocks: list[nn.Module] = []
        for i in range(n):
            blocks.append(GBlock(widths[i], widths[i + 1]))
            if attention and 4 * 2 ** (i + 1) == attention_side(image_size):
                blocks.append(SelfAttention(widths[i + 1]))
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], channels, 3, 1, 1),
                                 nn.Tanh())
        resnet_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim) or (B, latent_dim, 1, 1) [+ class indices y (B,)] -> images (B, C, S, S) in [-1, 1]."""
        b = z.shape[0]
        z = z.reshape(b, self.latent_dim)
        if self.num_classes:
            z = torch.cat([z, self.embed(_check_labels(y, self.num_classes, b, "generator")).to(z.dtype)], 1)
        return self.out(self.blocks(self.fc(z).reshape(b, self.width0, 4, 4)))


class ResDiscriminator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, ndf: int = 64, num_classes: int = 0,
                 attention: bool = False):
        super().__init__()
        n = _num_blocks(image_size)
        widths = [ndf * m for m in reversed(_mults(n))]  # 64 px -> [1, 2, 4, 8] x ndf
        blocks: list[nn.Module] = [DBlock(channels, widths[0], first=True)]
        side = image_size // 2
        for i in range(1, n):
            if attention and side == attention_side(image_size):
                blocks.append(SelfAttention(widths[i - 1], sn=spectral_norm_fp32))
            blocks.append(DBlock(widths[i - 1], widths[i]))
            side //= 2
        self.blocks = nn.Sequential(*blocks)
        self.head = spectral_norm_fp32(nn.Linear(widths[-1], 1))
        self.num_classes = num_classes
        self.feature_dim = widths[-1]  # the pooled features before the head
        if num_classes:
            self.embed = spectral_norm_fp32(nn.Embedding(num_classes, widths[-1]))
        resnet_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, return_features: bool = False):
        """images (B, C, S, S) [+ class indices y (B,)] -> one raw score per image (B,); with return_features also
        the pooled features (B, feature_dim)."""
        b = x.shape[0]
        h = F.relu(self.blocks(x)).sum((2, 3))
        score = self.head(h).reshape(b)
        if self.num_classes:  # projection: <embed(y), pooled features>
            e = self.embed(_check_labels(y, self.num_classes, b, "discriminator"))
            score = score + (e.to(h.dtype) * h).sum(1)
        return (score, h) if return_features else score

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward(x, y, return_features=True)[1]


def resnet_init(module: nn.Module) -> None:
    """Xavier-uniform convs and linears (SNGAN's init; gain sqrt(2) in residual branches, 1 on shortcuts and
    heads), zero biases; spectrally normalised layers are initialised through their original weight."""
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            gain = math.sqrt(2) if name.rsplit(".", 1)[-1] in ("conv1", "conv2") else 1.0
            nn.init.xavier_uniform_(w, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding) and isinstance(module, ResDiscriminator):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.xavier_uniform_(w)
