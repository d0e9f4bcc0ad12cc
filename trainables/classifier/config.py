"""ClassifierConfig: the one frozen config of the classifier stage (Tune dicts -> `classifier_config`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from data_prep.config import config_from_dict
from data_prep.errors import ConfigError
from trainables.arms import (AUGMENT_NAMES, CONTROL_KNOBS, IMBALANCE_FIXES, MAX_SYNTHETIC_RATIO,  # noqa: F401
                             knob_acts)
from trainables.metrics.classification import METRIC_KEYS, THRESHOLD_RULES

INPUT_NORMS = ("auto", "imagenet", "none")  # see models.input_normalisation
# curation name -> its steps, in order (trainables.classifier.curation does them)
CURATIONS = {"none": (), "copies": ("copies",), "copies+off_class": ("copies", "off_class")}


@dataclass(frozen=True)
class ClassifierConfig:
    model: str = "resnet18"  # "resnet18" | "resnet50" | "small_cnn" (see models.MODELS)
    weights: str | None = None  # local state-dict file to start from (never downloaded); None = random init
    input_norm: str = "auto"  # "auto" (ImageNet mean/std when weights are given, else none) | "imagenet" | "none"
    freeze_epochs: int = 0  # first N epochs train only the head (and any re-initialised stem); needs weights
    image_size: int | None = None  # input side in pixels; None = the manifest's image_size
    channels: int | None = None  # 1 or 3; None = the manifest's channels
    batch_size: int = 64  # images per optimiser step (per worker under DDP)
    num_epochs: int = 20  # epochs of epoch_size images each
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    synthetic_ratio: float = 0.0  # synthetic images / real minority train images, 0..10 (0 = baseline)
    imbalance_fix: str = "none"  # "none" | "class_weight" (loss weights) | "oversample" (balanced resampling)
    augment: str = "none"  # "none" | a policy of trainables.arms.AUGMENT_POLICIES (standard, xray, dermoscopy, ...)
    class_weight_power: float = 1.0  # class_weight only, in [0.5, 1]: loss weights (n / (C * n_c)) ** power
    oversample_share: float = 0.0  # oversample only: minority's share of draws in [0.25, 0.5]; 0 = each class 1/C
    augment_strength: float = 1.0  # with an augment policy, in [0.5, 1.5]: scales rotation, brightness, contrast
    epoch_size: int = 0  # images per epoch (steps = ceil(epoch_size / batch_size)); 0 = the training set's size
    select_metric: str = "f1"  # real-val metric that picks the best epoch (F1 of the minority class)
    threshold_rule: str = "max_f1"  # "max_f1" | "target_sensitivity": how the val threshold is chosen
    target_sensitivity: float = 0.9  # sensitivity the threshold must reach under "target_sensitivity"
    seed: int = 0  # model init, sampling, augmentation and synthetic-row draw
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
    num_folds: int = 0  # k-fold CV over train+val (test untouched); 0 = the manifest's split, no CV
    curation: str = "none"  # synthetic images dropped before the ratio's draw: "none" | "copies" | "copies+off_class"

    def __post_init__(self) -> None:
        from trainables.classifier.models import MODELS

        for name, value, table in (("model", self.model, MODELS), ("imbalance_fix", self.imbalance_fix,
                                   IMBALANCE_FIXES), ("augment", self.augment, AUGMENT_NAMES),
                                   ("threshold_rule", self.threshold_rule, THRESHOLD_RULES),
                                   ("select_metric", self.select_metric, METRIC_KEYS),
                                   ("curation", self.curation, CURATIONS)):
            if value not in table:
                raise ConfigError(f"unknown {name} {value!r}; valid: {sorted(table)}")
        if not 0.0 <= self.synthetic_ratio <= MAX_SYNTHETIC_RATIO:
            raise ConfigError(f"synthetic_ratio must be in [0, {MAX_SYNTHETIC_RATIO:g}] (synthetic / real minority "
                              f"train images), got {self.synthetic_ratio}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1, 3 or None (manifest's), got {self.channels}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8 pixels, got {self.image_size}")
        for name in ("batch_size", "num_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ConfigError(f"target_sensitivity must be in (0, 1], got {self.target_sensitivity}")
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"unknown input_norm {self.input_norm!r}; valid: {sorted(INPUT_NORMS)}")
        if not 0 <= self.freeze_epochs <= self.num_epochs:
            raise ConfigError(f"freeze_epochs must be in [0, num_epochs = {self.num_epochs}], got {self.freeze_epochs}")
        if self.freeze_epochs and self.weights is None:
            raise ConfigError(f"freeze_epochs {self.freeze_epochs} needs weights: freezing a randomly initialised "
                              f"backbone trains the head on random features; pass --weights PATH (a local state dict)")
        if self.num_folds == 1 or self.num_folds < 0:
            raise ConfigError(f"num_folds must be 0 (no CV) or >= 2, got {self.num_folds}")
        if self.curation != "none" and not self.synthetic_ratio:
            raise ConfigError(f"curation {self.curation!r} has no effect with synthetic_ratio 0 (it drops synthetic "
                              f"images before they are drawn); leave it at 'none' or add synthetic images")
        self._check_knobs()

    def _check_knobs(self) -> None:
        """The control knobs: each within its range (trainables.arms.CONTROL_KNOBS) and only where it acts."""
        for name, knob in CONTROL_KNOBS.items():
            value = getattr(self, name)
            if value == knob.default:
                continue
            if not knob.low <= value <= knob.high:
                raise ConfigError(f"{name} must be in [{knob.low:g}, {knob.high:g}] or {knob.default:g} (the default), "
                                  f"got {value}")
            if not knob_acts(name, self.imbalance_fix, self.augment):
                needs = "an augment policy" if knob.acts_with == "augment" else f"imbalance_fix={knob.acts_with!r}"
                raise ConfigError(f"{name} {value:g} has no effect with imbalance_fix={self.imbalance_fix!r}, "
                                  f"augment={self.augment!r}: it needs {needs} (or leave it at {knob.default:g})")
        if isinstance(self.epoch_size, bool) or not float(self.epoch_size).is_integer() or self.epoch_size < 0:
            raise ConfigError(f"epoch_size must be an integer >= 0 (images per epoch; 0 = the training set's size), "
                              f"got {self.epoch_size!r}")


def classifier_config(values: Mapping[str, Any] | None) -> ClassifierConfig:
    """Tune/YAML dict -> ClassifierConfig; unknown keys are an error listing the valid ones."""
    return config_from_dict(ClassifierConfig, values, what="classifier config")


SMOKE_OVERRIDES = {"model": "small_cnn", "image_size": 32, "batch_size": 32, "num_epochs": 4, "device": "cpu"}
