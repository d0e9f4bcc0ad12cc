"""The Tune function trainable of the sweep: one trial = (GAN, if its arm uses one) -> synthetic set -> classifier.

No wasted GAN training: a GAN is identified by `space.gan_key` (loss, lrs, DiffAugment, n_critic, seed)
and lives in <storage>/<name>/gans/<key>/ (remote storage: gans/<key>/a-<attempt>/, one folder per lease grant,
see sweeps.gan_runs). The first trial that needs it trains it under the key's lease
(sweeps.leases: a file lock on local storage, a cluster-wide Ray actor on remote storage); every later trial
(any ratio, any classifier LR, any node) finds its `done.json` and reuses the generator and its synthetic
set. A trial stopped by the scheduler or killed mid-GAN leaves checkpoints (published to remote storage as
they are written), so the next trial asking for that GAN resumes it instead of starting over. The synthetic
set is sampled once per GAN, large enough for the largest ratio in the sweep; each classifier draws its own
seeded subset. On remote storage a trial first fetches the data bundle into its node's scratch
(sweeps.artifacts.localize) and never opens a path on the driver's disk.

Reported to Tune: per GAN epoch (phase "gan": gan_epoch, losses, KID every gan_eval_every epochs, which
ASHA uses to stop weak GANs), per classifier epoch (phase "classifier"), and a final row (phase
"final") with every val_*/test_* metric, GAN quality metrics, timings and artifact paths.

The KID that prunes (ASHA) and the quality that selects are measured against REAL VALIDATION minority images,
never the training images the GAN fits (that would reward memorisation); the memorisation audit compares
with the training images. Validation sets with fewer than MIN_VAL_REFERENCE_IMAGES minority images fall back
to the training images, and the sweep then turns ASHA off (see reference_split).

A "mix" trial (one GAN per loss, equal parts) is exempt from ASHA: its members report their epochs as
gan_epoch_cumulative and member_gan_kid, not under the scheduler's keys, since ASHA would otherwise judge the
mix by its first member alone. Its quality metrics are those of the mixed synthetic set.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from trainables.metric_names import METRIC_NAMES
from data_prep.shards import decode_on_this_node
from sweeps.config import SweepConfig
from sweeps.curation import trial_curation
from sweeps.gans import gan_augment_of, gan_config  # noqa: F401  (gan_config: its old home)
from sweeps.quality import audit_gan, gan_leak_audit, mix_quality, quality_evaluator, quality_gate
from sweeps.space import MIX, ROW_KEYS, TRIAL_KEYS, config_id, gan_key, knob_values, mix_members, setup_id
from trainables.arms import EXTERNAL_ARM, GAN_ARMS

METRICS = METRIC_NAMES
# Fewest real minority validation images a quality reference may have: KID from fewer is mostly noise, and
# precision/recall need more than k = 3 neighbours. Below it the reference is the training images (stated).
MIN_VAL_REFERENCE_IMAGES = 10


def reference_split(n_val_positive: int) -> str:
    """The split the GAN quality reference is built from: "val", or "train" when val is too small."""
    return "val" if n_val_positive >= MIN_VAL_REFERENCE_IMAGES else "train"


@dataclass(frozen=True)
class TrialData:
    """What every trial knows of the sweep's data and places, fixed by the driver before any trial starts
    (absolute paths: a trial's working directory is its own)."""
    manifest: str  # the manifest.parquet every trial reads
    work_dir: str  # GAN cache, classifier runs, quality cache
    n_val_positive: int = 0  # real minority images in val (decides gan_reference_split)
    n_test_positive: int = 0  # real minority images in test (the report states it)
    n_train_real: int = 0  # real training images, all classes: every classifier's epoch_size (equal steps); 0 = unknown
    n_train_positive: int = 0  # real minority training images (an exchange-rate subset keeps fewer; rows record it)
    gan_reference_split: str = "val"  # real images the GAN's KID/FID are measured against (reference_split)
    storage: str = ""  # the sweep's folder in remote storage (s3://...): manifests are keys in it, fetched by
    # sweeps.artifacts.localize into each node's scratch; "" = local paths, as given
    s3_endpoint: str | None = None  # S3-compatible endpoint of `storage` (None: AWS, or AWS_ENDPOINT_URL)
    run_id: str = ""  # the sweep's run id (sweeps.claim): names each node's scratch folder with the store's digest
    folds: tuple["TrialData", ...] = ()  # --folds K: fold f's data (its manifest: fold f's train/val, same test)


def fold_data(config: Mapping[str, Any], data: TrialData) -> TrialData:
    """The data a trial trains on: its CV fold's (GAN, classifier and quality reference all use the fold's
    manifest, so the fold's GAN never sees the fold's validation images) or, without a fold, the sweep's split."""
    fold = config.get("fold")
    if fold is None or (isinstance(fold, float) and math.isnan(fold)):
        return data
    if not 0 <= int(fold) < len(data.folds):
        raise ValueError(f"trial config asks for fold {fold} but the driver wrote {len(data.folds)} fold "
                         f"manifest(s) (--folds); a resumed sweep must keep its --folds")
    return data.folds[int(fold)]


def classifier_config(config: Mapping[str, Any], sweep: SweepConfig, device: str, epoch_size: int = 0):
    """The ClassifierConfig of a trial: its arm's values (fix, augmentation, knobs) + the sweep's classifier settings.
    epoch_size: images per epoch, the real training images for every arm, so all take the same optimizer steps
    however many synthetic images a GAN arm adds (0: the training set's size)."""
    from trainables.classifier.config import classifier_config as make

    return make({"model": sweep.clf_model, "image_size": sweep.image_size, "channels": sweep.channels,
                 "batch_size": sweep.clf_batch_size, "num_epochs": sweep.clf_epochs, "lr": float(config["clf_lr"]),
                 "synthetic_ratio": float(config["synthetic_ratio"]), "imbalance_fix": config["imbalance_fix"],
                 "curation": trial_curation(config),  # sweeps/curation.py: "none" for arms without synthetic images
                 # an arm that augments uses the sweep's policy for its modality (an X-ray is never flipped)
                 "augment": "none" if config["augment"] == "none" else sweep.augment_policy,
                 "seed": int(config["seed"]), "device": device,
                 "weights": sweep.clf_weights, "freeze_epochs": sweep.clf_freeze_epochs,
                 "input_norm": sweep.clf_input_norm, "epoch_size": int(epoch_size), **knob_values(config)})


def ddp_worker_resources(sweep: SweepConfig) -> dict[str, float]:
    """Resources of each DDP worker of a --workers-per-trial N > 1 trial: --cpus-per-trial and --gpus-per-trial
    are per worker there (the trial's own process only coordinates, on 0.25 CPU)."""
    res = {"CPU": float(sweep.cpus_per_trial)}
    if sweep.gpus_per_trial > 0:
        res["GPU"] = float(sweep.gpus_per_trial)
    return res


def gan_progress(m: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A GAN epoch's metrics as the trial reports them to Tune (ASHA reads gan_epoch and gan_kid)."""
    row = {f"gan_{k}" if not k.startswith("gan_") else k: v for k, v in m.items()}
    return {**row, "gan_epoch": m.get("epoch"), "phase": "gan", "gan_key": key}


def classifier_progress(m: Mapping[str, Any]) -> dict[str, Any] | None:
    """A classifier epoch's metrics as the trial reports them to Tune; None for a run's closing summary."""
    if m.get("final"):
        return None
    return {**{f"clf_{k}" if not k.startswith(("val_", "clf_")) else k: v for k, v in m.items()},
            "phase": "classifier"}


def tune_forwarder(transform) -> list:
    """Ray Train callbacks for a TorchTrainer run inside this Tune trial: each rank-0 report goes to the trial's
    Tune results through `transform` (the keys the single-process path reports), so ASHA, the progress table and
    the dashboard see DDP trials' epochs too. Ray's TuneReportCallback, with our keys. [] outside Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    if not _in_tune_session():
        return []

    class _Forward(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            row = transform(dict(metrics[0]))
            if row:
                self._training_actor_item_queue.put(row)

    return [_Forward()]


def _report(metrics: dict) -> None:
    from ray import tune

    tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None})


def ensure_gan(config: Mapping[str, Any], sweep: SweepConfig, data: TrialData, device: str,
               report=_report, holder: str = "") -> dict[str, Any]:
    """Train (or reuse) the GAN of this config, sample its synthetic set once, audit it once: one training per
    GAN key across the cluster, under a fenced lease; completion = gans/<key>/done.json (sweeps.gan_runs).

    -> {"gan_key", "gan_run_dir", "synthetic_dir", "status", "reason", "gan_trained_here", gan_* metrics}
    """
    from sweeps.artifacts import artifact_uri, store_of
    from sweeps.gan_runs import ensure_trained

    key = gan_key(config, sweep)
    store = store_of(data)

    def train(run_dir: Path, lease) -> dict[str, Any]:
        return _train_gan(config, sweep, data, device, report, run_dir, key, store, lease)

    info, run, trained = ensure_trained(store, key, holder or key, train, sweep.lease_heartbeat_s)
    run_dir = store.local(run)
    info = {**info, "gan_run_dir": artifact_uri(data, run_dir)}
    if info.get("status") == "ok":
        info["synthetic_dir"] = str(run_dir / "synthetic")
    return {**info, "gan_trained_here": trained}


def _train_gan(config: Mapping[str, Any], sweep: SweepConfig, data: TrialData, device: str, report,
               run_dir: Path, key: str, store, lease=None) -> dict[str, Any]:
    """ensure_gan's training, sampling and audit in run_dir (this node's scratch with remote storage; its
    checkpoints are published as they are written) -> the done.json record."""
    from data_prep import read_manifest
    from sweeps.artifacts import CheckpointSync
    from sweeps.storage import ensure_free
    from trainables.gan.run import run_gan_local
    from trainables.gan.run_files import RunFiles, load_checkpoint
    from trainables.gan.sample import write_samples

    t0 = time.perf_counter()
    manifest = read_manifest(data.manifest)
    gcfg = gan_config(config, sweep, device)
    evaluator = quality_evaluator(manifest, sweep, data, device) if sweep.gan_eval_every else None
    if sweep.workers_per_trial > 1:  # DDP over several workers: a TorchTrainer inside this trial
        from trainables.gan.ray_train import run_gan_ray

        with decode_on_this_node(store.remote):  # the images are in this node's scratch
            result = run_gan_ray(data.manifest, run_dir, gcfg, num_workers=sweep.workers_per_trial,
                                 use_gpu=sweep.gpus_per_trial > 0, evaluate=evaluator,
                                 resources_per_worker=ddp_worker_resources(sweep),
                                 storage_path=store.uri(f"gans/{key}/ray") if store.remote else None,
                                 callbacks=tune_forwarder(functools.partial(gan_progress, key=key)))
    else:
        sync = CheckpointSync(store, run_dir.relative_to(store.local()).as_posix(), fence=lease)

        def on_epoch(m: Mapping[str, Any]) -> None:
            report(gan_progress(m, key))
            sync()

        result = run_gan_local(data.manifest, run_dir, gcfg, report=on_epoch, evaluate=evaluator)
    info: dict[str, Any] = {"gan_key": key, "gan_epochs": result.get("epochs"), "gan_ada_p": result.get("ada_p"),
                            "time_gan_s": round(time.perf_counter() - t0, 2)}
    if evaluator is not None:  # the driver builds it before any trial; True = this trial did not rebuild it
        info["gan_reference_cached"] = bool(evaluator.reference_was_cached)
    if result.get("status") != "finished":  # a diverged config stays diverged: its done.json says so
        return {**info, "status": "failed", "reason": f"GAN {result.get('status')}: {result.get('reason')}"}
    n_minority = int(((manifest.df["split"] == "train") & (manifest.df["label"] == manifest.positive_label)
                      & ~manifest.df["is_synthetic"]).sum())
    from sweeps.curation import sample_headroom  # more while curation may drop some (also in gan_key)

    n_samples = max(1, math.ceil(max(sweep.synthetic_ratios) * n_minority * sample_headroom(sweep)))
    synthetic_dir = run_dir / "synthetic"
    ckpt = RunFiles(run_dir).sampling_checkpoint()  # the best validation KID's checkpoint (else the last)
    ensure_free(run_dir, n_samples * sweep.image_size ** 2 * sweep.channels, f"{n_samples} synthetic images")
    write_samples(ckpt, n_samples, synthetic_dir, seed=int(config["seed"]), device=device, overwrite=True,
                  progress=False, labels=[manifest.positive_class] if gcfg.conditional else None)
    info.update(status="ok", reason="", gan_checkpoint_epoch=int(load_checkpoint(ckpt)["epoch"]))
    if evaluator is not None:
        info.update(audit_gan(evaluator, [synthetic_dir], run_dir / "quality"))
        info.update(gan_leak_audit(synthetic_dir, manifest, sweep, data))
    info["time_gan_s"] = round(time.perf_counter() - t0, 2)
    return info


def mix_progress(row: Mapping[str, Any], member: int, epochs_per_member: int) -> dict[str, Any]:
    """A mix member's GAN epoch as the trial reports it: under keys ASHA does not read (a mix is exempt), with
    the epoch counted across members so progress plots read left to right."""
    out = {k: v for k, v in row.items() if k not in ("gan_epoch", "gan_kid")}
    if row.get("gan_epoch") is not None:
        out["gan_epoch_cumulative"] = member * epochs_per_member + int(row["gan_epoch"])
    if row.get("gan_kid") is not None:
        out["member_gan_kid"] = row["gan_kid"]
    out["mix_member"] = member
    return out


def run_trial(config: Mapping[str, Any], sweep: SweepConfig, data: TrialData, trial_id: str, report=_report,
              before: Callable[[Mapping[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Everything one trial does, without Tune (tests call this directly). Returns the final row.
    before(config): an injection point called first (tests/faults make a trial fail the ways real ones do)."""
    import torch

    if before is not None:
        before(config)
    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    device = "cuda" if sweep.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    from sweeps.artifacts import localize_trial

    sweep, data = localize_trial(sweep, data)
    data = fold_data(config, data)
    from sweeps.exchange import subset_data

    data = subset_data(config, data, sweep)  # --exchange-rate: its (seed, fraction)'s minority subset
    row: dict[str, Any] = {k: config[k] for k in (*TRIAL_KEYS, *ROW_KEYS) if k in config}
    row.update(trial_id=trial_id, config_id=config_id(config), setup_id=setup_id(config),
               gan_key=gan_key(config, sweep),
               status="ok", error="", image_size=sweep.image_size, channels=sweep.channels,
               diffaugment=config["arm"] in GAN_ARMS and gan_augment_of(config) == "diffaugment",  # the old column
               n_val_positive=data.n_val_positive, n_test_positive=data.n_test_positive,
               n_train_positive=data.n_train_positive)
    synthetic_dir = None
    row.update(knob_values(config))  # every row says the knobs it trained with (defaults where unset)
    row["curation"] = trial_curation(config)
    if config["arm"] == EXTERNAL_ARM:  # a set made elsewhere (sweeps/external.py): audited once by the driver
        from sweeps.external import trial_set

        synthetic_dir = trial_set(config, sweep, data, row)
        if row["status"] != "ok":
            row.update(time_total_s=round(time.perf_counter() - t0, 2), phase="final")
            report(row)
            return row
    if config["arm"] in GAN_ARMS:
        with warnings.catch_warnings(record=True) as caught:  # said once per GAN key on the console (progress.py)
            warnings.simplefilter("always")
            synthetic_dir = trial_gans(config, sweep, data, device, report, row)
        row["gan_warnings"] = " | ".join(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
        if row["status"] != "ok":
            row.update(time_total_s=round(time.perf_counter() - t0, 2), phase="final")
            report(row)
            return row
    from trainables.classifier.curation import CurationError

    try:
        row.update(trial_classifier(config, sweep, data, device, report, trial_id, synthetic_dir))
    except CurationError as exc:  # the GAN's set, curated, cannot supply the ratio: this config's outcome, said
        from sweeps.curation import row_values

        row.update(row_values({"curation": exc.counts}, row["curation"], str), status="failed",
                   error=f"curation: {exc}"[:1000])
    row.update(time_total_s=round(time.perf_counter() - t0, 2), phase="final")
    report(row)
    return row


def trial_gans(config: Mapping[str, Any], sweep: SweepConfig, data: TrialData, device: str, report,
               row: dict[str, Any]):
    """Train or reuse the trial's GAN (a mix: one per loss), fill the row's gan_* values; -> the synthetic
    folder(s) for the classifier ([(folder, share), ...] for a mix). A failed GAN sets the row's status."""
    is_mix = config.get("gan_loss") == MIX
    members = mix_members(config, sweep.gan_losses) if is_mix else [config]
    gans = []
    for i, member in enumerate(members):
        member_report = (lambda r, i=i: report(mix_progress(r, i, sweep.gan_epochs))) if is_mix else report
        gans.append(ensure_gan(member, sweep, data, device, member_report, holder=str(row["trial_id"])))
    bad = [g for g in gans if g["status"] != "ok"]
    if not is_mix:
        row.update({k: v for k, v in gans[0].items() if k not in ("status", "reason")})
    else:  # a mix: every member's run dir; quality of the mixed set, not the members' mean
        row.update(gan_run_dir=";".join(g["gan_run_dir"] for g in gans),
                   gan_trained_here=any(g.get("gan_trained_here") for g in gans),
                   time_gan_s=sum(g.get("time_gan_s", 0) for g in gans if g.get("gan_trained_here")),
                   gan_epochs=sum(int(g.get("gan_epochs") or 0) for g in gans))
        if not bad and sweep.gan_eval_every:
            row.update(mix_quality(config, gans, sweep, data, device, holder=str(row["trial_id"])))
    if bad:
        row.update(status="failed", error="; ".join(g["reason"] for g in bad))
        return None
    # the gate, from the recorded quality (of the mixed set for a mix): a gated GAN never feeds a classifier
    row["gan_gate"], note = quality_gate(row, sweep)
    if row["gan_gate"] == "gated":
        row.update(status="gated", error=note)
        return None
    row["gan_gate_note"] = note
    return gans[0]["synthetic_dir"] if not is_mix else [(g["synthetic_dir"], 1.0 / len(gans)) for g in gans]


def trial_classifier(config: Mapping[str, Any], sweep: SweepConfig, data: TrialData, device: str, report,
                     trial_id: str, synthetic_dir) -> dict[str, Any]:
    """Train the trial's classifier (in process, or DDP through a TorchTrainer) -> its val/test row values."""
    from sweeps.artifacts import CheckpointSync, artifact_uri, publish_run, store_of
    from trainables.classifier.run import run_classifier_local

    t1 = time.perf_counter()
    store, key = store_of(data), f"classifiers/{trial_id}"
    clf_dir = store.fetch(key)  # remote: a retry on another node resumes from the checkpoints published below
    ccfg = classifier_config(config, sweep, device, data.n_train_real)
    scorer = None  # the sweep's off-class scorer (sweeps/curation.py), trained by the driver before any trial
    if "off_class" in ccfg.curation and synthetic_dir:
        from sweeps.curation import ensure_sweep_scorer

        scorer = ensure_sweep_scorer(sweep, data, classifier_config, device)[0]
    if sweep.workers_per_trial > 1:
        from trainables.classifier.ray_train import run_classifier_ray

        with decode_on_this_node(store.remote):  # the images are in this node's scratch
            result = run_classifier_ray(data.manifest, clf_dir, dataclasses.replace(ccfg, device="auto"),
                                        synthetic_dir=synthetic_dir, num_workers=sweep.workers_per_trial,
                                        use_gpu=sweep.gpus_per_trial > 0, name=f"clf-{trial_id}",
                                        resources_per_worker=ddp_worker_resources(sweep),
                                        storage_path=store.uri(f"{key}/ray") if store.remote else None,
                                        callbacks=tune_forwarder(classifier_progress), curation_scorer=scorer)
    else:
        sync = CheckpointSync(store, key)

        def on_epoch(m: dict) -> None:
            progress = classifier_progress(m)
            if progress:
                report(progress)
            sync()

        result = run_classifier_local(data.manifest, clf_dir, ccfg, synthetic_dir=synthetic_dir, report=on_epoch,
                                      resume=True, curation_scorer=scorer)
    out = {f"{split}_{k}": float(result[split][k]) if result[split].get(k) is not None else float("nan")
           for split in ("val", "test") for k in METRICS}
    publish_run(store, key)  # and its scratch copy removed; a store error is logged, the finished trial stays ok
    dirs = [d for d, _ in synthetic_dir] if isinstance(synthetic_dir, list) else [synthetic_dir] if synthetic_dir else []
    out.update(clf_run_dir=artifact_uri(data, clf_dir), synthetic_dir=";".join(artifact_uri(data, d) for d in dirs),
               clf_threshold=float(result.get("threshold", float("nan"))),
               clf_best_epoch=int(result.get("best_epoch", -1)), n_synthetic=int(result.get("n_synthetic", 0)),
               clf_steps=int(result.get("steps", 0)), clf_epoch_size=int(result.get("epoch_size", 0)),
               time_classifier_s=round(time.perf_counter() - t1, 2))
    from sweeps.curation import row_values

    out.update(row_values(result, ccfg.curation, lambda p: artifact_uri(data, p)))
    return out


def trainable(config: dict, sweep: SweepConfig | None = None, data: TrialData | None = None,
              before: Callable[[Mapping[str, Any]], Any] | None = None) -> None:
    """Tune entry point: tune.with_parameters(trainable, sweep=SweepConfig, data=TrialData[, before=callable])."""
    from ray import tune

    # confirm-phase trials come as {"trial": {...}} (a grid over whole configs)
    run_trial(config.get("trial", config), sweep, data, tune.get_context().get_trial_id(), before=before)
