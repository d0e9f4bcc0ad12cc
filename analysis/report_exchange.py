"""The report's exchange-rate section (--exchange-rate sweeps): the figure of test F1 against real minority images,
with and without synthetic images, and one statement per fraction of what the synthetic set is worth in real
images (+ exchange_rate.csv, exchange_points.csv). The numbers are analysis.exchange's; this module lays them out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.document import Doc, fnum
from analysis.exchange import Exchange, exchange, without_exchange  # noqa: F401  (report.py imports it here)
from analysis.stats import mean_ci

TITLES = {"control": "C (best control)", "baseline": "baseline", "control+gan": "C + GAN", "gan": "GAN"}


def exchange_section(doc: Doc, out: Path, df: pd.DataFrame, scores=None) -> Exchange | None:
    """The section (nothing when the sweep ran no exchange phase); -> the Exchange."""
    ex = exchange(df, scores=scores)
    if ex is None:
        return None
    doc.h(2, "Exchange rate: how many real minority images is the synthetic set worth?")
    if not ex.worth:
        doc.p("No estimate: " + "; ".join(ex.notes) + ".")
        return ex
    doc.bullets([f"**{w.text()}**" for w in ex.worth])
    table = pd.DataFrame([{
        "fraction": w.fraction, "real minority images": round(w.n_real, 1), "synthetic images": round(w.n_synthetic, 1),
        "seeds": w.seeds, "seeds as no help": len(w.seeds_no_help), f"{TITLES.get(ex.curve_arm)} test F1": w.curve_f1,
        f"{TITLES.get(ex.synthetic_arm)} test F1": w.arm_f1, "worth (real images)": w.estimate, "interval lo": w.lo,
        "interval hi": w.hi, "per synthetic image": w.rate(w.estimate), "answer": w.kind} for w in ex.worth])
    table.to_csv(out / "exchange_rate.csv", index=False)
    ex.points.to_csv(out / "exchange_points.csv", index=False)
    shown = table.drop(columns=["interval lo", "interval hi"]).assign(**{c: table[c].map(fnum) for c in table.columns
                                                                        if "F1" in c})
    shown["worth (real images)"] = [f"{fnum(w.estimate, 1)} {w.interval_text()[0]}" if w.kind != "none" else "n/a"
                                    for w in ex.worth]
    shown["per synthetic image"] = [f"{fnum(w.rate(w.estimate))} {w.interval_text()[1]}" if w.kind != "none"
                                    else "n/a" for w in ex.worth]
    doc.table(shown, "exchange_rate.csv")
    path, why = exchange_plot(ex, out / "exchange_rate.png")
    if path:
        doc.image(path, f"Real-test F1 against the real minority training images the classifier had: "
                        f"{TITLES.get(ex.curve_arm)} without synthetic images (the curve the worth is read off, "
                        f"linear in log n between fractions) and {TITLES.get(ex.synthetic_arm)} at the same "
                        "subsets; small points: seeds, bars: 95% t-interval over seeds; the dotted arrows read each "
                        "fraction's arm value off the curve.")
    else:
        doc.p(f"Not drawn: {why}.")
    doc.bullets([
        f"Interval: test inversion (Fieller-style). A worth w is inside it when the per-seed paired difference "
        f"(the arm at n real images minus the same seed's curve at n + w, interpolated in log n) is not rejected "
        f"at 0.05 by the verdict's combined test; it covers {ex.method}. An end that reaches the measured curve's "
        "end is open: nothing beyond the smallest subset or all real images is claimed.",
        "Subsets: seeded per seed, patient-grouped, and nested (a seed's 0.25 subset lies inside its 0.5 one), so "
        "each seed has its own smooth curve and the seeds' spread covers which images one happens to have; the "
        "held-out minority images are removed from the training set, val and test are the same images at every "
        "fraction, every classifier takes the full data's optimizer steps, and each subset's GAN trained on that "
        "subset only. A seed whose GAN failed, stopped or was gated counts as no help (worth 0, 0 synthetic images).",
        "Coverage, checked on 200 simulated sweeps where a synthetic image is worth half a real one "
        "(tests/test_exchange.py; docs/report.md has the numbers).", *ex.notes])
    return ex


def exchange_plot(ex: Exchange, path: Path) -> tuple[Path | None, str]:
    """Test F1 vs real minority images (log axis): the curve arm, the synthetic arm, seeds, intervals, readings."""
    if ex.points.empty:
        return None, "no per-seed points"
    from analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pts = ex.points
    for col, arm, color, marker in (("curve_f1", ex.curve_arm, "tab:blue", "o"),
                                    ("arm_f1", ex.synthetic_arm, "tab:orange", "s")):
        xs, ms, los, his = [], [], [], []
        for f, g in pts.groupby("fraction"):
            ci = mean_ci(g[col].dropna(), bounds=(0.0, 1.0))
            xs.append(g["n_real"].mean())
            ms.append(ci.mean)
            los.append(ci.mean - ci.lo if np.isfinite(ci.lo) else 0.0)
            his.append(ci.hi - ci.mean if np.isfinite(ci.hi) else 0.0)
        jitter = 1.0 if col == "curve_f1" else 1.02  # the arm's marks a little to the right: both stay readable
        ax.scatter(pts["n_real"] * jitter, pts[col], color=color, alpha=0.3, s=14, marker=marker)
        ax.errorbar(np.array(xs) * jitter, ms, yerr=[los, his], color=color, marker=marker, capsize=3,
                    label=f"{TITLES.get(arm, arm)}" + (" (no synthetic images)" if col == "curve_f1" else
                                                       " (+ synthetic images)"))
    for w in ex.worth:
        if np.isfinite(w.estimate) and np.isfinite(w.arm_f1):
            ax.annotate("", xy=(w.n_real + w.estimate, w.arm_f1), xytext=(w.n_real * 1.02, w.arm_f1),
                        arrowprops=dict(arrowstyle="->", linestyle=":", color="gray"))
            ax.text(w.n_real + w.estimate, w.arm_f1, f"{w.estimate:+.0f}", ha="center", va="bottom", fontsize=8,
                    color="gray")
    ax.set_xscale("log")
    ns = sorted(pts.groupby("fraction")["n_real"].mean())
    ax.set_xticks(ns)
    ax.set_xticklabels([f"{n:.0f}" for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("real minority training images (log scale)")
    ax.set_ylabel("real-test F1")
    ax.set_title("What the synthetic set is worth in real images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path), ""


def console_lines(df: pd.DataFrame, scores=None) -> list[str]:
    """The sweep's closing answer: one line per fraction (nothing without an exchange phase)."""
    ex = exchange(df, scores=scores)
    if ex is None:
        return []
    if not ex.worth:
        return ["exchange rate: no estimate (" + "; ".join(ex.notes) + ")"]
    return [f"exchange rate ({ex.method.split(' (')[0]}):"] + [f"  {line}" for line in ex.lines()]
