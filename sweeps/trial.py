"""The Tune function trainable of the sweep: one trial = (GAN, if its arm uses one) -> synthetic set -> classifier.

No wasted GAN training: a GAN is identified by `space.gan_key` (loss, lrs, DiffAugment, n_critic, seed)
and lives in <work_dir>/gans/<key>/. The first trial that needs it trains it under a file lock; every
later trial (any ratio, any classifier LR) finds `done.json` and reuses the generator and its synthetic
set. A trial stopped by the scheduler or killed mid-GAN leaves checkpoints, so the next trial asking
for that GAN resumes it instead of starting over. The synthetic set is sampled once per GAN, large
enough for the largest ratio in the sweep; each classifier draws its own seeded subset.

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

import contextlib
import fcntl
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from sweeps.space import MIX, ROW_KEYS, TRIAL_KEYS, config_id, gan_key, mix_members, setup_id

METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "macro_f1",
           "roc_auc", "pr_auc")
# Fewest real minority validation images a quality reference may have: KID from fewer is mostly noise, and
# precision/recall need more than k = 3 neighbours. Below it the reference is the training images (stated).
MIN_VAL_REFERENCE_IMAGES = 10


def reference_split(n_val_positive: int) -> str:
    """The split the GAN quality reference is built from: "val", or "train" when val is too small."""
    return "val" if n_val_positive >= MIN_VAL_REFERENCE_IMAGES else "train"


@contextlib.contextmanager
def file_lock(path: Path):
    """Exclusive lock across processes on one machine or a shared POSIX file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def gan_settings(config: Mapping[str, Any], s: Mapping[str, Any], device: str) -> dict[str, Any]:
    return {"loss": config["gan_loss"], "lr_g": float(config["gan_lr_g"]), "lr_d": float(config["gan_lr_d"]),
            "n_critic": int(config.get("n_critic") or 1),
            "diffaugment": "color,translation,cutout" if config.get("diffaugment") else "",
            "seed": int(config["seed"]), "num_epochs": s["gan_epochs"], "batch_size": s["gan_batch_size"],
            "ngf": s["gan_width"], "ndf": s["gan_width"], "image_size": s["image_size"], "channels": s["channels"],
            "eval_every": s["gan_eval_every"], "checkpoint_every": max(1, s["gan_epochs"] // 10),
            "sample_every": max(1, s["gan_epochs"] // 4), "keep_checkpoints": 2, "device": device,
            # conditional: one GAN over every class (sampled for the minority); else the minority class only
            "conditional": bool(config.get("conditional", False)),
            # a conditional GAN's epoch: all minority images + as many of each other class (its cost is K x a
            # minority-only epoch, not the whole train set: 265 s vs 23 s per demo GAN). DDP trials: every image.
            "balanced_epochs": bool(config.get("conditional", False)) and s["workers_per_trial"] == 1,
            "feature_matching": float(config.get("feature_matching") or 0.0),
            "perceptual": float(config.get("perceptual") or 0.0),
            "vgg_weights": s.get("vgg_weights") if float(config.get("perceptual") or 0.0) > 0 else None}


def classifier_settings(config: Mapping[str, Any], s: Mapping[str, Any], device: str) -> dict[str, Any]:
    return {"model": s["clf_model"], "image_size": s["image_size"], "channels": s["channels"],
            "batch_size": s["clf_batch_size"], "num_epochs": s["clf_epochs"], "lr": float(config["clf_lr"]),
            "synthetic_ratio": float(config["synthetic_ratio"]), "imbalance_fix": config["imbalance_fix"],
            "augment": config["augment"], "seed": int(config["seed"]), "device": device}


def ddp_worker_resources(s: Mapping[str, Any]) -> dict[str, float]:
    """Resources of each DDP worker of a --workers-per-trial N > 1 trial: --cpus-per-trial and --gpus-per-trial
    are per worker there (the trial's own process only coordinates, on 0.25 CPU)."""
    res = {"CPU": float(s["cpus_per_trial"])}
    if s["gpus_per_trial"] > 0:
        res["GPU"] = float(s["gpus_per_trial"])
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


def ensure_gan(config: Mapping[str, Any], s: Mapping[str, Any], device: str, report=_report) -> dict[str, Any]:
    """Train (or reuse) the GAN of this config, sample its synthetic set once, audit it once.

    -> {"gan_key", "gan_run_dir", "synthetic_dir", "status", "reason", "gan_trained_here", gan_* metrics}
    """
    from data_prep import read_manifest
    from trainables.gan.sample import write_samples
    from trainables.gan.train import run_gan_local

    key = gan_key(config)
    run_dir = Path(s["work_dir"]) / "gans" / key
    done = run_dir / "done.json"
    with file_lock(run_dir.parent / f"{key}.lock"):
        if done.exists():
            return {**json.loads(done.read_text()), "gan_trained_here": False}
        t0 = time.perf_counter()
        manifest = read_manifest(s["manifest"])
        gcfg = gan_settings(config, s, device)
        evaluator = quality_evaluator(manifest, s, device) if s["gan_eval_every"] else None

        if s["workers_per_trial"] > 1:  # DDP over several workers: a TorchTrainer inside this trial
            from trainables.gan.train import run_gan_ray

            result = run_gan_ray(s["manifest"], run_dir, gcfg, num_workers=s["workers_per_trial"],
                                 use_gpu=s["gpus_per_trial"] > 0, evaluate=evaluator,
                                 resources_per_worker=ddp_worker_resources(s),
                                 callbacks=tune_forwarder(functools.partial(gan_progress, key=key)))
        else:
            result = run_gan_local(s["manifest"], run_dir, gcfg, report=lambda m: report(gan_progress(m, key)),
                                   evaluate=evaluator)
        info: dict[str, Any] = {"gan_key": key, "gan_run_dir": str(run_dir), "gan_epochs": result.get("epochs"),
                                "time_gan_s": round(time.perf_counter() - t0, 2)}
        if result.get("status") != "finished":
            info.update(status="failed", reason=f"GAN {result.get('status')}: {result.get('reason')}")
            done.write_text(json.dumps(info))  # a diverged config stays diverged: don't retrain it
            return {**info, "gan_trained_here": True}
        n_minority = int(((manifest.df["split"] == "train") & (manifest.df["label"] == manifest.positive_label)
                          & ~manifest.df["is_synthetic"]).sum())
        n_samples = max(1, math.ceil(max(s["synthetic_ratios"]) * n_minority))
        synthetic_dir = run_dir / "synthetic"
        ckpt = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
        write_samples(ckpt, n_samples, synthetic_dir, seed=int(config["seed"]), device=device, overwrite=True,
                      progress=False, labels=[manifest.positive_class] if gcfg["conditional"] else None)
        info.update(status="ok", reason="", synthetic_dir=str(synthetic_dir))
        if evaluator is not None:
            info.update(audit_gan(evaluator, [synthetic_dir], run_dir / "quality"))
        info["time_gan_s"] = round(time.perf_counter() - t0, 2)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, default=float))
        tmp.replace(done)
        return {**info, "gan_trained_here": True}


def quality_evaluator(manifest, s: Mapping[str, Any], device: str):
    """The GAN evaluator of this sweep: domain features, reference = real minority images of
    s["gan_reference_split"] ("val" unless val is too small), memorisation audit against real train."""
    from trainables.metrics.generative import make_gan_evaluator

    return make_gan_evaluator(manifest, s["image_size"], s["channels"], Path(s["work_dir"]) / "quality_cache",
                              device=device, split=s.get("gan_reference_split", "val"))


QUALITY_COLUMNS = {"fid": "gan_fid", "kid": "gan_kid", "kid_std": "gan_kid_std", "precision": "gan_precision",
                   "recall": "gan_recall", "diversity_ratio": "gan_diversity_ratio",
                   "memorised_fraction": "gan_memorised_fraction"}


def audit_gan(evaluator, synthetic_dirs: list, out_dir: Path) -> dict[str, Any]:
    """Final quality + memorisation audit of a sampled set (equal parts of each folder in synthetic_dirs)
    against the evaluator's real reference; the memorisation audit compares with real train images."""
    import pandas as pd

    from data_prep.arrays import decode_rows
    from data_prep.manifest import read_synthetic_rows
    from trainables.metrics.generative import evaluate_synthetic

    sets = [read_synthetic_rows(d) for d in synthetic_dirs]
    n_each = min(len(r) for r in sets)
    rows = pd.concat([r.head(n_each) for r in sets], ignore_index=True)
    ref = evaluator.reference
    fake = decode_rows(rows, ref.pixels.shape[1], ref.pixels.shape[3])
    m = evaluate_synthetic(None, fake, None, evaluator.extractor, out_dir=out_dir, reference=ref)
    (out_dir / "metrics.json").write_text(json.dumps(m, indent=2, default=str))
    out: dict[str, Any] = {col: float(m[k]) for k, col in QUALITY_COLUMNS.items() if isinstance(m.get(k), (int, float))}
    out["gan_kid_reference"] = str(ref.meta.get("split", ""))
    return out


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


def mix_quality(config: Mapping[str, Any], gans: list[dict], s: Mapping[str, Any], device: str) -> dict[str, Any]:
    """Quality of a mix's synthetic set (equal parts of each member's), computed once per mix under a lock."""
    from data_prep import read_manifest

    key = gan_key(config)
    out_dir = Path(s["work_dir"]) / "gans" / key
    done = out_dir / "mix_quality.json"
    with file_lock(out_dir.parent / f"{key}.lock"):
        if done.exists():
            return json.loads(done.read_text())
        evaluator = quality_evaluator(read_manifest(s["manifest"]), s, device)
        q = audit_gan(evaluator, [g["synthetic_dir"] for g in gans], out_dir / "quality")
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(q, default=float))
        tmp.replace(done)
        return q


def _inject_test_fault(config: Mapping[str, Any]) -> None:
    """TEST-ONLY (tests/faults): a `test_fault` key in a trial's config makes it fail the way a real trial can,
    to prove the sweep records the reason and carries on. No search space or control ever sets this key."""
    fault = config.get("test_fault")
    if not fault:
        return
    if fault == "exception":
        raise RuntimeError("injected test fault: an exception inside the trial")
    if fault == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected test fault)")
    raise ValueError(f"unknown test_fault {fault!r}; valid: ['exception', 'oom']")


def run_trial(config: Mapping[str, Any], s: Mapping[str, Any], trial_id: str, report=_report) -> dict[str, Any]:
    """Everything one trial does, without Tune (tests call this directly). Returns the final row."""
    import torch

    _inject_test_fault(config)

    from trainables.classifier.run import run_classifier_local

    torch.set_num_threads(max(1, int(s["cpus_per_trial"])))
    device = "cuda" if s["gpus_per_trial"] > 0 and torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    row: dict[str, Any] = {k: config[k] for k in (*TRIAL_KEYS, *ROW_KEYS) if k in config}
    row.update(trial_id=trial_id, config_id=config_id(config), setup_id=setup_id(config), gan_key=gan_key(config),
               status="ok", error="", image_size=s["image_size"], channels=s["channels"],
               **{k: s[k] for k in ("n_val_positive", "n_test_positive") if k in s})
    synthetic_dir = None
    if config["arm"] == "gan":
        is_mix = config.get("gan_loss") == MIX
        members = mix_members(config, s["gan_losses"]) if is_mix else [config]
        gans = []
        for i, member in enumerate(members):
            member_report = (lambda r, i=i: report(mix_progress(r, i, s["gan_epochs"]))) if is_mix else report
            gans.append(ensure_gan(member, s, device, member_report))
        bad = [g for g in gans if g["status"] != "ok"]
        if not is_mix:
            row.update({k: v for k, v in gans[0].items() if k not in ("status", "reason")})
        else:  # a mix: every member's run dir; quality of the mixed set (below), not the members' mean
            row.update(gan_run_dir=";".join(g["gan_run_dir"] for g in gans),
                       gan_trained_here=any(g.get("gan_trained_here") for g in gans),
                       time_gan_s=sum(g.get("time_gan_s", 0) for g in gans if g.get("gan_trained_here")),
                       gan_epochs=sum(int(g.get("gan_epochs") or 0) for g in gans))
            if not bad and s["gan_eval_every"]:
                row.update(mix_quality(config, gans, s, device))
        if bad:
            row.update(status="failed", error="; ".join(g["reason"] for g in bad),
                       time_total_s=round(time.perf_counter() - t0, 2), phase="final")
            report(row)
            return row
        synthetic_dir = gans[0]["synthetic_dir"] if len(gans) == 1 else \
            [(g["synthetic_dir"], 1.0 / len(gans)) for g in gans]
    t1 = time.perf_counter()
    clf_dir = Path(s["work_dir"]) / "classifiers" / trial_id

    ccfg = classifier_settings(config, s, device)
    if s["workers_per_trial"] > 1:
        from trainables.classifier.ray_train import run_classifier_ray

        result = run_classifier_ray(s["manifest"], clf_dir, {**ccfg, "device": "auto"}, synthetic_dir=synthetic_dir,
                                    num_workers=s["workers_per_trial"], use_gpu=s["gpus_per_trial"] > 0,
                                    name=f"clf-{trial_id}", resources_per_worker=ddp_worker_resources(s),
                                    callbacks=tune_forwarder(classifier_progress))
    else:
        def on_epoch(m: dict) -> None:
            row = classifier_progress(m)
            if row:
                report(row)

        result = run_classifier_local(s["manifest"], clf_dir, ccfg, synthetic_dir=synthetic_dir, report=on_epoch,
                                      resume=True)
    for split in ("val", "test"):
        for k in METRICS:
            v = result[split].get(k)
            row[f"{split}_{k}"] = float(v) if v is not None else float("nan")
    row.update(clf_run_dir=str(clf_dir),
               synthetic_dir=";".join(d for d, _ in synthetic_dir) if isinstance(synthetic_dir, list)
               else str(synthetic_dir or ""),
               clf_threshold=float(result.get("threshold", float("nan"))),
               clf_best_epoch=int(result.get("best_epoch", -1)), n_synthetic=int(result.get("n_synthetic", 0)),
               time_classifier_s=round(time.perf_counter() - t1, 2),
               time_total_s=round(time.perf_counter() - t0, 2), phase="final")
    report(row)
    return row


def trainable(config: dict, settings: dict | None = None) -> None:
    """Tune entry point (wrapped with tune.with_parameters(trainable, settings=...))."""
    from ray import tune

    # confirm-phase trials come as {"trial": {...}} (a grid over whole configs)
    run_trial(config.get("trial", config), settings, tune.get_context().get_trial_id())
