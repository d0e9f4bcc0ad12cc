"""The report's "Figures" section, one function per figure: each draws its PNG (analysis.plots) into the
report's folder and adds it to the document with its caption, or says why it was not drawn.

    figures(doc, out, clf, configs, hl, pl, base)   # base: the folder relative run paths are resolved against

Ratio curves, the validation Pareto front (with its table), image quality vs usefulness, then three figures of
the chosen GAN runs (the headline's GAN and the best per loss): training curves, real vs synthetic samples and
the memorisation audit's closest pairs. Missing run files make a figure say what is missing, never raise.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.document import Doc, fnum
from analysis.tables import pareto_mask

MAX_CHOSEN_RUNS = 4  # GAN runs shown in the run figures: the headline's GAN and the best per loss


def figures(doc: Doc, out: Path, clf: pd.DataFrame, configs: pd.DataFrame, hl, pl: pd.DataFrame, base: Path) -> None:
    """Every figure of the report, in order (hl: the Headline or None; pl: the per-loss table)."""
    if configs.empty:
        doc.p("No successful classifier results, so no figures.")
        return
    ratio_figure(doc, out, configs)
    pareto_figure(doc, out, configs)
    quality_figure(doc, out, configs)
    chosen = chosen_runs(hl, pl)
    dirs = {cid: run_dirs(clf, cid, base) for _, cid, _ in chosen}
    loss_curves_figure(doc, out, chosen, dirs)
    samples_figure(doc, out, chosen, dirs)
    closest_pairs_figures(doc, out, chosen, dirs)


def _not_drawn(doc: Doc, why: str) -> None:
    doc.p(f"Not drawn: {why}.")


def ratio_figure(doc: Doc, out: Path, configs: pd.DataFrame) -> None:
    doc.h(3, "Real-test F1 and sensitivity vs synthetic ratio")
    path, why = plots.ratio_curves(configs, out / "ratio_f1_sensitivity.png")
    if not path:
        return _not_drawn(doc, why)
    doc.image(path, "Real-test F1 and sensitivity vs synthetic ratio per GAN loss (config chosen on validation "
                    "at each ratio; band = 95% t-CI over seeds); horizontal lines: baseline and best controls.")


def pareto_figure(doc: Doc, out: Path, configs: pd.DataFrame) -> None:
    """The validation Pareto front as a figure, and its configurations as a table (+ pareto_val.csv)."""
    doc.h(3, "F1 vs sensitivity Pareto front (validation)")
    path, why = plots.pareto_plot(configs, out / "pareto_val.png")
    if not path:
        return _not_drawn(doc, why)
    doc.image(path, "Validation F1 vs validation sensitivity, one point per configuration; ringed points are "
                    "Pareto-optimal (no other configuration is better in both).")
    front = configs[pareto_mask(configs)].sort_values("val_f1", ascending=False)
    front.to_csv(out / "pareto_val.csv", index=False)
    doc.table(pd.DataFrame({"Config": front["config_id"], "Arm": front["arm"], "Loss": front["gan_loss"],
                            "Ratio": front["synthetic_ratio"].map(lambda x: fnum(x, 3)),
                            "Val F1": front["val_f1"].map(fnum), "Val sens.": front["val_sensitivity"].map(fnum),
                            "Test F1": front["test_f1"].map(fnum),
                            "Test sens.": front["test_sensitivity"].map(fnum)}), "pareto_val.csv")


def quality_figure(doc: Doc, out: Path, configs: pd.DataFrame) -> None:
    """FID/KID vs test F1, and a sentence per quality measure on its Spearman correlation."""
    doc.h(3, "Does image quality predict usefulness?")
    path, why, rhos = plots.quality_vs_usefulness(configs, out / "quality_vs_f1.png")
    if not path:
        return _not_drawn(doc, why)
    doc.image(path, "GAN image quality (FID, KID; lower is better) vs the classifier's real-test F1, one point "
                    "per GAN configuration.")
    items = []
    for q, (rho, n) in rhos.items():
        name = q.replace("gan_", "").upper()
        if np.isfinite(rho):
            sign = ("better (lower) " + name + " goes with higher test F1") if rho < 0 else \
                   ("better (lower) " + name + " does not go with higher test F1")
            items.append(f"{name}: Spearman rho = {rho:+.2f} over {n} configs; {sign}.")
        else:
            items.append(f"{name}: {n} config(s) with values; a correlation needs at least 3 (or varying values).")
    doc.bullets(items)


def chosen_runs(hl, pl: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(label, config_id, gan_loss) of the GAN configs whose runs are shown: the headline's GAN first, then the
    best config per loss (the best overall is one of them), at most MAX_CHOSEN_RUNS."""
    chosen = []
    if hl is not None and hl.gan is not None and "gan_loss" in hl.gan.summary:
        g = hl.gan.summary
        chosen.append((f"{g['gan_loss']} (the headline's GAN)", g["config_id"], g["gan_loss"]))
    for _, r in (pl.iterrows() if not pl.empty else []):
        if not chosen or r["config_id"] != chosen[0][1]:
            chosen.append((f"{r['gan_loss']} (best for this loss)", r["config_id"], r["gan_loss"]))
    return chosen[:MAX_CHOSEN_RUNS]


def loss_curves_figure(doc: Doc, out: Path, chosen, dirs: dict) -> None:
    """G/D losses and D outputs per epoch of each chosen run that has a history.jsonl (its lowest such seed)."""
    doc.h(3, "GAN training curves of the chosen runs")
    runs, missing = [], []
    for label, cid, _ in chosen:
        found = None
        for seed, d in dirs[cid]:
            h = plots.read_history(d)
            if h is not None:
                found = (f"{label}\nseed {seed}" if seed is not None else label, d, h)
                break
        (runs.append(found) if found else missing.append(label))
    path, why = plots.loss_curves(runs, out / "gan_loss_curves.png")
    if path:
        doc.image(path, "GAN losses (top) and discriminator outputs (bottom) per epoch, from history.jsonl.")
    else:
        _not_drawn(doc, why if chosen else "no GAN configuration was chosen")
    if missing and runs:
        doc.p("No history.jsonl for: " + "; ".join(missing) + ".")


def samples_figure(doc: Doc, out: Path, chosen, dirs: dict) -> None:
    """A real-image grid (when one is found next to the runs) beside each chosen run's preview.png."""
    doc.h(3, "Real vs synthetic samples")
    panels, real = [], None
    for label, cid, loss in chosen:
        for _, d in dirs[cid]:
            real = real or plots.find_real_grid(d)
            if (d / "preview.png").is_file():
                panels.append((f"synthetic: {label}", d / "preview.png"))
                break
    if not panels:
        doc.p("Not drawn: no preview.png found in the chosen GAN runs' folders"
              + ("" if chosen else " (no GAN configuration was chosen)") + ".")
        return
    imgs = ([("real training images", real)] if real else []) + panels
    path, why = plots.side_by_side(imgs, out / "samples_real_vs_synthetic.png")
    doc.image(path, "Real vs synthetic minority-class samples (preview.png of the chosen GAN runs).")
    if real is None:
        doc.p("No real-image grid was found next to the GAN runs (looked for "
              + ", ".join(plots.REAL_GRID_NAMES[:3]) + ", ...); only synthetic samples are shown.")


def closest_pairs_figures(doc: Doc, out: Path, chosen, dirs: dict) -> None:
    """The memorisation audit's quality/closest_pairs.png of each chosen run, copied beside the report."""
    doc.h(3, "Memorisation audit: closest synthetic-real pairs")
    shown = 0
    for label, cid, loss in chosen:
        for _, d in dirs[cid]:
            src = d / "quality" / "closest_pairs.png"
            if src.is_file():
                dst = out / f"closest_pairs_{_safe(loss or cid)}.png"
                shutil.copyfile(src, dst)
                doc.image(dst, f"Closest synthetic-real pairs, {label.replace(chr(10), ' ')} (from `{src}`).")
                shown += 1
                break
    if not shown:
        doc.p("Not shown: no quality/closest_pairs.png found in the chosen GAN runs' folders.")


def resolve_dir(value: str, base: Path) -> Path | None:
    """A run folder a results row names: as given, relative to the results file, or moved with the sweep folder
    (a store URI's folder fetched beside the results file, as a sweep on remote storage does for its report)."""
    from analysis.export import ExportError, locate

    if not value:
        return None
    # a mixed-loss config lists its member GANs' run dirs joined by ";": show the first member
    first = value.split(";")[0]
    p = Path(first)
    if "://" not in first and not p.is_absolute() and (base / p).exists():
        return base / p
    try:
        return locate(first, base / "results.parquet", "GAN run folder")
    except ExportError:
        return None if "://" in first else p


def run_dirs(clf: pd.DataFrame, config_id: str, base: Path) -> list[tuple[int | None, Path]]:
    """Existing gan_run_dir folders of a config's rows, lowest seed first."""
    g = clf[clf["config_id"] == config_id].sort_values("seed")
    seen, out = set(), []
    for _, r in g.iterrows():
        d = resolve_dir(r["gan_run_dir"], base)
        if d is not None and d.is_dir() and d not in seen:
            seen.add(d)
            out.append((None if pd.isna(r["seed"]) else int(r["seed"]), d))
    return out


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)
