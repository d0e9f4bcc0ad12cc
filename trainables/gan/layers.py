"""Building blocks shared by the GAN architectures (trainables.gan.networks: DCGAN; trainables.gan.resnet: the
residual SNGAN-style pair): how many up/down blocks an image side takes, the width multipliers, spectral norm
with an fp32 power iteration, and the class-label check of conditional networks."""
from __future__ import annotations

import math

import torch
from torch import nn

from data_prep.errors import ConfigError
SUPPORTED_SIZES = (32, 64, 128, 256)  # G/D come in these sides; other sizes train at the nearest
MAX_WIDTH_MULT = 16


def _num_blocks(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ConfigError(f"image size {image_size} is not supported by the GAN networks; "
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
