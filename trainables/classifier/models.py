"""Classifier networks: torchvision ResNet-18/50 adapted to small 1- or 3-channel inputs, and a small CNN.

    model = build_model("resnet18", num_classes=2, channels=3, image_size=32, weights=None)

Weights are never downloaded: `weights=None` is random init; a path loads a local state dict
(`torch.load(..., weights_only=True)`), e.g. torchvision's ImageNet file saved on a machine with
internet. The classification head (fc) is re-initialised when its shape differs from the file's (another
number of classes). A grayscale model gets the file's RGB stem summed over its input channels (the
response to a gray image (g, g, g) is unchanged), not a random stem; a stem of another kernel size (the
3x3 small-input stem below 64 px) is re-initialised. Any other mismatch means the wrong architecture and
is an error. `model.reinitialised_keys` lists what was not loaded (training keeps those trainable
while the backbone is frozen, see `trainable_when_frozen`).

Input normalisation (`input_normalisation`): batches arrive in [-1, 1]; a pretrained network expects the
ImageNet mean/std it was trained with, so with weights (input_norm "auto") a forward pre-hook maps
[-1, 1] -> (x01 - mean) / std (grayscale: the mean of the three channels' mean and std). The hook keeps
the state dict free of extra keys, so checkpoints load into torchvision models and back.
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
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per-channel mean and std of the inputs torchvision's ImageNet weights saw
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_normalisation(input_norm: str, weights: str | None, channels: int) -> tuple[tuple, tuple] | None:
    """(mean, std) per channel in [0, 1] units the network's input is normalised with, or None ([-1, 1] as is)."""
    if input_norm == "none" or (input_norm == "auto" and weights is None):
        return None
    if input_norm not in ("auto", "imagenet"):
        raise ConfigError(f"unknown input_norm {input_norm!r}; valid: ['auto', 'imagenet', 'none']")
    if channels == 1:  # the summed stem sees one gray channel standing for three equal ones
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    return IMAGENET_MEAN, IMAGENET_STD


def add_input_normalisation(model: nn.Module, mean: tuple, std: tuple) -> nn.Module:
    """Forward pre-hook: [-1, 1] batches -> (x01 - mean) / std, i.e. x * 0.5 / std + (0.5 - mean) / std."""
    scale = torch.tensor([0.5 / s for s in std]).view(1, -1, 1, 1)
    shift = torch.tensor([(0.5 - m) / s for m, s in zip(mean, std)]).view(1, -1, 1, 1)

    def hook(module, args):
        x = args[0]
        return (x * scale.to(x.device, x.dtype) + shift.to(x.device, x.dtype), *args[1:])

    model.register_forward_pre_hook(hook)
    model.input_normalisation = {"mean": list(mean), "std": list(std)}
    return model


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the classification head: ResNets' fc, else the last Linear layer."""
    if isinstance(getattr(model, "fc", None), nn.Linear):
        return ("fc.",)
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return (last[-1] + ".",) if last else ()


def trainable_when_frozen(model: nn.Module) -> set[str]:
    """Parameter names that train while the backbone is frozen: the head and any layer not loaded from weights."""
    keep = head_prefixes(model) + tuple(k.rsplit(".", 1)[0] + "." for k in getattr(model, "reinitialised_keys", ()))
    return {n for n, _ in model.named_parameters() if n.startswith(keep)}


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
    stem = state.get("conv1.weight")
    if (stem is not None and "conv1.weight" in own and stem.ndim == 4 and own["conv1.weight"].shape[1] == 1
            and stem.shape[1] == 3 and tuple(stem.shape[2:]) == tuple(own["conv1.weight"].shape[2:])):
        state = {**state, "conv1.weight": stem.sum(dim=1, keepdim=True)}  # RGB stem -> gray: same response to (g,g,g)
    shape_diff = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    bad = [k for k in missing + unexpected + shape_diff if k not in REINIT_OK]
    if bad:
        raise ConfigError(f"weights file {path} does not match model {model_name!r} (wrong architecture?): "
                          f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shape_diff)} differently "
                          f"shaped keys, e.g. {bad[:3]}")
    skipped = [k for k in REINIT_OK if k in own and (k not in state or k in shape_diff)]
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in skipped}, strict=False)
    return skipped


def build_model(name: str, num_classes: int, channels: int, image_size: int, weights: str | None = None,
                input_norm: str = "none") -> nn.Module:
    """The network; with `weights` loaded from a local file; with input normalisation per `input_norm`
    ("auto": ImageNet mean/std when weights are given). `model.reinitialised_keys`: keys not loaded."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    model = MODELS[name](num_classes, channels, image_size)
    model.reinitialised_keys = load_weights(model, weights, name) if weights is not None else []
    norm = input_normalisation(input_norm, weights, channels)
    if norm is not None:
        add_input_normalisation(model, *norm)
    return model
