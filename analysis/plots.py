"""Figures of the report (matplotlib, Agg backend, PNG). Each function writes one PNG and returns
its path, or returns None with the reason when the data it needs is missing; none of them raises
on missing data or files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import spearman
from analysis.tables import METRIC_LABELS, pareto_mask, rank_by_val, select_best
from trainables.arms import ARM_LABELS

DPI = 110
LOSS_COLORS = {"bce": "tab:blue", "hinge": "tab:orange", "wgan-gp": "tab:green"}
EXTRA_COLORS = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
# colour and line style / marker of each arm run without a GAN (the baseline first, then the tuned control C,
# then the fixed per-fix arms older sweeps ran) and of C + GAN (a marker only: it has one ratio)
CONTROL_STYLES = {"baseline": ("black", "--"), "control": ("tab:red", "-"), "class_weight": ("tab:red", ":"),
                  "oversample": ("tab:gray", "-."), "augment": ("tab:olive", (0, (5, 2, 1, 2)))}
CONTROL_MARKERS = {"baseline": "s", "control": "P", "control+gan": "*", "class_weight": "^", "oversample": "v",
                   "augment": "D"}
# where a real-image grid may live next to a GAN run (first found wins)
REAL_GRID_NAMES = ["real_preview.png", "real.png", "real_grid.png", "samples/real.png", "samples/real_grid.png",
                   "quality/real_grid.png", "quality/real_samples.png", "quality/real.png"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def loss_color(loss: str, losses: list[str]) -> str:
    if loss in LOSS_COLORS:
        return LOSS_COLORS[loss]
    others = [l for l in losses if l not in LOSS_COLORS]
    return EXTRA_COLORS[others.index(loss) % len(EXTRA_COLORS)] if loss in others else "tab:purple"


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return path


def ratio_points(configs: pd.DataFrame) -> pd.DataFrame:
    """One config per synthetic ratio (of one GAN loss's configs), by ratio: the best on validation among those
    run with >= 2 seeds when there are any, since one run's val value beside a mean over seeds wins by luck
    (a search run's val F1 against a confirmed config's mean); else the best single run."""
    best = []
    for _, group in configs.groupby("synthetic_ratio"):
        n = pd.to_numeric(group["n_seeds"], errors="coerce") if "n_seeds" in group else pd.Series(1, index=group.index)
        many = group[n >= 2]
        best.append(rank_by_val(many if len(many) else group).iloc[0])
    return pd.DataFrame(best).sort_values("synthetic_ratio")


def ratio_curves(configs: pd.DataFrame, out: Path) -> tuple[Path | None, str]:
    """Real-test F1 and sensitivity vs synthetic ratio, one line per GAN loss (mean + 95% CI band);
    at each (loss, ratio) the config shown is the best by validation among those run with >= 2 seeds (all
    when none was); single runs are hollow and every point says its n. Baseline and the best config
    of each control arm are horizontal references."""
    gan = configs[(configs["arm"] == "gan") & configs["synthetic_ratio"].notna()] if len(configs) else configs
    if gan.empty:
        return None, "no successful GAN configurations with a synthetic_ratio"
    if gan[["test_f1", "test_sensitivity"]].isna().all().all():
        return None, "the GAN configurations have no test F1 / sensitivity values"
    plt = _plt()
    losses = sorted(gan["gan_loss"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    refs = {arm: select_best(configs, arm) for arm in CONTROL_STYLES}  # baseline, C, older per-fix controls
    ratios = sorted(gan["synthetic_ratio"].unique())
    for ax, metric in zip(axes, ("f1", "sensitivity")):
        col = f"test_{metric}"
        for loss in losses:
            g = gan[gan["gan_loss"] == loss]
            b = ratio_points(g)
            color = loss_color(loss, losses)
            ax.plot(b["synthetic_ratio"], b[col], color=color, label=f"GAN {loss or '(unknown)'}", marker="o")
            # a single run (a search-phase config: one seed, no interval) is drawn hollow and every point says
            # its n, so one lucky search run does not read like a confirmed mean
            n = pd.to_numeric(b.get("n_seeds", pd.Series(1, index=b.index)), errors="coerce").fillna(1).astype(int)
            one = (n < 2).to_numpy()
            ax.scatter(b["synthetic_ratio"][one], b[col][one], s=36, facecolor="white", edgecolor=color, zorder=3)
            ci = b[f"{col}_lo"].notna().to_numpy() & ~one  # each mean's own 95% t-CI, also where no band joins it
            ax.errorbar(b["synthetic_ratio"][ci], b[col][ci], fmt="none", ecolor=color, capsize=3, linewidth=1,
                        yerr=[(b[col] - b[f"{col}_lo"])[ci].astype(float), (b[f"{col}_hi"] - b[col])[ci].astype(float)])
            for x, y, k in zip(b["synthetic_ratio"], b[col], n):
                if np.isfinite(y):
                    ax.annotate(f"n={k}", (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7, color=color)
            if b[f"{col}_lo"].notna().any():
                ax.fill_between(b["synthetic_ratio"].astype(float), b[f"{col}_lo"].astype(float),
                                b[f"{col}_hi"].astype(float), color=color, alpha=0.15, linewidth=0)
        for arm, pick in refs.items():
            if pick is None or not np.isfinite(pick[col]):
                continue
            color, style = CONTROL_STYLES[arm]
            ax.axhline(pick[col], color=color, linestyle=style, linewidth=1.4, label=ARM_LABELS[arm])
            if arm == "baseline" and np.isfinite(pick[f"{col}_lo"]):
                ax.axhspan(pick[f"{col}_lo"], pick[f"{col}_hi"], color="black", alpha=0.06, linewidth=0)
        ax.set_xlabel("synthetic ratio (synthetic / real minority train images)")
        ax.set_ylabel(f"real test {METRIC_LABELS[metric]}")
        ax.set_title(f"Test {METRIC_LABELS[metric]} vs synthetic ratio")
        ax.set_xticks(ratios)
        ax.set_xticklabels([f"{r:g}" for r in ratios])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    fig.text(0.5, -0.14, "Lines: mean over n seeds of the config chosen on validation at each ratio (among configs "
             "run with >= 2 seeds where there are any; exploratory).\nHollow points: n = 1, a single search run, "
             "no interval. Bands: 95% t-CI (baseline band in grey).", ha="center", fontsize=8, color="dimgray")
    fig.tight_layout()
    return _save(fig, out), ""


def pareto_plot(configs: pd.DataFrame, out: Path) -> tuple[Path | None, str]:
    """Validation F1 vs validation sensitivity of every config; Pareto-optimal ones ringed and joined."""
    if configs.empty or configs[["val_f1", "val_sensitivity"]].dropna().empty:
        return None, "no configurations with both validation F1 and validation sensitivity"
    plt = _plt()
    c = configs.dropna(subset=["val_f1", "val_sensitivity"])
    mask = pareto_mask(c)
    fig, ax = plt.subplots(figsize=(7, 5))
    losses = sorted(c.loc[c["arm"] == "gan", "gan_loss"].unique())
    for loss in losses:
        g = c[(c["arm"] == "gan") & (c["gan_loss"] == loss)]
        ax.scatter(g["val_sensitivity"], g["val_f1"], s=28, color=loss_color(loss, losses), alpha=0.75,
                   label=f"GAN {loss or '(unknown)'}")
    for arm, mk in CONTROL_MARKERS.items():
        g = c[c["arm"] == arm]
        if len(g):
            color = CONTROL_STYLES.get(arm, ("tab:purple",))[0]
            ax.scatter(g["val_sensitivity"], g["val_f1"], s=48, marker=mk, color=color, label=ARM_LABELS[arm])
    front = c[mask].sort_values("val_sensitivity")
    ax.plot(front["val_sensitivity"], front["val_f1"], color="black", linewidth=1, alpha=0.6, zorder=1)
    ax.scatter(front["val_sensitivity"], front["val_f1"], s=130, facecolors="none", edgecolors="black",
               linewidths=1.4, label=f"Pareto-optimal ({len(front)})")
    ax.set_xlabel("validation sensitivity (mean over seeds)")
    ax.set_ylabel("validation F1 (mean over seeds)")
    ax.set_title("F1 vs sensitivity on real validation (one point per config)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, out), ""


def quality_vs_usefulness(configs: pd.DataFrame, out: Path) -> tuple[Path | None, str, dict]:
    """FID and KID of each GAN config vs its classifier's real-test F1, with Spearman rho (n >= 3)."""
    gan = configs[configs["arm"] == "gan"] if len(configs) else configs
    panels = [(q, lab) for q, lab in (("gan_fid", "FID (lower = closer to real)"),
                                      ("gan_kid", "KID (lower = closer to real)"))
              if len(gan) and gan[[q, "test_f1"]].dropna().shape[0] > 0]
    rhos = {}
    if not panels:
        return None, "no GAN configuration has both a FID/KID value and a test F1", rhos
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    losses = sorted(gan["gan_loss"].unique())
    for ax, (q, lab) in zip(axes[0], panels):
        d = gan.dropna(subset=[q, "test_f1"])
        for loss in losses:
            g = d[d["gan_loss"] == loss]
            if len(g):
                ax.scatter(g[q], g["test_f1"], s=30, alpha=0.8, color=loss_color(loss, losses),
                           label=f"GAN {loss or '(unknown)'}")
        rho, n = spearman(d[q], d["test_f1"])
        rhos[q] = (rho, n)
        rho_txt = f"Spearman rho = {rho:+.2f} (n = {n})" if np.isfinite(rho) else f"n = {n}: too few points for a correlation"
        ax.set_title(f"{q.replace('gan_', '').upper()} vs test F1\n{rho_txt}", fontsize=10)
        ax.set_xlabel(lab)
        ax.set_ylabel("real test F1 (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out), "", rhos


def read_history(run_dir: Path) -> pd.DataFrame | None:
    """history.jsonl of a GAN run (one JSON object per epoch); None when absent or unreadable."""
    f = run_dir / "history.jsonl"
    if not f.is_file():
        return None
    recs = []
    for line in f.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line
        if isinstance(rec, dict):
            recs.append(rec)
    if not recs:
        return None
    h = pd.DataFrame(recs)
    if "epoch" not in h.columns:
        h["epoch"] = np.arange(len(h))
    return h


def loss_curves(runs: list[tuple[str, Path, pd.DataFrame]], out: Path) -> tuple[Path | None, str]:
    """G/D losses (top) and D outputs D(x), D(G(z)) (bottom) per epoch for each chosen run."""
    if not runs:
        return None, "no history.jsonl found in the chosen GAN runs"
    plt = _plt()
    fig, axes = plt.subplots(2, len(runs), figsize=(4.6 * len(runs), 6.2), squeeze=False, sharex="col")
    for j, (label, _, h) in enumerate(runs):
        top, bot = axes[0][j], axes[1][j]
        for key, color in (("loss_D", "tab:red"), ("loss_G", "tab:blue")):
            if key in h.columns:
                top.plot(h["epoch"], pd.to_numeric(h[key], errors="coerce"), color=color, label=key)
        for key, color in (("D_x", "tab:green"), ("D_G_z", "tab:purple")):
            if key in h.columns:
                bot.plot(h["epoch"], pd.to_numeric(h[key], errors="coerce"), color=color,
                         label={"D_x": "D(x) real", "D_G_z": "D(G(z)) fake"}[key])
        top.set_title(label, fontsize=10)
        top.set_ylabel("loss")
        bot.set_ylabel("discriminator output")
        bot.set_xlabel("epoch")
        for ax in (top, bot):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out), ""


def side_by_side(images: list[tuple[str, Path]], out: Path, title: str = "") -> tuple[Path | None, str]:
    """Put existing PNG images next to each other with captions (e.g. real | synthetic)."""
    images = [(cap, p) for cap, p in images if p is not None and p.is_file()]
    if not images:
        return None, "no image files found"
    plt = _plt()
    loaded = []
    for cap, p in images:
        try:
            loaded.append((cap, plt.imread(str(p))))
        except Exception as exc:  # unreadable file: say so rather than crash
            loaded.append((f"{cap}: unreadable ({type(exc).__name__})", None))
    fig, axes = plt.subplots(1, len(loaded), figsize=(5.2 * len(loaded), 5.4), squeeze=False)
    for ax, (cap, img) in zip(axes[0], loaded):
        if img is not None:
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(cap, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, out), ""


def find_real_grid(run_dir: Path) -> Path | None:
    for name in REAL_GRID_NAMES:
        p = run_dir / name
        if p.is_file():
            return p
    return None
