"""Export the answer of a sweep: the chosen GAN configuration's augmented training set as a folder tree, its
generator checkpoint(s), and a classifier config that re-runs it.

    python -m analysis.export results/augment_ratio/results.parquet --out export/ [--manifest M] [--overwrite]
    python -m trainables.classifier --config export/classifier.yaml          # re-runs the exported classifier

"Chosen" follows the report's rule (DESIGN.md rule 2): the GAN config with the best mean REAL-VALIDATION F1
(sensitivity breaks ties) among those run with the most seeds (`classifier_rows` -> `summarize_configs` ->
`select_best(configs, "gan")`); test metrics are copied into export.json for reference and never choose.
Of that config's seeds, the run with the best validation F1 is exported (a GAN is trained per seed).

    OUT/data/train/<class>/real_000000.png ...        real training images (copied; decoded to PNG from .npz)
    OUT/data/train/<class>/synthetic_000000.png ...   the synthetic images that run drew (minority class)
    OUT/data/val/<class>/real_*.png, OUT/data/test/<class>/real_*.png    real images only
    OUT/data/index.csv     file, split, label, kind (real | synthetic), generator, image_id, source
    OUT/generator/gan_<i>/ the generator checkpoint the synthetic set was sampled from (+ the GAN's config.json)
    OUT/synthetic/<i>/     the synthetic folder(s) the classifier drew from (PNGs + manifest.parquet)
    OUT/classifier.yaml    manifest, synthetic folders and the ClassifierConfig of the run
    OUT/export.json        what was chosen, on which validation numbers, from which results rows

OUT/data is a pre-split tree (`DIR/{train,val,test}/<class>/`), the layout image-folder loaders read. The
training set is rebuilt with the classifier's own seeded draw (`build_classifier_data`), so it is the set the
run trained on; its synthetic count is checked against the run's metrics.json. The paths come from the
results rows (gan_run_dir, synthetic_dir, clf_run_dir) and the classifier run's metrics.json (the manifest);
a sweep folder moved elsewhere is found relative to the results file. Torch is imported only when exporting,
so `import analysis` stays light.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.load import ResultsFileError, load
from analysis.tables import classifier_rows, select_best, summarize_configs

SPLIT_ORDER = ("train", "val", "test")


class ExportError(ValueError):
    """The results name no exportable configuration, or a file the export needs is missing."""


def locate(path: str, results_file: Path, what: str) -> Path:
    """A path named by a results row; if it moved with the sweep folder, found under the results file's folder."""
    p = Path(path).expanduser()
    if path and p.exists():
        return p
    parts = p.parts
    for marker in ("gans", "classifiers", "data"):  # <work_dir>/gans/<key>, <work_dir>/classifiers/<trial>, ...
        if marker in parts:
            i = len(parts) - 1 - parts[::-1].index(marker)
            cand = results_file.parent.joinpath(*parts[i:])
            if cand.exists():
                return cand
    raise ExportError(f"{what} not found: {path or '(empty)'} (named by {results_file}); the run's files must be "
                      f"present: run the export where the sweep's work dir is, or copy it beside the results file")


def choose(df: pd.DataFrame, source: str) -> tuple[pd.Series, pd.Series]:
    """-> (the chosen config's summary row, the results row of its best-validation seed)."""
    from analysis.exchange import without_exchange

    clf = classifier_rows(without_exchange(df))  # an --exchange-rate run trained on a subset: never the export's
    best = select_best(summarize_configs(clf), "gan")
    if best is None:
        gan = df[(df["stage"] == "classifier") & (df["arm"] == "gan")]
        statuses = gan["status"].value_counts().to_dict()
        raise ExportError(f"{source}: no successful GAN configuration with validation metrics to export "
                          f"(GAN classifier rows by status: {statuses or 'none'}); the export needs at least one "
                          f"classifier row with arm 'gan', status 'ok' and a val_f1")
    rows = clf[(clf["config_id"] == best["config_id"]) & clf["val_f1"].notna()]
    rows = rows.assign(_f1=-rows["val_f1"], _sens=-rows["val_sensitivity"].fillna(-1.0),
                       _seed=rows["seed"].astype("float64").fillna(-1.0))
    row = rows.sort_values(["_f1", "_sens", "_seed", "trial_id"], kind="mergesort").iloc[0]
    return best, row.drop(["_f1", "_sens", "_seed"])


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot be read as JSON ({exc})") from exc


def _split_paths(value: str) -> list[str]:
    return [p for p in str(value or "").split(";") if p]


def _manifest_path(manifest: str | None, clf_metrics: dict, gan_dirs: list[Path], results_file: Path) -> Path:
    if manifest:
        p = Path(manifest).expanduser()
        if not p.is_file():
            raise ExportError(f"manifest not found: {p} (given with --manifest)")
        return p
    named = clf_metrics.get("manifest")
    for d in gan_dirs:  # runs from before the classifier recorded it: the GAN run's config names it
        if not named and (d / "config.json").is_file():
            named = (_json(d / "config.json").get("_run") or {}).get("manifest")
    if not named:
        raise ExportError("the classifier run does not record its manifest (an older run): pass --manifest PATH, the "
                          "manifest.parquet the sweep used (<work_dir>/data/manifest.parquet unless --manifest was given)")
    return locate(named, results_file, "manifest")


def _synthetic_sources(row: pd.Series, clf_metrics: dict, results_file: Path) -> list[tuple[Path, float]]:
    used = (clf_metrics.get("data") or {}).get("synthetic_sources") or []
    if used:  # what the run itself drew from, with its proportions
        return [(locate(u["dir"], results_file, "synthetic folder"), float(u["proportion"])) for u in used]
    dirs = _split_paths(row.get("synthetic_dir", ""))
    if not dirs:
        raise ExportError(f"results row {row['trial_id']} names no synthetic_dir and its run no synthetic source")
    return [(locate(d, results_file, "synthetic folder"), 1.0 / len(dirs)) for d in dirs]  # the sweep's equal mix


def _latest_checkpoint(gan_dir: Path) -> Path:
    ckpts = sorted((gan_dir / "checkpoints").glob("checkpoint_*.pt"))
    if not ckpts:
        raise ExportError(f"no generator checkpoint in {gan_dir / 'checkpoints'} (expected checkpoint_NNNNNN.pt)")
    return ckpts[-1]  # the one the sweep sampled the synthetic set from


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in str(name)).strip() or "class"


def write_tree(data, classes: list[str], channels: int, out: Path) -> pd.DataFrame:
    """Write real + synthetic train and real val/test images under out/<split>/<class>/; -> index rows."""
    from PIL import Image

    from data_prep.sources import decode_record

    index, counters = [], {"real": 0, "synthetic": 0}
    for split, rows in (("train", data.train_rows), ("val", data.val_rows), ("test", data.test_rows)):
        for r in rows.itertuples(index=False):
            kind = "synthetic" if bool(r.is_synthetic) else "real"
            if split != "train" and kind == "synthetic":  # the leakage guard already refuses this; never export it
                raise ExportError(f"synthetic image {r.image_id} in the {split} split")
            d = out / split / _safe(classes[int(r.label)])
            d.mkdir(parents=True, exist_ok=True)
            src = Path(r.source)
            suffix = src.suffix.lower() if not r.source_key and src.suffix else ".png"
            name = f"{kind}_{counters[kind]:06d}{suffix}"
            counters[kind] += 1
            if not r.source_key and src.is_file():
                shutil.copyfile(src, d / name)  # the original file, bit for bit
            else:
                img = decode_record(r.source, r.source_key, int(r.source_index), channels)
                Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(d / name)
            index.append({"file": (d / name).relative_to(out).as_posix(), "split": split,
                          "label": classes[int(r.label)], "kind": kind, "generator": r.generator,
                          "image_id": r.image_id,
                          "source": f"{r.source}[{r.source_key}:{r.source_index}]" if r.source_key else r.source})
    return pd.DataFrame(index)


@dataclass
class ChosenRun:
    """The files of the exported run, found from its results row (every path checked to exist)."""
    results_file: Path
    best: pd.Series            # the chosen config's summary row (means over its seeds)
    row: pd.Series             # the results row of the exported seed
    clf_dir: Path
    clf_config: dict           # the classifier run's config.json
    clf_metrics: dict          # its metrics.json ({} when absent)
    gan_dirs: list[Path]
    checkpoints: list[Path]    # the generator checkpoint of each GAN run
    manifest_path: Path
    sources: list[tuple[Path, float]]  # synthetic folders the classifier drew from, with their proportions


def export(results: str | Path, out: str | Path, manifest: str | None = None, overwrite: bool = False) -> dict:
    """Write the chosen GAN config's training set, generator and re-run config into `out`; -> export.json's dict."""
    df = load(results)
    results_file = Path(df.attrs["source"]).resolve()
    best, row = choose(df, str(results_file))
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"output folder {out} is not empty; choose another --out or pass --overwrite")
    run = find_run(results_file, best, row, manifest)
    data = rebuild_training_set(run)

    if out.exists() and overwrite:
        for sub in ("data", "generator", "synthetic"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    index = write_tree(data, data.classes, data.channels, out / "data")
    index.to_csv(out / "data" / "index.csv", index=False)
    gens = _copy_generators(run, out)
    syn_specs = _copy_synthetic(run, out)
    _write_rerun_config(run, syn_specs, out)
    info = _export_info(run, data, index, gens, syn_specs, out)
    (out / "export.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


def find_run(results_file: Path, best: pd.Series, row: pd.Series, manifest: str | None) -> ChosenRun:
    """The classifier run, GAN runs, checkpoints, manifest and synthetic folders the results row names."""
    clf_dir = locate(row["clf_run_dir"], results_file, "classifier run folder")
    if not (clf_dir / "config.json").is_file():
        raise ExportError(f"{clf_dir / 'config.json'} not found: the classifier run folder is incomplete")
    clf_config = _json(clf_dir / "config.json")
    clf_metrics = _json(clf_dir / "metrics.json") if (clf_dir / "metrics.json").is_file() else {}
    gan_dirs = [locate(d, results_file, "GAN run folder") for d in _split_paths(row["gan_run_dir"])]
    if not gan_dirs:
        raise ExportError(f"results row {row['trial_id']} (config {row['config_id']}) names no gan_run_dir")
    checkpoints = [_latest_checkpoint(d) for d in gan_dirs]
    manifest_path = _manifest_path(manifest, clf_metrics, gan_dirs, results_file)
    sources = _synthetic_sources(row, clf_metrics, results_file)
    return ChosenRun(results_file, best, row, clf_dir, clf_config, clf_metrics, gan_dirs, checkpoints, manifest_path,
                     sources)


def rebuild_training_set(run: ChosenRun):
    """The run's ClassifierData, rebuilt with the classifier's own seeded draw and checked against metrics.json.
    Torch and the classifier code are imported only here (analysis itself stays torch-free)."""
    from data_prep.errors import ConfigError, DataError, LeakageError
    from data_prep.manifest import read_manifest
    from trainables.classifier.config import classifier_config
    from trainables.classifier.data import build_classifier_data

    try:
        m = read_manifest(run.manifest_path)
        cfg = classifier_config(run.clf_config)
        spec = str(run.sources[0][0]) if len(run.sources) == 1 else [(str(d), p) for d, p in run.sources]
        data = build_classifier_data(m, cfg, spec)
    except (ConfigError, DataError, LeakageError) as exc:
        raise ExportError(f"cannot rebuild the training set of {run.clf_dir}: {exc}") from exc
    if "n_synthetic" in run.clf_metrics and int(run.clf_metrics["n_synthetic"]) != data.n_synthetic:
        raise ExportError(f"rebuilt training set has {data.n_synthetic} synthetic images but "
                          f"{run.clf_dir / 'metrics.json'} says the run used {run.clf_metrics['n_synthetic']}: "
                          f"the synthetic folder changed since")
    return data


def _copy_generators(run: ChosenRun, out: Path) -> list[dict]:
    """OUT/generator/gan_<i>/: each GAN's checkpoint (+ its config.json, metrics.json)."""
    gens = []
    for i, (d, ckpt) in enumerate(zip(run.gan_dirs, run.checkpoints)):
        g = out / "generator" / f"gan_{i}"
        g.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt, g / ckpt.name)
        for extra in ("config.json", "metrics.json"):
            if (d / extra).is_file():
                shutil.copyfile(d / extra, g / extra)
        gens.append({"run_dir": str(d), "checkpoint": (g / ckpt.name).relative_to(out).as_posix()})
    return gens


def _copy_synthetic(run: ChosenRun, out: Path) -> list[dict]:
    """OUT/synthetic/<i>/: the synthetic folders, whole; -> the classifier config's `synthetic` entries."""
    syn_specs = []
    for i, (d, p) in enumerate(run.sources):
        shutil.copytree(d, out / "synthetic" / str(i))  # same rows in the same order: the same seeded draw
        syn_specs.append({"dir": f"synthetic/{i}", "proportion": p})
    return syn_specs


def _write_rerun_config(run: ChosenRun, syn_specs: list[dict], out: Path) -> None:
    import yaml

    run_config = {"manifest": str(run.manifest_path.resolve()), "out": "rerun", "synthetic": syn_specs,
                  "classifier": run.clf_config}
    row = run.row
    header = (f"# Re-run of the chosen GAN configuration {row['config_id']} (seed {row['seed']}), exported from\n"
              f"# {run.results_file}\n"
              f"# python -m trainables.classifier --config {out / 'classifier.yaml'} [--out DIR]\n"
              f"# Relative paths are relative to this file.\n")
    (out / "classifier.yaml").write_text(header + yaml.safe_dump(run_config, sort_keys=False))


def _export_info(run: ChosenRun, data, index: pd.DataFrame, gens: list[dict], syn_specs: list[dict],
                 out: Path) -> dict:
    """export.json: what was chosen, on which validation numbers, from which results rows, and what was written."""
    best, row = run.best, run.row
    metric_cols = [c for c in best.index if c.startswith(("val_", "test_")) and not c.endswith(("_lo", "_hi"))]
    counts = index.groupby(["split", "kind"]).size()
    info = {
        "results": str(run.results_file), "config_id": row["config_id"], "arm": row["arm"],
        "chosen_by": "mean real-validation F1 over seeds (val sensitivity breaks ties), among GAN configs with the "
                     "most seeds; test metrics are reported, never used to choose",
        "n_seeds": int(best["n_seeds"]),
        "config_mean": {c: (None if pd.isna(best[c]) else float(best[c])) for c in metric_cols},
        "exported_run": {"trial_id": row["trial_id"], "seed": None if pd.isna(row["seed"]) else int(row["seed"]),
                         "val_f1": float(row["val_f1"]), "test_f1": None if pd.isna(row["test_f1"]) else float(row["test_f1"]),
                         "clf_run_dir": str(run.clf_dir)},
        "settings": {c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in
                     ("gan_loss", "gan_lr_g", "gan_lr_d", "diffaugment", "n_critic", "conditional", "feature_matching",
                      "perceptual", "synthetic_mix", "synthetic_ratio", "clf_lr", "imbalance_fix", "augment", "curation")
                     if c in row.index and not pd.isna(row[c]) and row[c] != ""},
        "classes": data.classes, "positive_class": data.classes[data.positive_label],
        "images": {f"{s}_{k}": int(counts.get((s, k), 0)) for s in SPLIT_ORDER for k in ("real", "synthetic")},
        "manifest": str(run.manifest_path.resolve()), "generators": gens, "synthetic": syn_specs,
        "rerun": f"python -m trainables.classifier --config {out / 'classifier.yaml'}",
    }
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="?", help="results.parquet of a sweep (or the folder holding it)")
    p.add_argument("--out", help="folder to write the export into (new or empty)")
    p.add_argument("--manifest", help="manifest.parquet the sweep used (default: the one its runs recorded)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--smoke-test", action="store_true", help="tiny and fast: trains a 1-epoch GAN and classifier "
                   "on 72 demo images, exports them to --out or a temporary folder that is removed")
    args = p.parse_args(argv)
    if args.smoke_test:
        return _smoke(args)
    if not (args.results and args.out):
        p.error("give RESULTS.parquet and --out DIR (or --smoke-test)")
    return _export(args)


def _smoke(args) -> int:
    import tempfile

    from analysis.smoke import smoke_sweep_folder

    with tempfile.TemporaryDirectory(prefix="export_smoke_") as tmp:
        args.results = str(smoke_sweep_folder(Path(tmp) / "sweep"))
        args.out = args.out or str(Path(tmp) / "export")
        return _export(args)


def _export(args) -> int:
    try:
        info = export(args.results, args.out, manifest=args.manifest, overwrite=args.overwrite)
    except (ResultsFileError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    im = info["images"]
    print(f"chosen on real validation: config {info['config_id']} ({info['n_seeds']} seed(s), mean val F1 "
          f"{info['config_mean'].get('val_f1', float('nan')):.4f}); exported seed {info['exported_run']['seed']}")
    print(f"train: {im['train_real']} real + {im['train_synthetic']} synthetic; val: {im['val_real']} real; "
          f"test: {im['test_real']} real  ->  {Path(args.out) / 'data'}")
    print(f"generator: {', '.join(g['checkpoint'] for g in info['generators'])}")
    print(f"re-run: {info['rerun']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
