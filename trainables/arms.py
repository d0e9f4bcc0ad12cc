"""The arms of the experiment and the classifier settings behind them: one table, pure Python (no torch).

    from trainables.arms import CONTROL_ARMS, CLASSICAL_CONTROLS, ARM_LABELS, ARM_DESCRIPTIONS
    cfg = {**CONTROL_ARMS["oversample"], "lr": 1e-3}      # a control's classifier settings

Used by the classifier (config validation, data, loop), sweeps/space.py (the confirm phase's controls)
and analysis/ (picks and labels). It lives at trainables/arms.py, beside the classifier rather than in
it, because `import trainables.classifier.<anything>` runs trainables/classifier/__init__.py, which
imports the training code and torch; trainables/__init__.py imports nothing, so analysis/ can read
this table without torch (tests/test_house.py checks). Keep this module free of torch and numpy.

Arms the confirm phase runs: "baseline" (no synthetic images, no fix: ratio 0), "control" (the best control C:
the imbalance fix, augmentation and knobs the controls search picked on validation, ratio 0), "gan" (the GAN
config and ratio as searched) and "control+gan" (C's fix, augmentation and knobs + the rank-1 GAN config and
ratio: the incremental arm); "external" (C's settings + a synthetic set made elsewhere, --external NAME=DIR,
sweeps/external.py; rows name it in `external`). GAN_ARMS are the arms that train a GAN. The fixed per-fix arms "class_weight",
"oversample", "augment" are what sweeps ran before the controls were tuned; the confirm phase no longer runs
them, but their rows still load and read. CONTROL_ARMS holds the arms with fixed classifier settings and no
GAN, the baseline included (cfg.controls names the fixes the controls search may use); CLASSICAL_CONTROLS
the arms "the best control" is chosen from (the tuned "control", or in older results the per-fix arms).

CONTROL_KNOBS: each control's tunable setting (a ClassifierConfig field), its default (today's behaviour:
a config at the defaults trains exactly as before the knobs existed) and the range the controls search draws it from.
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

@dataclass(frozen=True)
class Knob:
    """A control's tunable setting: a ClassifierConfig field that only acts under one fix or augmentation."""
    default: float  # today's behaviour (a row without the knob had this value)
    low: float  # the range the controls search draws it from, and the classifier accepts
    high: float
    acts_with: str  # the imbalance fix it tunes, or "augment" (any augmentation policy)


CONTROL_KNOBS = MappingProxyType({
    # loss weights (n / (C * n_c)) ** power: 1 = inverse class frequency, 0.5 = its square root
    "class_weight_power": Knob(default=1.0, low=0.5, high=1.0, acts_with="class_weight"),
    # the minority class's share of each epoch's draws (other classes in their own proportions); 0 = balanced (1/C)
    "oversample_share": Knob(default=0.0, low=0.25, high=0.5, acts_with="oversample"),
    # scales the policy's rotation, brightness and contrast (flips unchanged; rotation capped at MAX_ROTATION_DEG)
    "augment_strength": Knob(default=1.0, low=0.5, high=1.5, acts_with="augment"),
})
MAX_ROTATION_DEG = 180.0  # a stronger augmentation never rotates past a half turn
KNOB_DEFAULTS = MappingProxyType({name: k.default for name, k in CONTROL_KNOBS.items()})


def knob_acts(name: str, imbalance_fix: str, augment: str) -> bool:
    """Whether knob `name` changes anything under this fix and augmentation."""
    on = CONTROL_KNOBS[name].acts_with
    return augment != "none" if on == "augment" else imbalance_fix == on


# arm -> the classifier settings that define it (the GAN arm gets its ratio from the search)
CONTROL_ARMS: dict[str, dict[str, object]] = {
    "baseline": {"synthetic_ratio": 0.0, "imbalance_fix": "none", "augment": "none"},
    "class_weight": {"synthetic_ratio": 0.0, "imbalance_fix": "class_weight", "augment": "none"},
    "oversample": {"synthetic_ratio": 0.0, "imbalance_fix": "oversample", "augment": "none"},
    "augment": {"synthetic_ratio": 0.0, "imbalance_fix": "none", "augment": "standard"},
}
MAX_SYNTHETIC_RATIO = 10.0  # synthetic / real minority train images; more than 10x is a known failure mode
GAN_ARM = "gan"
CONTROL_ARM = "control"  # the best control C, tuned on validation by the controls search
STACKED_ARM = "control+gan"  # C + the rank-1 GAN config and ratio
GAN_ARMS = (GAN_ARM, STACKED_ARM)  # the arms whose trials train (or reuse) a GAN
EXTERNAL_ARM = "external"  # a synthetic set made elsewhere (--external NAME=DIR; rows' `external` names it), on C
# the arms "the best control" is chosen from: the tuned control, or in older results the fixed per-fix arms
CLASSICAL_CONTROLS = (*(a for a in CONTROL_ARMS if a != "baseline"), CONTROL_ARM)
ARMS = (*CONTROL_ARMS, GAN_ARM, CONTROL_ARM, STACKED_ARM, EXTERNAL_ARM)
# short display label (legends, table cells) and a phrase for prose (report summaries), per arm
ARM_LABELS = {"baseline": "baseline (no aug)", "class_weight": "class weight", "oversample": "oversample",
              "augment": "standard aug", "gan": "GAN", "control": "best control",
              "control+gan": "best control + GAN", "external": "external set"}
ARM_DESCRIPTIONS = {"baseline": "no augmentation", "class_weight": "class-weighted loss",
                    "oversample": "random oversampling", "augment": "standard augmentation",
                    "gan": "GAN-made minority images",
                    "control": "the best classical control tuned on validation (its fix, augmentation and knobs)",
                    "control+gan": "the best classical control plus GAN-made minority images",
                    "external": "the best classical control plus minority images made by an external generator"}

assert set(ARM_LABELS) == set(ARM_DESCRIPTIONS) == set(ARMS)
assert all(s["imbalance_fix"] in IMBALANCE_FIXES and s["augment"] in AUGMENT_NAMES for s in CONTROL_ARMS.values())
assert all(k.acts_with in (*IMBALANCE_FIXES, "augment") for k in CONTROL_KNOBS.values())
