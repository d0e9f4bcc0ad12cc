"""The results.parquet contract between sweeps/ (writer) and analysis/ (reader). Pure Python.

One row per trial and stage. The sweep writes rows as trials finish, so a partial file is valid.
Columns not listed here may appear (extra config values); readers must tolerate missing optional ones.
"""

from trainables.metric_names import METRIC_NAMES  # noqa: F401  the training side's names (one home, no torch)

# identity and outcome
ID_COLUMNS = [
    "sweep_name",   # str: the sweep's folder name
    "trial_id",     # str: Ray Tune trial id (unique per row together with stage)
    "stage",        # "gan" | "classifier"
    "arm",          # "baseline" (ratio 0) | "control" (the tuned best control C) | "gan" | "control+gan" (C + GAN);
                    # results from before the tuned controls: "class_weight" | "oversample" | "augment"
    "config_id",    # str: hash of every config value except the seed (groups seed repeats)
    "seed",         # int
    "status",       # "ok" | "failed" | "stopped" (early-stopped by the scheduler) | "gated" (its GAN failed the
                    # quality gate: no classifier was trained; results before the gate existed have none)
    "error",        # str: reason when failed/stopped/gated, else ""
]
# configuration
CONFIG_COLUMNS = [
    "gan_loss",         # "bce" | "hinge" | "wgan-gp" | "" (no GAN)
    "gan_lr_g", "gan_lr_d",  # float or NaN
    "diffaugment",      # bool: gan_augment == "diffaugment" (derived on load when a file has only one of the two)
    "gan_arch",         # "dcgan" | "resnet" | "" (no GAN); results before the field: dcgan
    "gan_augment",      # "none" | "diffaugment" | "ada" | "" (no GAN): how D's inputs were augmented
    "n_critic",         # int (wgan-gp only, else 0)
    "gan_key",          # str: hash of the GAN config; the same GAN serves every row sharing it
    "conditional",      # bool: one class-conditional GAN over all classes (else minority-only)
    "feature_matching", # float: weight of G's feature-matching term (0 = off)
    "perceptual",       # float: weight of G's VGG16 perceptual term (0 = off)
    "label_smoothing",  # float: a bce GAN's real-image target (1 = off, 0.9 = one-sided smoothing); results before it: 1
    "synthetic_mix",    # "single" | "mix_losses" (equal parts of one GAN per loss; gan_loss "mix")
    "external",         # str: the --external set an "external" arm's images came from ("" for every other arm)
    "synthetic_ratio",  # float: synthetic / real minority train images (0 = none)
    "clf_lr",           # float
    "imbalance_fix",    # "none" | "class_weight" | "oversample"
    "augment",          # "none" | an augmentation policy: "standard" | "xray" | "dermoscopy" | "industrial"
    "image_size", "channels",
]
VAL_COLUMNS = [f"val_{m}" for m in METRIC_NAMES]    # selection uses these only
TEST_COLUMNS = [f"test_{m}" for m in METRIC_NAMES]  # reported, never used to choose
GAN_COLUMNS = ["gan_fid", "gan_kid", "gan_kid_std", "gan_precision", "gan_recall",
               "gan_diversity_ratio", "gan_memorised_fraction", "gan_epochs"]
# GAN quality beside what real images score (sweeps/quality.py), all against the same real VALIDATION minority
# reference. *_matched: the synthetic set subsampled to the reference's size (mean of 50 draws), so recall is
# comparable with the real-vs-real value. gan_pixel_diversity_ratio: the diversity ratio on 32 px pixel thumbnails
# (a feature network trained on the classes draws one class's images together, so a generator repeating a few
# shapes can keep a feature-space ratio near real's; pixels see it). *_real_ref: the real TRAINING minority images
# in place of synthetic ones (precision/recall matched too; diversity ratio = their mean pairwise distance / the
# reference's: ~1 in pixels, lower in a domain space trained on them; memorised fraction = the audit's rate by
# chance). *_vs_real: the synthetic value / the real-ref value, what the quality gate reads. gan_checkpoint_epoch:
# the best-validation-KID checkpoint's epoch, the one sampled; gan_ada_p: ADA's final augmentation probability.
GAN_QUALITY_COLUMNS = ["gan_precision_matched", "gan_recall_matched", "gan_pixel_diversity_ratio",
                       "gan_fid_real_ref", "gan_kid_real_ref", "gan_precision_real_ref", "gan_recall_real_ref",
                       "gan_diversity_ratio_real_ref", "gan_pixel_diversity_ratio_real_ref",
                       "gan_memorised_fraction_real_ref", "gan_recall_vs_real", "gan_diversity_vs_real",
                       "gan_pixel_diversity_vs_real", "gan_checkpoint_epoch", "gan_ada_p",
                       # the leak audit (sweeps/quality.leak_audit): near-exact copies of real val / test images
                       "leak_val_copies", "leak_test_copies"]
GATE_COLUMNS = [
    "gan_gate",          # "pass" | "gated" (status gated, reason in error) | "off" (not judged: gan_gate_note says why)
    "gan_gate_note",     # str: what the gate could not judge, or why it was off
]
TIMING_COLUMNS = ["time_total_s", "time_gan_s", "time_classifier_s", "finished_at"]
PATH_COLUMNS = ["gan_run_dir", "clf_run_dir", "synthetic_dir"]
# how the row enters the verdict (sweeps/augment_ratio.py); empty in results written before they existed
DESIGN_COLUMNS = [
    "sweep_phase",       # "search" | "controls" (exploratory: chosen on, not in the headline) | "confirm" (fresh seeds)
    "setup_id",          # str: hash of the config without seed and classifier LR (an arm's setup across its LR grid)
    "confirm_rank",      # int: GAN configs of the confirm phase, 1 = the search's best on val (the headline's GAN)
    "gan_kid_reference", # "val" | "train": the real images the GAN's KID/FID were measured against
    "n_val_positive", "n_test_positive",  # int: real minority (positive) images in val / test
    "fold",              # int: the CV fold of a --folds K confirm trial (0..K-1); empty without folds
]
# the controls' knobs and the step budget (trainables.arms.CONTROL_KNOBS, ClassifierConfig); every classifier row
# written since the tuned controls carries them; empty in older results (those ran at the knobs' defaults)
CONTROL_COLUMNS = [
    "class_weight_power",  # float: class_weight loss weights (n / (C n_c)) ** power (1 = inverse frequency)
    "oversample_share",    # float: oversample: the minority's share of each epoch's draws (0 = each class 1/C)
    "augment_strength",    # float: scales the augmentation policy's rotation, brightness and contrast (1 = as is)
    "clf_steps",           # int: optimizer steps the classifier took (equal across arms: the budget in steps)
    "clf_epoch_size",      # int: images per classifier epoch (the real training images of the trial's split)
]

REQUIRED_COLUMNS = ID_COLUMNS
# absent by design (no --folds) or written only since a later version: filled as empty without a note
OPTIONAL_COLUMNS = ["fold", "gan_arch", "gan_augment", "label_smoothing", "external", *CONTROL_COLUMNS] + GAN_QUALITY_COLUMNS + GATE_COLUMNS
ALL_COLUMNS = (ID_COLUMNS + CONFIG_COLUMNS + VAL_COLUMNS + TEST_COLUMNS + GAN_COLUMNS + GAN_QUALITY_COLUMNS
               + GATE_COLUMNS + TIMING_COLUMNS + PATH_COLUMNS + DESIGN_COLUMNS + CONTROL_COLUMNS)
