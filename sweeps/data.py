"""The sweep's data before any trial: the split manifest (prepared once, never re-split under a resumed sweep)
and what every trial knows of it (TrialData: paths, val/test minority counts, the quality reference's split)."""
from __future__ import annotations

from pathlib import Path

from sweeps.config import SweepConfig


def prepare_data(cfg: SweepConfig, work: Path) -> Path:
    import data_prep

    if cfg.manifest:
        # fail now, with the file named, if it is not a manifest or leaks (a patient across splits, ...)
        data_prep.check_no_leakage(data_prep.read_manifest(cfg.manifest).df, where=f"--manifest {cfg.manifest}")
        return Path(cfg.manifest).resolve()
    out = work / "data"
    path = out / "manifest.parquet"
    source = cfg.data
    if "://" in source:  # s3://, gs://, ...: copy the data set next to the work dir once, then read it locally
        import os

        import pyarrow.fs as pafs

        from sweeps.storage import filesystem

        local = work / "data_source" / Path(source.rstrip("/")).name
        if not local.exists():
            print(f"copying {source} -> {local}", flush=True)
            local.parent.mkdir(parents=True, exist_ok=True)
            # the sweep's S3 endpoint applies here too (MinIO), with the store's timeouts and retries
            fs, inside = filesystem(source, cfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL"))
            tmp = local.with_name(local.name + ".part")
            pafs.copy_files(inside, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            tmp.replace(local)
        source = str(local)
    pcfg = data_prep.PrepConfig(source=source, seed=cfg.split_seed, use_given_split=cfg.use_given_split,
                                resplit=cfg.resplit, move_crossing_groups=cfg.move_crossing_groups,
                                label_map=data_prep.parse_label_map(cfg.relabel),
                                positive_class=cfg.positive,
                                channels=cfg.channels, image_size=cfg.image_size,
                                demo_num_majority=cfg.demo_counts[0], demo_num_minority=cfg.demo_counts[1])
    if path.exists() and cfg.resume:
        return path  # same sweep, same split: never re-split under running trials
    m = data_prep.prepare(pcfg, out)
    if cfg.max_images_per_class and cfg.data != "demo":
        m = subsample(m, cfg.max_images_per_class, cfg.split_seed, path)
    from data_prep.__main__ import summary

    print(summary(m), flush=True)
    return path


def subsample(m, per_class: int, seed: int, path: Path):
    """Keep at most `per_class` real images of each class in each split (seeded), rewrite the manifest."""
    from data_prep.manifest import Manifest, write_manifest

    df = m.df
    keep = (df.groupby(["split", "label"], group_keys=False, sort=True)
              .apply(lambda g: g.sample(n=min(len(g), per_class), random_state=seed)))
    dropped = len(df) - len(keep)
    small = Manifest(df=df.loc[sorted(keep.index)].reset_index(drop=True), meta=dict(m.meta))
    write_manifest(small, path)
    print(f"kept at most {per_class} images per class and split: {len(small.df)} of {len(df)} "
          f"({dropped} left out)", flush=True)
    return small


def write_fold_manifests(manifest: Path, work: Path, folds: int, seed: int, resume: bool = False) -> list[Path]:
    """--folds K: the manifest's real train+val re-split into K stratified, patient-grouped folds (test untouched;
    trainables.classifier.data.kfold_manifests), fold f -> <work>/data/folds/fold_<f>/manifest.parquet, whose
    "val" is fold f's held-out part and "train" the rest. Written once by the driver and seeded by the split seed,
    so every arm and seed sees the same folds (they pair like the seeds do); a resumed sweep keeps the files."""
    from data_prep import read_manifest
    from data_prep.manifest import write_manifest
    from trainables.classifier.data import kfold_manifests

    paths = [Path(work) / "data" / "folds" / f"fold_{f}" / "manifest.parquet" for f in range(folds)]
    if resume and all(p.is_file() for p in paths):
        return paths  # same sweep, same folds: never rewritten under running trials
    for m, path in zip(kfold_manifests(read_manifest(manifest), folds, seed), paths):
        write_manifest(m, path)
    return paths


def trial_data(manifest: Path, work: Path, fold_manifests=()):
    """What every trial knows of the data before trials start: where things are, real training images (every
    classifier's epoch size), real minority images in val and test, and so which split the GAN quality reference is built from (trial.reference_split); with fold
    manifests (write_fold_manifests) the same for each fold, in TrialData.folds."""
    import data_prep
    from sweeps.trial import TrialData, reference_split

    m = data_prep.read_manifest(manifest)
    real_pos = (m.df["label"] == m.positive_label) & ~m.df["is_synthetic"]
    n_val, n_test = int((real_pos & (m.df["split"] == "val")).sum()), int((real_pos & (m.df["split"] == "test")).sum())
    n_train = int(((m.df["split"] == "train") & ~m.df["is_synthetic"]).sum())  # every arm's epoch size: equal steps
    return TrialData(manifest=str(Path(manifest).resolve()), work_dir=str(Path(work).resolve()),
                     n_val_positive=n_val, n_test_positive=n_test, gan_reference_split=reference_split(n_val),
                     n_train_real=n_train, n_train_positive=int((real_pos & (m.df["split"] == "train")).sum()),
                     folds=tuple(trial_data(p, work) for p in fold_manifests))
