"""GanConfig: every knob of GAN training, one frozen dataclass (Tune/YAML dicts converted at the boundary).

    cfg = gan_config_from_dict({"loss": "hinge", "num_epochs": 50})   # unknown keys -> ConfigError
    cfg = resolve_config(cfg, manifest)   # fills image_size/channels from the manifest, picks the device

The resolved config is saved as RUN/config.json and inside every checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from data_prep.config import config_from_dict
from data_prep.errors import ConfigError
from trainables.gan.layers import SUPPORTED_SIZES  # G/D come in these sides; other sizes train at the nearest

MIN_SIZE, MAX_SIZE = 16, 512  # outside this range "nearest supported" would distort images too much
GPU_SWITCHES = ("bf16", "channels_last", "cuda_graphs")
# Fields that fix the shapes of G and D (and the classes they learn): a checkpoint must agree on all of them.
ARCH_FIELDS = ("arch", "attention", "image_size", "channels", "latent_dim", "ngf", "ndf", "loss", "conditional",
               "classes")
VGG_HELP = ("nothing is downloaded: save torchvision's ImageNet VGG16 once on a machine with internet,\n"
            "    python -c \"import torch, torchvision; torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1')"
            ".state_dict(), 'vgg16.pth')\"\n"
            "copy vgg16.pth here and pass --vgg-weights vgg16.pth (GAN config key vgg_weights)")


@dataclass(frozen=True)
class GanConfig:
    arch: str = "dcgan"  # "dcgan" | "resnet" (residual G, spectrally normalised residual D; trainables.gan.resnet)
    attention: bool = False  # resnet only: one self-attention block in G and D at half the image side (<= 32 px)
    image_size: int = 0  # side in px; 0 = the manifest's image_size; not 32/64/128/256 -> nearest (with a note)
    channels: int = 0  # 1 or 3; 0 = the manifest's channels
    latent_dim: int = 100  # length of the noise vector z
    ngf: int = 64  # generator width (channels of its last hidden layer)
    ndf: int = 64  # discriminator width (channels of its first layer)
    loss: str = "bce"  # "bce" (non-saturating) | "hinge" (spectral-norm D) | "wgan-gp" (no batch norm in D)
    lr_g: float = 2e-4  # Adam learning rate of G
    lr_d: float = 2e-4  # Adam learning rate of D
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas of both optimizers
    batch_size: int = 64  # images per step per worker
    num_epochs: int = 50  # passes over the minority-class training images
    n_critic: int = 1  # D steps per G step (5 is usual for wgan-gp)
    gp_weight: float = 10.0  # gradient-penalty weight (wgan-gp only)
    label_smoothing: float = 1.0  # bce: target for real images (0.9 = one-sided smoothing; 1.0 = off)
    diffaugment: str = ""  # DiffAugment policy, comma-separated from color,translation,cutout; "" = off
    ada: bool = False  # adaptive discriminator augmentation (Karras et al. 2020), probability p steered by overfitting
    ada_target: float = 0.6  # ADA: overfitting r_t = E[sign(D(real))] above this raises p, below lowers it
    ada_ramp: float = 0.1  # ADA: share of num_epochs in which p can move from 0 to 1 (the adjustment speed)
    ada_policy: str = "standard"  # ADA: trainables.arms.AUGMENT_POLICIES key; which flips/rotations it may use
    ema_decay: float = 0.999  # G_ema decay per G step (ramped up from 0 early on); 0 = G_ema follows G
    checkpoint_every: int = 5  # epochs between checkpoints (the last epoch is always checkpointed)
    keep_checkpoints: int = 3  # checkpoints kept on disk (oldest deleted first); >= 1
    sample_every: int = 5  # epochs between fixed-noise sample grids (RUN/samples/); 0 = off
    eval_every: int = 0  # epochs between quality evaluations (the `evaluate` hook); 0 = off
    best_after: float = 0.5  # share of num_epochs before which an evaluation cannot make the best-KID checkpoint
    seed: int = 0  # seeds init, noise, augmentation and batch order: same seed on CPU -> same weights
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda"
    bf16: str = "auto"  # bf16 autocast: "auto" (on for CUDA) | "on" | "off"; always off on CPU
    channels_last: str = "auto"  # NHWC memory format: "auto" (on for CUDA) | "on" | "off"; off on CPU
    cuda_graphs: str = "auto"  # capture the whole step in a CUDA graph: "auto" (on for 1 CUDA worker) | "on" | "off"
    stop_on_nonfinite: bool = True  # a NaN/inf loss in an epoch ends the run with status "diverged"
    collapse_loss_d: float = 1e-3  # bce/hinge: epoch-mean loss_D below this counts as a collapsed D; 0 = off
    collapse_patience: int = 3  # consecutive collapsed-D epochs before the run is stopped
    max_abs_loss: float = 1e6  # |epoch-mean loss_D or loss_G| above this counts as divergence; 0 = off
    conditional: bool = False  # class-conditional DCGAN (label embedding in G, projection D) over `classes`
    classes: tuple[int | str, ...] = ()  # labels (or class names) trained on; () = minority only, or all if conditional
    # conditional only: each epoch takes every image of the smallest class and an equal, freshly drawn (seeded) number
    # of each other class, so classes are seen equally and an epoch costs K x the smallest class, not the whole set
    balanced_epochs: bool = False
    feature_matching: float = 0.0  # weight of G's feature-matching term (D's penultimate features); 0 = off
    perceptual: float = 0.0  # weight of G's VGG16 perceptual term (relu1_2/2_2/3_3 feature means); 0 = off
    vgg_weights: str | None = None  # local VGG16 state_dict file (needed when perceptual > 0; never downloaded)

    def __post_init__(self) -> None:
        from trainables.gan.losses import GAN_LOSSES  # one source of truth for the valid names

        if self.loss not in GAN_LOSSES:
            raise ConfigError(f"unknown GAN loss {self.loss!r}; valid losses: {sorted(GAN_LOSSES)}")
        if self.image_size and not MIN_SIZE <= self.image_size <= MAX_SIZE:
            raise ConfigError(f"image_size {self.image_size} is not supported: the GAN trains at "
                              f"{list(SUPPORTED_SIZES)} px (sizes {MIN_SIZE}..{MAX_SIZE} use the nearest)")
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"channels must be 1 or 3 (0 = from the manifest), got {self.channels}")
        for name in ("latent_dim", "ngf", "ndf", "batch_size", "n_critic", "keep_checkpoints", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_epochs", "sample_every", "eval_every", "collapse_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ConfigError(f"lr_g and lr_d must be > 0, got {self.lr_g}, {self.lr_d}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.best_after <= 1:
            raise ConfigError(f"best_after is a share of num_epochs in [0, 1], got {self.best_after}")
        if not 0 < self.label_smoothing <= 1:
            raise ConfigError(f"label_smoothing is the real-image target in (0, 1], got {self.label_smoothing}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in GPU_SWITCHES:
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ConfigError(f"{name} must be auto, on or off, got {getattr(self, name)!r}")
        from trainables.gan.diffaugment import parse_policy
        parse_policy(self.diffaugment)  # raises on unknown augmentations
        self._check_arch_and_ada()
        for name in ("feature_matching", "perceptual"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} is a loss weight >= 0 (0 = off), got {v!r}")
        if self.perceptual > 0 and not self.vgg_weights:
            raise ConfigError(f"perceptual={self.perceptual:g} needs local VGG16 weights (vgg_weights); {VGG_HELP}")
        if not isinstance(self.classes, tuple) or not all(isinstance(c, (int, str)) and not isinstance(c, bool)
                                                          for c in self.classes):
            raise ConfigError(f"classes must be a list of labels or class names, got {self.classes!r}")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes lists a class more than once: {list(self.classes)}")
        if self.balanced_epochs and not self.conditional:
            raise ConfigError("balanced_epochs=True balances the classes of a conditional GAN; set conditional=True "
                              "(an unconditional GAN trains on one class)")
        if not self.conditional and len(self.classes) > 1:
            raise ConfigError(f"an unconditional GAN learns one class, got classes={list(self.classes)}; set "
                              f"conditional=True for one generator over several classes, or train one GAN per class")


    def _check_arch_and_ada(self) -> None:
        from trainables.arms import AUGMENT_POLICIES
        from trainables.gan.networks import GAN_ARCHS

        if self.arch not in GAN_ARCHS:
            raise ConfigError(f"unknown GAN arch {self.arch!r}; valid: {sorted(GAN_ARCHS)}")
        if self.attention and self.arch != "resnet":
            raise ConfigError(f"attention=True is part of the resnet arch; arch is {self.arch!r}")
        if self.ada and parse_policy_names(self.diffaugment):
            raise ConfigError(f"ada=True and diffaugment={self.diffaugment!r}: choose one augmentation of D's inputs")
        if not 0 < self.ada_target < 1 or not self.ada_ramp > 0:
            raise ConfigError(f"ada_target must be in (0, 1) and ada_ramp > 0, got {self.ada_target}, {self.ada_ramp}")
        if self.ada_policy not in AUGMENT_POLICIES:
            raise ConfigError(f"unknown ada_policy {self.ada_policy!r}; valid: {sorted(AUGMENT_POLICIES)}")


def parse_policy_names(policy: str) -> tuple[str, ...]:
    from trainables.gan.diffaugment import parse_policy

    return parse_policy(policy)


def gan_config_from_dict(values: Mapping[str, Any] | None) -> GanConfig:
    """Tune/YAML dict -> GanConfig; unknown keys raise ConfigError listing the valid ones."""
    return config_from_dict(GanConfig, values, what="GAN config")


def nearest_supported_size(size: int) -> int:
    return min(SUPPORTED_SIZES, key=lambda s: (abs(s - size), s))


def resolve_config(cfg: GanConfig, manifest=None, device_available: bool | None = None) -> GanConfig:
    """Fill size/channels from the manifest, snap the size to a supported one and pick the device."""
    import torch

    changes: dict[str, Any] = {}
    size = cfg.image_size or (int(manifest.meta.get("image_size", 64)) if manifest is not None else 64)
    if size not in SUPPORTED_SIZES:
        near = nearest_supported_size(size)
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ConfigError(f"image size {size} is not supported (supported: {list(SUPPORTED_SIZES)})")
        warnings.warn(f"GAN image_size {size} is not one of {list(SUPPORTED_SIZES)}; training at {near} px "
                      f"(images are resized to {near})", stacklevel=2)
        size = near
    changes["image_size"] = size
    if not cfg.channels:
        changes["channels"] = int(manifest.meta.get("channels", 3)) if manifest is not None else 3
    if manifest is not None and (cfg.classes or cfg.conditional):
        changes["classes"] = resolve_classes(cfg, manifest.classes)
    cuda = torch.cuda.is_available() if device_available is None else device_available
    if cfg.device == "cuda" and not cuda:
        raise ConfigError("device='cuda' but no CUDA GPU is visible (use device='auto' or 'cpu')")
    changes["device"] = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and cuda) else "cpu"
    return dataclasses.replace(cfg, **changes)


def resolve_classes(cfg: GanConfig, class_names: list[str]) -> tuple[int, ...]:
    """cfg.classes (labels or names; () = every class when conditional) -> sorted manifest labels."""
    if not cfg.classes:
        return tuple(range(len(class_names)))
    out = []
    for c in cfg.classes:
        if isinstance(c, str) and c in class_names:
            out.append(class_names.index(c))
        elif isinstance(c, int) or (isinstance(c, str) and c.lstrip("-").isdigit()):
            if not 0 <= int(c) < len(class_names):
                raise ConfigError(f"class label {c} is out of range; the manifest's classes are "
                                  f"{dict(enumerate(class_names))}")
            out.append(int(c))
        else:
            raise ConfigError(f"unknown class {c!r}; the manifest's classes are {class_names}")
    if len(set(out)) != len(out):
        raise ConfigError(f"classes {list(cfg.classes)} name a class more than once")
    return tuple(sorted(out))


def gpu_switches(cfg: GanConfig, device_type: str, world_size: int = 1) -> dict[str, bool]:
    """auto/on/off -> booleans for this device. On CPU everything is off (bf16 CPU autocast is slower)."""
    if device_type != "cuda":
        return {name: False for name in GPU_SWITCHES}
    out = {name: getattr(cfg, name) != "off" for name in GPU_SWITCHES}
    # Whole-step graphs capture one process's step; DDP's bucketed all-reduce is not captured here.
    if world_size > 1 and cfg.cuda_graphs == "auto":
        out["cuda_graphs"] = False
    if world_size > 1 and cfg.cuda_graphs == "on":
        raise ConfigError("cuda_graphs='on' works with one worker only; use 'auto' or 'off' with DDP")
    return out


def check_same_architecture(saved: Mapping[str, Any], cfg: GanConfig, where: str) -> None:
    """Raise ConfigError naming each architecture field where a checkpoint and the config differ."""
    defaults = {f.name: f.default for f in dataclasses.fields(GanConfig)}  # checkpoints older than a field

    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    diffs = [f"{k}: checkpoint has {norm(saved.get(k, defaults[k]))!r}, config asks for {norm(getattr(cfg, k))!r}"
             for k in ARCH_FIELDS if norm(saved.get(k, defaults[k])) != norm(getattr(cfg, k))]
    if diffs:
        raise ConfigError(f"{where} was trained with a different architecture/size - " + "; ".join(diffs))
