"""Perceptual loss for G from VGG16 features (relu1_2, relu2_2, relu3_3), from LOCAL weights only.

    vgg = load_vgg16_features("vgg16.pth")        # torchvision's vgg16 state_dict, saved by the user
    loss = PerceptualLoss(vgg)(real, fake)        # images in [-1, 1], 1 or 3 channels

Nothing is downloaded: the layers are built here with torchvision's `vgg16().features` layout (indices
0..15, the same state_dict keys) and filled from the user's file with torch.load(weights_only=True); make
the file once on a machine with internet (see trainables.gan.config.VGG_HELP). A file whose tensors do not
have VGG16's shapes is refused, naming the keys.

What is compared in an unpaired GAN: a fake image has no real partner, so the per-pair perceptual
distance of image-to-image models does not apply. We match statistics instead, like feature matching but
in a fixed ImageNet feature space: for each of the three layers, the squared distance between the batch
mean of the real images' feature maps and that of the fake images' (averaged over channels and positions),
summed over the layers. Inputs are mapped from [-1, 1] to [0, 1], grayscale repeated to 3 channels, then
normalised with the ImageNet mean/std the weights were trained with; images are used at their own size.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from data_prep.errors import ConfigError

VGG16_WIDTHS = (64, 128, 256)  # channels of the conv1_x, conv2_x, conv3_x blocks
VGG16_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15}  # indices in torchvision's vgg16().features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_features(widths: tuple[int, int, int] = VGG16_WIDTHS) -> nn.Sequential:
    """torchvision's vgg16().features[:16] (conv1_1 .. relu3_3), randomly initialised; `widths` other than
    VGG16's give a small network of the same layout (for tests)."""
    w1, w2, w3 = widths
    conv = lambda a, b: nn.Conv2d(a, b, kernel_size=3, padding=1)  # noqa: E731
    relu = lambda: nn.ReLU(inplace=False)  # noqa: E731
    return nn.Sequential(conv(3, w1), relu(), conv(w1, w1), relu(), nn.MaxPool2d(2, 2),
                         conv(w1, w2), relu(), conv(w2, w2), relu(), nn.MaxPool2d(2, 2),
                         conv(w2, w3), relu(), conv(w3, w3), relu(), conv(w3, w3), relu())


def load_vgg16_features(path: str | Path | None) -> nn.Sequential:
    """VGG16 layers up to relu3_3 with the weights of a local state_dict file (full torchvision vgg16
    state_dict, or only its `features.*` / bare `N.weight` entries). Clear errors for a missing file, an
    unreadable one, missing keys and tensors of the wrong shape."""
    from trainables.gan.config import VGG_HELP

    if not path:
        raise ConfigError(f"the perceptual loss needs local VGG16 weights; {VGG_HELP}")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"VGG16 weights file not found: {path}; {VGG_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a loadable VGG16 state_dict ({type(exc).__name__}: {exc}); {VGG_HELP}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a VGG16 state_dict (name -> tensor), got {type(state).__name__}; "
                          f"{VGG_HELP}")
    net = vgg16_features()
    want = net.state_dict()
    prefixed = any(k.startswith("features.") for k in state)
    picked = {}
    for k in want:
        src = f"features.{k}" if prefixed else k
        if src in state:
            picked[k] = (src, state[src])
    missing = [f"features.{k}" for k in want if k not in picked]
    if missing:
        raise ConfigError(f"{path}: not VGG16 weights - missing {missing} (a torchvision vgg16 state_dict has "
                          f"features.0.weight ... features.14.bias); {VGG_HELP}")
    wrong = [f"{src}: file {tuple(t.shape)}, VGG16 {tuple(want[k].shape)}" for k, (src, t) in picked.items()
             if t.shape != want[k].shape]
    if wrong:
        raise ConfigError(f"{path}: VGG16 weights of the wrong shape - " + "; ".join(wrong))
    net.load_state_dict({k: t.float() for k, (_, t) in picked.items()})
    return net


class PerceptualLoss(nn.Module):
    """Frozen VGG-layout feature net -> loss(real, fake) = sum over relu1_2/2_2/3_3 of the mean squared
    difference between the batch-mean feature maps of real and fake (see the module docstring)."""

    def __init__(self, features: nn.Sequential, layers: tuple[int, ...] = tuple(VGG16_LAYERS.values())):
        super().__init__()
        self.layers = tuple(layers)
        self.features = features[:max(self.layers) + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # the feature net stays in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 1|3, S, S) in [-1, 1] -> the feature maps at self.layers."""
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.layers:
                out.append(x)
        return out

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real_means = [f.float().mean(0) for f in self.extract(real)]
        fake_means = [f.float().mean(0) for f in self.extract(fake)]
        return sum(((r - f) ** 2).mean() for r, f in zip(real_means, fake_means))
