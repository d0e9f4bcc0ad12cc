"""Classifier networks: torchvision ResNet-18/50 adapted to small 1- or 3-channel inputs, and a small CNN.

    model = build_model("resnet18", num_classes=2, channels=3, image_size=32, weights=None)

Weights are never downloaded: `weights=None` is random init; a path loads a local state dict
(`torch.load(..., weights_only=True)`), e.g. torchvision's ImageNet file saved on a machine with
internet. The classification head (fc) and an adapted stem (conv1) are re-initialised when their
shapes differ from the file's; any other mismatch means the wrong architecture and is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from data_prep.errors import ConfigError

SMALL_INPUT_BELOW = 64  # below this side the ImageNet stem (7x7 stride 2 + max-pool) throws away too much


def _resnet(factory: Callable[..., nn.Module]) -> Callable[[int, int, int], nn.Module]:
    def build(num_classes: int, channels: int, image_size: int) -> nn.Module:
        net = factory(weights=None, num_classes=num_classes)
        if image_size < SMALL_INPUT_BELOW:  # CIFAR-style stem: 3x3 stride 1, no max-pool
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif channels != 3:
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return net
    return build


def _small_cnn(num_classes: int, channels: int, image_size: int) -> nn.Module:
    """Three conv blocks + global average pool: seconds per epoch on CPU, for smoke runs and tests."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]
    return nn.Sequential(*block(channels, 16), *block(16, 32), *block(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def _torchvision(name: str):
    import torchvision.models as tvm
    return getattr(tvm, name)


MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "resnet18": lambda *a: _resnet(_torchvision("resnet18"))(*a),
    "resnet50": lambda *a: _resnet(_torchvision("resnet50"))(*a),
    "small_cnn": _small_cnn,
}
REINIT_OK = ("fc.weight", "fc.bias", "conv1.weight")  # head and adapted stem may differ from a weights file


def load_weights(model: nn.Module, path: str | Path, model_name: str) -> list[str]:
    """Load a local state dict into `model`; returns the keys re-initialised (head/stem shape mismatches)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}. Nothing is downloaded here: save a state dict on a "
                          f"machine with internet (e.g. torch.save(torchvision.models.{model_name}(weights='DEFAULT')"
                          f".state_dict(), 'w.pt')), copy it over and pass --weights w.pt; omit --weights for random init")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"weights file {path} is not a loadable torch state dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # our own checkpoints: {"model": state_dict, ...}
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP-wrapped model
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_diff = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    bad = [k for k in missing + unexpected + shape_diff if k not in REINIT_OK]
    if bad:
        raise ConfigError(f"weights file {path} does not match model {model_name!r} (wrong architecture?): "
                          f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shape_diff)} differently "
                          f"shaped keys, e.g. {bad[:3]}")
    skipped = [k for k in REINIT_OK if k in own and (k not in state or k in shape_diff)]
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in skipped}, strict=False)
    return skipped


def build_model(name: str, num_classes: int, channels: int, image_size: int, weights: str | None = None) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    model = MODELS[name](num_classes, channels, image_size)
    if weights is not None:
        load_weights(model, weights, name)
    return model
