"""SweepConfig: every setting of a sweep. CLI flags and YAML files (`--config FILE.yaml`) set the same fields."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

from data_prep.config import config_from_dict, read_mapping_file
from data_prep.errors import ConfigError

GAN_LOSS_CHOICES = ("bce", "hinge", "wgan-gp")  # every loss; valid names are trainables.gan.losses.GAN_LOSSES
DIFFAUGMENT_POLICY = "color,translation,cutout"  # what gan_augment "diffaugment" turns on
# gan_augment -> the GanConfig values it sets: how D's inputs (real and fake alike) are augmented
GAN_AUGMENTS = {"none": {"diffaugment": "", "ada": False},
                "diffaugment": {"diffaugment": DIFFAUGMENT_POLICY, "ada": False},
                "ada": {"diffaugment": "", "ada": True}}
# gan_arch -> Adam betas of its G and D: DCGAN's (Radford et al.) and SNGAN's (Miyato et al.: beta1 0, beta2 0.9)
ARCH_BETAS = {"dcgan": (0.5, 0.999), "resnet": (0.0, 0.9)}


EXTERNAL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")


def parse_external(entries) -> dict[str, str]:
    """("NAME=DIR", ...) -> {name: dir}, in the order given. ConfigError naming a malformed or repeated entry."""
    out: dict[str, str] = {}
    for e in entries or ():
        name, sep, d = str(e).partition("=")
        name, d = name.strip(), d.strip()
        if not sep or not d:
            raise ConfigError(f"external {e!r}: expected NAME=DIR (e.g. --external medigan=/data/medigan_out)")
        if not EXTERNAL_NAME.match(name):
            raise ConfigError(f"external {e!r}: the name {name!r} must start with a letter and hold only letters, "
                              f"digits, '_', '-' or '.' (at most 40): it names the arm in the results and report")
        if name in out:
            raise ConfigError(f"external set name {name!r} given twice ({out[name]!r} and {d!r}); names must differ")
        out[name] = d
    return out



@dataclass(frozen=True)
class SweepConfig:
    # ---- data
    data: str | None = "demo"  # "demo", a class-folder dir, a .csv (path,label[,group]) or an .npz; None: must be given
    manifest: str | None = None  # an existing manifest.parquet to use instead of preparing `data`
    relabel: str | None = None  # SRC=TASK,... class merge (e.g. five defect types -> defect)
    positive: str | None = None  # positive (minority) task class; default least frequent in train
    use_given_split: bool = False  # keep the source's split (npz keys, train/val/test folders, CSV split column)
    resplit: bool = False  # split folders / CSV split column: pool their images and split anew
    move_crossing_groups: bool = False  # given split: a patient in several splits moves to the most held-out one (else: error)
    split_seed: int = 0  # seed of the data split (fixed for the whole sweep)
    image_size: int = 32  # px side the GAN and classifier train at
    channels: int = 3  # 1 or 3
    demo_counts: tuple[int, int] = (1000, 100)  # demo: majority, minority images
    max_images_per_class: int = 0  # keep at most this many real images per class and split (seeded); 0 = all
    # ---- where things go
    name: str = "augment_ratio"  # sweep name: results land in <storage_path>/<name>/
    storage_path: str = "results"  # local folder or s3://bucket/prefix (Tune storage)
    work_dir: str | None = None  # the driver's folder (data split, report); default <storage_path>/<name> when local
    s3_endpoint: str | None = None  # S3-compatible endpoint of an s3:// storage_path (MinIO...); default AWS_ENDPOINT_URL
    address: str | None = None  # "auto" joins a running cluster; None starts a local Ray
    resume: bool = False  # continue an interrupted sweep of the same name (finished trials are not re-run)
    lease_ttl_s: float = 30.0  # remote storage: a GAN lease or driver claim not renewed this long is taken for dead
    lease_heartbeat_s: float = 5.0  # remote storage: renewal period of GAN leases and of the driver's claim
    scratch_max_age_h: float = 24.0  # remote storage: node scratch (other sweeps', GAN runs) unused this long is removed
    # ---- search
    # The GAN defaults are the demo's, chosen by measurement (docs/sweep.md "GAN quality and the gate"): on its
    # 70 minority images every hinge DCGAN below (DiffAugment or ADA, LRs 1e-4..4e-4, 1,200 steps) passed the quality
    # gate on 5 of 5 seeds (split seeds 0 and 1); bce + ADA did on 2 of 5, 150 epochs of batch 32 on 2 of 5. The rest
    # is a flag away.
    num_samples: int = 8  # Optuna trials in the search phase
    gan_losses: tuple[str, ...] = ("hinge",)  # GAN losses searched: bce | hinge | wgan-gp
    gan_lrs: tuple[float, ...] = (1e-4, 2e-4, 4e-4)  # choices for each of G's and D's learning rate
    n_critic_choices: tuple[int, ...] = (2, 5)  # wgan-gp only: D steps per G step
    gan_archs: tuple[str, ...] = ("dcgan",)  # GAN architectures searched: dcgan | resnet (residual, SN D)
    gan_augments: tuple[str, ...] = ("ada", "diffaugment")  # D's input augmentation searched: none|diffaugment|ada
    synthetic_ratios: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)  # synthetic / real minority train images
    clf_lr_range: tuple[float, float] = (3e-4, 3e-3)  # search: classifier learning rate, log-uniform
    early_stop: bool = True  # ASHA stops weak GAN trials on KID (needs gan_eval_every > 0)
    conditional_choices: tuple[bool, ...] = (False,)  # False: minority-class GAN | True: class-conditional
    feature_matching_choices: tuple[float, ...] = (0.0,)  # weights of G's feature-matching term searched (0 = off)
    label_smoothing_choices: tuple[float, ...] = (1.0,)  # bce GANs: real-image targets searched (1 = off, 0.9 = one-sided)
    perceptual_choices: tuple[float, ...] = (0.0, 1.0)  # VGG16 perceptual term weights; searched only with vgg_weights
    vgg_weights: str | None = None  # local VGG16 state_dict: enables the perceptual term (never downloaded)
    mix_choices: tuple[str, ...] = ("single",)  # single | mix_losses (equal parts of one GAN per loss)
    # ---- curation of synthetic images (issue 24; sweeps/curation.py): a classifier setting, one GAN serves every choice
    curation_choices: tuple[str, ...] = ("none",)  # searched: none | copies | copies+off_class (a dimension if > 1)
    # ---- controls and spread
    controls: tuple[str, ...] = ("baseline", "class_weight", "oversample", "augment")  # baseline arm + fixes to tune
    augment_policy: str = "standard"  # the controls' augmentation: standard | xray | dermoscopy | industrial
    num_seeds: int = 5  # confirm seeds, shared by every arm (>= 3 for any test; 5 lets the sign-flip check reach 0.0625)
    top_k: int = 1  # search GAN configs confirmed; rank 1 (best on val) is the headline's, others exploratory
    clf_lr_grid: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # confirm: every arm tries these LRs, picks one on val
    folds: int = 0  # confirm: K >= 2 = K-fold CV of real train+val (test fixed), GAN retrained per fold; 0 = one split
    # the exchange rate (sweeps/exchange.py): what the synthetic set is worth in real minority images
    exchange_rate: bool = False  # after confirm: C and the headline arm on real-minority subsets (GAN retrained per subset)
    exchange_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)  # exchange rate: minority train shares kept, (0, 1]; 1 added
    # ---- training budgets
    gan_epochs: int = 300  # GAN epochs per GAN config (the demo's 70 minority images: 4 steps an epoch, 1,200 in all)
    gan_batch_size: int = 16  # GAN images per step
    gan_width: int = 32  # ngf = ndf of the DCGAN
    gan_eval_every: int = 50  # epochs between KID evaluations (ASHA's signal, the best checkpoint); 0 = off
    gan_eval_samples: int = 500  # fakes each KID evaluation draws (the best-KID checkpoint is chosen on them)
    gan_attention: bool = False  # resnet: one self-attention block in G and D at half the image side (<= 32 px)
    quality_domain_epochs: int = 8  # epochs of the domain feature network FID/KID use (trained once per sweep)
    inception_weights: str | None = None  # local InceptionV3 file: FID/KID in Inception space (comparable with published values; slow on CPU); None = domain features
    clf_model: str = "small_cnn"  # "small_cnn" | "resnet18" | "resnet50"
    clf_epochs: int = 12  # classifier epochs
    clf_batch_size: int = 64  # classifier images per step
    clf_weights: str | None = None  # local torchvision state dict to start the classifier from (never downloaded)
    clf_freeze_epochs: int = 0  # with clf_weights: the first N classifier epochs train only the head
    clf_input_norm: str = "auto"  # "auto" (ImageNet mean/std with clf_weights) | "imagenet" | "none"
    # ---- quality gate (a gated GAN never feeds a classifier: its trial is a row with status "gated" and the reason)
    gate_min_recall_share: float = 0.5  # gate below this x the real-vs-real recall (both at val's size); 0 = off
    gate_min_diversity_share: float = 0.6  # gate below this x the real-vs-real diversity (features and pixels); 0 = off
    max_kid: float | None = None  # gate a validation KID above this (data set's own scale); None = off
    max_fid: float | None = None  # gate a validation FID above this (not comparable with published FIDs); None = off
    guard_seeds: int = 1  # a search pick's GAN must also pass the gate on this many more GAN seeds; 0 = off
    # ---- resources
    cpus_per_trial: float = 1.0  # CPUs reserved by each trial (torch threads follow it); per worker if workers > 1
    gpus_per_trial: float = 0.0  # GPU fraction per trial, e.g. 0.25 packs 4 eager GAN trials on one GPU; per worker
    workers_per_trial: int = 1  # > 1: the trial runs DDP through a TorchTrainer with this many workers
    max_concurrent: int = 0  # trials at once; 0 = as many as resources allow
    max_failures: int = 1  # retries of a trial that errors (worker/node loss); resumes from its checkpoints
    # ---- external generators
    external: tuple[str, ...] = ()  # NAME=DIR: a synthetic set made elsewhere (a folder of images or DIR/<class>/ folders), judged as an arm like our GAN; repeatable (YAML external: {name: dir})
    allow_leaky: tuple[str, ...] = ()  # NAME of an external set to judge even though the leak audit found copies of real val/test images in it; repeatable
    train_gan: bool = True  # False: no GAN search and no GAN arms; the external sets alone are judged (the first in the GAN's place)
    # ---- time
    time_budget_s: float = 0.0  # the whole sweep, seconds: trials running then are stopped, none start after (0 = none)
    trial_time_budget_s: float = 0.0  # one trial, seconds: stopped at its first report past this (0 = none)
    smoke_test: bool = False  # tiny, CPU, fast: checks the whole pipeline in a few minutes

    REPEATABLE: ClassVar[tuple[str, ...]] = ("external", "allow_leaky")  # flags given once per value, not A,B

    def __post_init__(self) -> None:
        if isinstance(self.external, Mapping):  # YAML / the Python API: {name: dir}
            object.__setattr__(self, "external", tuple(f"{k}={v}" for k, v in self.external.items()))
        for name in self.REPEATABLE:
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))
        self._check_external()
        if not self.data and not self.manifest:
            raise ConfigError("no data: this configuration names no data set; pass --data PATH (class folders, a "
                              ".csv or an .npz) or --manifest FILE")
        if self.max_images_per_class < 0 or self.quality_domain_epochs < 1:
            raise ConfigError("max_images_per_class must be >= 0 and quality_domain_epochs >= 1")
        self._check_gan_settings()
        self._check_curation()
        from trainables.arms import MAX_SYNTHETIC_RATIO

        if any(not 0 < r <= MAX_SYNTHETIC_RATIO for r in self.synthetic_ratios):
            raise ConfigError(f"synthetic_ratios must be in (0, {MAX_SYNTHETIC_RATIO:g}] (0 is the baseline control), "
                              f"got {list(self.synthetic_ratios)}")
        from trainables.arms import AUGMENT_POLICIES, CONTROL_ARMS

        if self.augment_policy not in AUGMENT_POLICIES:
            raise ConfigError(f"unknown augment_policy {self.augment_policy!r}; valid: {sorted(AUGMENT_POLICIES)}")

        bad = [c for c in self.controls if c not in CONTROL_ARMS]
        if bad:
            raise ConfigError(f"unknown control(s) {bad}; valid: {sorted(CONTROL_ARMS)}")
        for name in ("num_samples", "num_seeds", "gan_epochs", "clf_epochs", "workers_per_trial"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lease_heartbeat_s < self.lease_ttl_s or self.scratch_max_age_h < 0:
            raise ConfigError(f"need 0 < lease_heartbeat_s < lease_ttl_s and scratch_max_age_h >= 0, got "
                              f"{self.lease_heartbeat_s}, {self.lease_ttl_s}, {self.scratch_max_age_h}")
        if self.time_budget_s < 0 or self.trial_time_budget_s < 0:
            raise ConfigError("time_budget_s and trial_time_budget_s must be >= 0 (0 = no limit)")
        if self.top_k < 0 or self.max_concurrent < 0:
            raise ConfigError("top_k and max_concurrent must be >= 0")
        if self.folds < 0 or self.folds == 1:
            raise ConfigError(f"folds must be 0 (the fixed split) or >= 2 (K-fold CV in the confirm phase), "
                              f"got {self.folds}")
        self._check_resources()
        self._check_exchange()
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("clf_weights", "vgg_weights", "inception_weights"):
            path = getattr(self, name)
            if path and "://" not in path and not Path(path).expanduser().is_file():
                raise ConfigError(f"{name}: no such file {path!r}; give a local state-dict file (nothing is "
                                  f"downloaded: save one on a machine with internet, see README 'Your own data')")
        if not 0 <= self.clf_freeze_epochs <= self.clf_epochs:
            raise ConfigError(f"clf_freeze_epochs must be in [0, clf_epochs = {self.clf_epochs}], "
                              f"got {self.clf_freeze_epochs}")
        if self.clf_freeze_epochs and not self.clf_weights:
            raise ConfigError("clf_freeze_epochs > 0 freezes a pretrained backbone: give clf_weights too")
        if not self.clf_lr_grid or any(not lr > 0 for lr in self.clf_lr_grid):
            raise ConfigError(f"clf_lr_grid must list learning rates > 0, got {list(self.clf_lr_grid)}")
        lo, hi = self.clf_lr_range
        if not 0 < lo <= hi:
            raise ConfigError(f"clf_lr_range must be (low, high) with 0 < low <= high, got {self.clf_lr_range}")

    def _check_external(self) -> None:
        names = parse_external(self.external)  # ConfigError naming a malformed or repeated entry
        unknown = [n for n in self.allow_leaky if n not in names]
        if unknown:
            raise ConfigError(f"allow_leaky names {unknown}, which are not external sets (given: {sorted(names)}); "
                              f"name each as in --external NAME=DIR")
        if not self.train_gan and not names:
            raise ConfigError("train_gan is false but no --external NAME=DIR set is given: there is nothing to judge")

    def _check_gan_settings(self) -> None:
        from trainables.gan.losses import GAN_LOSSES  # the loss table itself (imports torch: driver only)
        from trainables.gan.networks import GAN_ARCHS

        bad = [x for x in self.mix_choices if x not in ("single", "mix_losses")]
        if bad or not self.mix_choices:
            raise ConfigError(f"mix_choices {list(self.mix_choices)}: each must be 'single' or 'mix_losses'")
        if not self.label_smoothing_choices or not all(0 < x <= 1 for x in self.label_smoothing_choices):
            raise ConfigError(f"label_smoothing_choices are real-image targets in (0, 1] (1 = off), got "
                              f"{list(self.label_smoothing_choices)}")
        if any(w < 0 for w in (*self.feature_matching_choices, *self.perceptual_choices)):
            raise ConfigError("feature_matching_choices and perceptual_choices must be >= 0")
        bad = [x for x in self.gan_losses if x not in GAN_LOSSES]
        if bad or not self.gan_losses:
            raise ConfigError(f"gan_losses {list(self.gan_losses)}: each must be one of {sorted(GAN_LOSSES)}")

        for name, table in (("gan_archs", GAN_ARCHS), ("gan_augments", GAN_AUGMENTS)):
            bad = [x for x in getattr(self, name) if x not in table]
            if bad or not getattr(self, name):
                raise ConfigError(f"{name} {list(getattr(self, name))}: each must be one of {sorted(table)}")
        for name in ("gate_min_recall_share", "gate_min_diversity_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} is a share of the real-vs-real value in [0, 1] (0 = off), "
                                  f"got {getattr(self, name)}")
        if self.guard_seeds < 0 or self.gan_eval_samples < 8:
            raise ConfigError(f"guard_seeds must be >= 0 and gan_eval_samples >= 8 (k-NN radii need a few images), "
                              f"got {self.guard_seeds}, {self.gan_eval_samples}")

    def _check_exchange(self) -> None:
        """exchange_fractions in (0, 1], 1.0 added if missing (its rows are the confirm phase's), sorted."""
        bad = [f for f in self.exchange_fractions if not 0 < f <= 1]
        if bad or not self.exchange_fractions:
            raise ConfigError(f"exchange_fractions are shares of the real minority training images in (0, 1], got "
                              f"{list(self.exchange_fractions)} (e.g. --exchange-fractions 0.25,0.5,1)")
        object.__setattr__(self, "exchange_fractions", tuple(sorted({float(f) for f in self.exchange_fractions}
                                                                     | {1.0})))
        if self.exchange_rate and self.folds:
            raise ConfigError(f"exchange_rate with folds = {self.folds}: the exchange phase subsamples the fixed "
                              "split's training images; run it without --folds")

    def _check_curation(self) -> None:
        from trainables.classifier.config import CURATIONS  # curation of synthetic images: sweeps/curation.py

        if not self.curation_choices or any(c not in CURATIONS for c in self.curation_choices):
            raise ConfigError(f"curation_choices {list(self.curation_choices)}: each must be one of "
                              f"{sorted(CURATIONS)}")

    def _check_resources(self) -> None:
        if self.gpus_per_trial < 0 or self.cpus_per_trial <= 0:
            raise ConfigError(f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got "
                              f"{self.cpus_per_trial}, {self.gpus_per_trial}")
        if self.workers_per_trial > 1 and 0 < self.gpus_per_trial < 1:
            raise ConfigError(f"gpus_per_trial={self.gpus_per_trial} with workers_per_trial={self.workers_per_trial}: "
                              "DDP workers need a whole GPU each (NCCL refuses two ranks on one GPU); use "
                              "gpus_per_trial=1, or workers_per_trial=1 to pack fractional single-GPU trials")

    def with_absolute_paths(self) -> "SweepConfig":
        """Local file settings made absolute (trials run in their own working directories)."""
        fix = {k: str(Path(v).expanduser().resolve()) for k in ("clf_weights", "vgg_weights", "inception_weights",
                                                                  "manifest")
               if (v := getattr(self, k)) and "://" not in v}
        if self.external:  # each set's folder too
            fix["external"] = tuple(f"{n}={Path(d).expanduser().resolve()}" for n, d in
                                    parse_external(self.external).items())
        return replace(self, **fix) if fix else self

    @property
    def sweep_dir(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    @property
    def local_work_dir(self) -> Path:
        if self.work_dir:
            return Path(self.work_dir).expanduser().resolve()
        if "://" in self.storage_path:
            return Path("~/ganaug_work").expanduser().resolve() / self.name
        return Path(self.sweep_dir).expanduser().resolve()


# What --smoke-test sets, whatever the YAML or the defaults say (flags given with it still win): tiny trials,
# budgets and models, real data cut to a few images per class, CPU only; still every stage, 3 seeds (the
# verdict's minimum). It keeps what defines the setup: data, image size, channels, classes. The quality gate's
# shares are off: a 2-epoch GAN of width 8 is meant to be poor, and the smoke test must reach every stage.
SMOKE = dict(demo_counts=(100, 24), max_images_per_class=64, mix_choices=("single",), num_samples=2, gan_epochs=2,
             gan_batch_size=16, gan_width=8, gan_eval_every=1, gan_eval_samples=64, gate_min_recall_share=0.0,
             gate_min_diversity_share=0.0, quality_domain_epochs=1, clf_epochs=2,
             clf_batch_size=32, top_k=1, controls=("baseline", "class_weight", "oversample"), num_seeds=3,
             clf_lr_grid=(1e-3, 3e-3), cpus_per_trial=1.0, gpus_per_trial=0.0, workers_per_trial=1, max_concurrent=0)
# The smoke test checks the pipeline, not the model: a ResNet at 224 px takes ~4.6 s per 32-image step on one
# CPU thread (a 2-epoch classifier trial ~45 s), which no 90 s smoke run can hold. Weights fix the architecture.
SMOKE_MODEL = "small_cnn"


def smoke_images_per_class(image_size: int) -> int:
    """Real images per class and split a smoke run keeps: 64 at 64 px and below, fewer for larger images so the
    pixels to train on stay about the same (16 at 128 px and above; 16 still gives the >= 10 minority
    validation images a quality reference needs)."""
    return int(max(16, min(64, round(64 * (64 / image_size) ** 2))))


def smoke(cfg: SweepConfig, given: Mapping[str, Any]) -> tuple[SweepConfig, list[str]]:
    """cfg shrunk for --smoke-test, keeping the fields in `given` (flags on the command line); -> (cfg, changes)."""
    new = dict(SMOKE)
    new["synthetic_ratios"] = tuple(sorted(cfg.synthetic_ratios)[:2])
    new["max_images_per_class"] = smoke_images_per_class(cfg.image_size)
    if not cfg.clf_weights:  # pretrained weights fit one architecture only: keep it
        new["clf_model"] = SMOKE_MODEL
    new["clf_freeze_epochs"] = min(cfg.clf_freeze_epochs, 1)
    new["name"] = f"{cfg.name}_smoke" if cfg.name != SweepConfig.name else "smoke_test"
    new = {k: v for k, v in new.items() if k not in given}
    changes = [f"{k} {getattr(cfg, k)!r} -> {v!r}" for k, v in new.items() if getattr(cfg, k) != v]
    return replace(cfg, **new), changes


def load_yaml(path: str | Path) -> dict[str, Any]:
    values = read_mapping_file(path, "sweep config")
    return {k.replace("-", "_"): v for k, v in values.items()}


def resolve(yaml_values: Mapping[str, Any], cli_values: Mapping[str, Any], say=print) -> SweepConfig:
    """YAML first, then flags the user actually gave; --smoke-test then shrinks everything but those flags
    (and says what it changed through `say`)."""
    values = {**yaml_values, **cli_values}
    cfg = config_from_dict(SweepConfig, values, what="sweep setting")
    if cfg.smoke_test:
        cfg, changes = smoke(cfg, cli_values)
        if changes and say:
            say("smoke test shrank: " + "; ".join(changes))
    return cfg
