"""The arms of the experiment and the classifier settings behind them: one table, pure Python (no torch).

    from trainables.arms import CONTROL_ARMS, CLASSICAL_CONTROLS, ARM_LABELS, ARM_DESCRIPTIONS
    cfg = {**CONTROL_ARMS["oversample"], "lr": 1e-3}      # a control's classifier settings

Used by the classifier (config validation, data, loop), sweeps/space.py (the confirm phase's controls)
and analysis/ (picks and labels). It lives at trainables/arms.py, beside the classifier rather than in
it, because `import trainables.classifier.<anything>` runs trainables/classifier/__init__.py, which
imports the training code and torch; trainables/__init__.py imports nothing, so analysis/ can read
this table without torch (tests/test_house.py checks). Keep this module free of torch and numpy.

Arms: "baseline" (no synthetic images, no fix: ratio 0), the classical imbalance controls
"class_weight", "oversample", "augment", and "gan" (synthetic ratio and GAN from the search).
CONTROL_ARMS holds every arm the sweep runs without a GAN, the baseline included; CLASSICAL_CONTROLS
the ones among them that fix imbalance (what "the best control" is chosen from).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class ImbalanceFix:
    loss_weights: bool  # weight the cross-entropy by n / (C * n_class)
    resample: bool  # draw each epoch's indices with probability 1 / n_class (with replacement)


IMBALANCE_FIXES = MappingProxyType({
    "none": ImbalanceFix(loss_weights=False, resample=False),
    "class_weight": ImbalanceFix(loss_weights=True, resample=False),
    "oversample": ImbalanceFix(loss_weights=False, resample=True),
})
@dataclass(frozen=True)
class AugmentPolicy:
    """What an augmentation does to each training image (per modality: a chest X-ray must not be flipped)."""
    hflip: bool  # random left-right flip
    vflip: bool  # random up-down flip
    max_rotation_deg: float  # uniform rotation within +- this
    brightness: float  # +- this fraction of the intensity range
    contrast: float  # contrast scaled by 1 +- this

    def describe(self) -> str:
        flips = " and ".join(f for f, on in (("left-right", self.hflip), ("up-down", self.vflip)) if on)
        return (f"{'random ' + flips + ' flips, ' if flips else 'no flips, '}rotation within "
                f"+-{self.max_rotation_deg:g} degrees, brightness +-{self.brightness:.0%}, contrast +-{self.contrast:.0%}")


# augment policy name -> what it does (the torch side: trainables.classifier.data.AUGMENTS, same keys)
AUGMENT_POLICIES = MappingProxyType({
    "standard": AugmentPolicy(hflip=True, vflip=True, max_rotation_deg=15, brightness=0.2, contrast=0.2),
    # chest X-rays: anatomy is lateralised (heart on the left) and upright; small tilts and exposure changes only
    "xray": AugmentPolicy(hflip=False, vflip=False, max_rotation_deg=10, brightness=0.1, contrast=0.1),
    # dermoscopy: a lesion has no up or left; any orientation, some colour/exposure change
    "dermoscopy": AugmentPolicy(hflip=True, vflip=True, max_rotation_deg=180, brightness=0.2, contrast=0.2),
    # surface defects on a part: flips and small rotations, mild lighting change
    "industrial": AugmentPolicy(hflip=True, vflip=True, max_rotation_deg=15, brightness=0.1, contrast=0.1),
})
AUGMENT_NAMES = MappingProxyType({"none": "no augmentation",
                                  **{name: p.describe() for name, p in AUGMENT_POLICIES.items()}})

# arm -> the classifier settings that define it (the GAN arm gets its ratio from the search)
CONTROL_ARMS: dict[str, dict[str, object]] = {
    "baseline": {"synthetic_ratio": 0.0, "imbalance_fix": "none", "augment": "none"},
    "class_weight": {"synthetic_ratio": 0.0, "imbalance_fix": "class_weight", "augment": "none"},
    "oversample": {"synthetic_ratio": 0.0, "imbalance_fix": "oversample", "augment": "none"},
    "augment": {"synthetic_ratio": 0.0, "imbalance_fix": "none", "augment": "standard"},
}
MAX_SYNTHETIC_RATIO = 10.0  # synthetic / real minority train images; more than 10x is a known failure mode
CLASSICAL_CONTROLS = tuple(a for a in CONTROL_ARMS if a != "baseline")  # class_weight, oversample, augment
GAN_ARM = "gan"
ARMS = (*CONTROL_ARMS, GAN_ARM)
# short display label (legends, table cells) and a phrase for prose (report summaries), per arm
ARM_LABELS = {"baseline": "baseline (no aug)", "class_weight": "class weight", "oversample": "oversample",
              "augment": "standard aug", "gan": "GAN"}
ARM_DESCRIPTIONS = {"baseline": "no augmentation", "class_weight": "class-weighted loss",
                    "oversample": "random oversampling", "augment": "standard augmentation",
                    "gan": "GAN-made minority images"}

assert set(ARM_LABELS) == set(ARM_DESCRIPTIONS) == set(ARMS)
assert all(s["imbalance_fix"] in IMBALANCE_FIXES and s["augment"] in AUGMENT_NAMES for s in CONTROL_ARMS.values())
