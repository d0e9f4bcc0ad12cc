"""The comparison report: results.parquet -> report.md, self-contained report.html, PNGs, CSVs.

    python -m analysis.report RESULTS.parquet --out DIR

Sections: trial status counts; headline (baseline vs best GAN vs best classical control on real
test, chosen on real validation, mean +- 95% t-CI over seeds, bootstrap tests, a plain verdict);
per GAN loss; figures (ratio curves, validation Pareto front, image quality vs usefulness, GAN
loss curves, real vs synthetic samples, closest synthetic-real pairs); all configurations;
failed and stopped trials. Missing columns or files make a section say what is missing.
Needs pandas, pyarrow, numpy, matplotlib; no torch, no Ray.
"""
from __future__ import annotations

import argparse
import base64
import html
import math
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.load import ResultsFileError, load
from analysis.tables import (METRIC_LABELS, classifier_rows, not_ok, pareto_mask, per_loss, per_variant, status_counts,
                             summarize_configs)
from analysis.verdict import CLAIM_METRICS, fmt_p, headline
from trainables.arms import ARM_DESCRIPTIONS, ARM_LABELS

MAX_MD_ROWS = 40  # long tables are cut in the report; the CSV always has every row


# ---------------------------------------------------------------- document model
@dataclass
class Doc:
    """A report as blocks, rendered to both Markdown and HTML."""
    out: Path
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, df: pd.DataFrame, csv_name: str | None = None, max_rows: int = MAX_MD_ROWS):
        note = ""
        if len(df) > max_rows:
            note = f"Showing {max_rows} of {len(df)} rows" + (f"; all rows in `{csv_name}`." if csv_name else ".")
            df = df.head(max_rows)
        self.blocks.append(("table", df.astype(str)))
        if note:
            self.p(note)

    def image(self, path: Path, caption: str):
        self.blocks.append(("img", path, caption))

    def markdown(self) -> str:
        lines = []
        for b in self.blocks:
            if b[0] == "h":
                lines += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "ul":
                lines += [f"- {it}" for it in b[1]] + [""]
            elif b[0] == "table":
                lines += _md_table(b[1]) + [""]
            elif b[0] == "img":
                rel = b[1].relative_to(self.out) if b[1].is_relative_to(self.out) else b[1]
                lines += [f"![{b[2]}]({rel.as_posix()})", "", f"*{b[2]}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>", _CSS, "</head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                parts.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "ul":
                parts.append("<ul>" + "".join(f"<li>{_inline(it)}</li>" for it in b[1]) + "</ul>")
            elif b[0] == "table":
                df = b[1]
                head = "".join(f"<th>{e(str(c))}</th>" for c in df.columns)
                body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>"
                               for row in df.itertuples(index=False))
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{e(b[2])}\">"
                             f"<figcaption>{e(b[2])}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)


_CSS = """<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.86em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3} tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0} img{max-width:100%} figcaption{font-size:0.85em;color:#555}
code{background:#f3f3f3;padding:0 3px}
</style>"""


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** spans."""
    import re
    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)


def _md_cell(v: str) -> str:
    return v.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> list[str]:
    cols = [_md_cell(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return lines


# ---------------------------------------------------------------- formatting
def fnum(x, digits: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" if (abs(x) >= 1000 or (x != 0 and abs(x) < 1e-3)) else f"{x:.{digits}f}"


def fci(mean: float, lo: float, hi: float, n: int) -> str:
    """'0.812 ± 0.034' (95% t-CI), or a plain statement when a CI is impossible."""
    if n == 0 or not np.isfinite(mean):
        return "n/a (no values)"
    if n == 1 or not np.isfinite(lo):
        return f"{fnum(mean)} (1 seed: no CI)"
    # a half-width of float round-off (identical values over seeds) reads as 0, not "3.33e-16"
    half = (hi - lo) / 2
    return f"{fnum(mean)} ± {fnum(half) if abs(half) >= 5e-7 else fnum(0.0)}"


def fdiff(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(lo):
        return f"{mean:+.3f} (no CI: too few seeds)"
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def describe(c: pd.Series | None) -> str:
    """One-line description of a config (summary row)."""
    if c is None:
        return "none"
    arm = c["arm"]
    bits = []
    if arm == "gan":
        bits.append(f"GAN loss {c['gan_loss'] or '?'}, synthetic ratio {fnum(c['synthetic_ratio'], 3)}")
        if np.isfinite(c.get("gan_lr_g", np.nan)):
            bits.append(f"lr_G {fnum(c['gan_lr_g'])}, lr_D {fnum(c['gan_lr_d'])}")
    else:
        bits.append(ARM_DESCRIPTIONS.get(arm, arm))
    if np.isfinite(c.get("clf_lr", np.nan)):
        bits.append(f"classifier lr {fnum(c['clf_lr'])}")
    return (", ".join(bits) + f" (config `{c['config_id']}`, {int(c['n_seeds'])} seed(s), "
            f"val F1 {fnum(c['val_f1'])}, val sensitivity {fnum(c['val_sensitivity'])})")


def resolve_dir(value: str, base: Path) -> Path | None:
    if not value:
        return None
    # a mixed-loss config lists its member GANs' run dirs joined by ";": show the first member
    p = Path(value.split(";")[0])
    if p.is_absolute():
        return p
    return base / p if (base / p).exists() else p


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


# ---------------------------------------------------------------- the report
def build_report(results: str | Path | pd.DataFrame, out: str | Path) -> Path:
    """Write report.md, report.html, PNGs and CSVs into `out`; returns the report.md path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # a re-run must not leave figures the new report does not embed
        old.unlink()
    if isinstance(results, pd.DataFrame):
        from analysis.load import tidy
        df = tidy(results)
        source, base, missing = "(DataFrame)", Path.cwd(), list(results.attrs.get("missing_columns", []))
    else:
        df = load(results)
        source, base, missing = df.attrs["source"], Path(df.attrs["source"]).parent, df.attrs["missing_columns"]

    doc = Doc(out)
    sweeps = sorted(s for s in df["sweep_name"].unique() if s)
    title = "GAN augmentation sweep report" + (f": {', '.join(sweeps)}" if sweeps else "")
    doc.h(1, title)
    doc.p(f"Source: `{source}`. Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.")

    # ---- status counts (at the top, nothing silently dropped)
    doc.h(2, "Trial status")
    counts = status_counts(df)
    counts.to_csv(out / "status_counts.csv", index=False)
    bad = not_ok(df)
    n_trials = df["trial_id"].nunique()
    if df.empty:
        doc.p("**The results file holds no rows: the sweep has not finished any trial yet.** "
              "Nothing to compare.")
    else:
        st = df["status"].value_counts()
        doc.p(f"{len(df)} rows from {n_trials} trial(s): **{int(st.get('ok', 0))} ok, {int(st.get('failed', 0))} failed, "
              f"{int(st.get('stopped', 0))} stopped**" +
              (f", {int(len(df) - st.get('ok', 0) - st.get('failed', 0) - st.get('stopped', 0))} with another status"
               if set(st.index) - {"ok", "failed", "stopped"} else "") +
              ". Failed and stopped trials are listed with their reasons at the end.")
        doc.table(counts)

    clf = classifier_rows(df)
    configs = summarize_configs(clf)
    configs.to_csv(out / "configs.csv", index=False)
    if not df.empty and clf.empty:
        doc.p("**No classifier trial finished successfully: there is nothing to compare.** "
              f"({len(bad)} row(s) failed or were stopped; see the list below.)")

    # ---- headline
    doc.h(2, "Headline: does GAN augmentation help on real test data?")
    if configs.empty:
        doc.p("No successful classifier results, so no headline table.")
        hl = None
    else:
        hl = headline(df)
        hl.table.to_csv(out / "headline.csv", index=False)
        hl.tests.to_csv(out / "comparisons.csv", index=False)
        doc.bullets(hl.messages)
        _headline_tables(doc, hl)
        doc.bullets(hl.context)

    # ---- per loss
    doc.h(2, "Per GAN loss type (exploratory)")
    pl = per_loss(configs) if not configs.empty else pd.DataFrame()
    if pl.empty:
        doc.p("No successful GAN-augmented configurations with validation metrics.")
    else:
        pl.to_csv(out / "per_loss.csv", index=False)
        gan_missing = [c for c in ("gan_fid", "gan_kid", "gan_memorised_fraction") if pl[c].isna().all()]
        doc.table(pd.DataFrame({
            "Loss": pl["gan_loss"], "Configs tried": pl["n_configs"].astype(int),
            "Best config (by val F1)": pl["config_id"],
            "Ratio": pl["synthetic_ratio"].map(lambda x: fnum(x, 3)),
            "lr_G / lr_D": [f"{fnum(a)} / {fnum(b)}" for a, b in zip(pl["gan_lr_g"], pl["gan_lr_d"])],
            "Seeds": pl["n_seeds"].astype(int),
            "Val F1": pl["val_f1"].map(fnum), "Val sens.": pl["val_sensitivity"].map(fnum),
            "Test F1": [fci(m, l, h, n) for m, l, h, n in zip(pl["test_f1"], pl["test_f1_lo"], pl["test_f1_hi"], pl["n_seeds"])],
            "Test sens.": [fci(m, l, h, n) for m, l, h, n in zip(pl["test_sensitivity"], pl["test_sensitivity_lo"],
                                                                 pl["test_sensitivity_hi"], pl["n_seeds"])],
            "Test ROC-AUC": pl["test_roc_auc"].map(fnum),
            "FID": pl["gan_fid"].map(fnum), "KID": pl["gan_kid"].map(lambda x: fnum(x, 4)),
            "Memorised fraction": pl["gan_memorised_fraction"].map(fnum)}), "per_loss.csv")
        flagged = pl[pl["gan_memorised_fraction"] > 0]
        notes = [f"{r['gan_loss']}: {r['gan_memorised_fraction']:.1%} of audited synthetic images were flagged as "
                 f"near-copies of training images (privacy risk in medical data)." for _, r in flagged.iterrows()]
        if gan_missing:
            notes.append("Not in the results: " + ", ".join(gan_missing) + " (shown as n/a).")
        notes += _loss_notes(df, pl)
        doc.bullets(notes)

    # ---- per variant (conditioning, extra G terms, mixing)
    pv = per_variant(configs) if not configs.empty else pd.DataFrame()
    if not pv.empty and pv["gan_variant"].nunique() > 1:
        doc.h(2, "Per GAN variant (exploratory)")
        pv.to_csv(out / "per_variant.csv", index=False)
        doc.table(pd.DataFrame({
            "Variant": pv["gan_variant"], "Configs tried": pv["n_configs"].astype(int),
            "Best config (by val F1)": pv["config_id"], "Loss": pv["gan_loss"],
            "Ratio": pv["synthetic_ratio"].map(lambda x: fnum(x, 3)), "Seeds": pv["n_seeds"].astype(int),
            "Val F1": pv["val_f1"].map(fnum), "Val sens.": pv["val_sensitivity"].map(fnum),
            "Test F1": [fci(m, l, h, n) for m, l, h, n in zip(pv["test_f1"], pv["test_f1_lo"], pv["test_f1_hi"],
                                                              pv["n_seeds"])],
            "Test sens.": [fci(m, l, h, n) for m, l, h, n in zip(pv["test_sensitivity"], pv["test_sensitivity_lo"],
                                                                 pv["test_sensitivity_hi"], pv["n_seeds"])],
            "KID": pv["gan_kid"].map(lambda x: fnum(x, 4))}), "per_variant.csv")
        doc.p("Variants: one GAN or an equal mix of one GAN per loss; a GAN of the minority class only or one "
              "class-conditional GAN over all classes; optional feature-matching / perceptual terms in G's loss.")

    # ---- figures
    doc.h(2, "Figures")
    _figures(doc, out, clf, configs, hl, pl, base)

    # ---- all configs
    doc.h(2, "All configurations, ranked by validation F1")
    if configs.empty:
        doc.p("None.")
    else:
        unranked = configs[configs["val_f1"].isna()]
        if len(unranked):
            doc.p(f"{len(unranked)} configuration(s) have no validation F1 and cannot be ranked or chosen: "
                  + ", ".join(f"`{c}`" for c in unranked["config_id"]) + ".")
        doc.table(pd.DataFrame({
            "Config": configs["config_id"], "Phase": configs["sweep_phase"].replace("", "n/a"),
            "Arm": configs["arm"], "Loss": configs["gan_loss"],
            "Ratio": configs["synthetic_ratio"].map(lambda x: fnum(x, 3)), "Seeds": configs["n_seeds"].astype(int),
            "Val F1": configs["val_f1"].map(fnum), "Val sens.": configs["val_sensitivity"].map(fnum),
            "Test F1": [fci(m, l, h, n) for m, l, h, n in zip(configs["test_f1"], configs["test_f1_lo"],
                                                              configs["test_f1_hi"], configs["n_seeds"])]}),
            "configs.csv")

    # ---- failures
    doc.h(2, "Failed and stopped trials")
    bad.to_csv(out / "failed_trials.csv", index=False)
    if bad.empty:
        doc.p("None: every row has status ok.")
    else:
        doc.p(f"{len(bad)} row(s) did not finish with status ok (all listed; full text in `failed_trials.csv`).")
        shown = bad.assign(error=bad["error"].map(lambda s: s if len(s) <= 300 else s[:297] + "..."),
                           synthetic_ratio=bad["synthetic_ratio"].map(lambda x: fnum(x, 3)),
                           seed=bad["seed"].map(lambda s: "" if pd.isna(s) else str(int(s))))
        doc.table(shown, "failed_trials.csv", max_rows=200)

    # ---- notes
    doc.h(2, "Notes")
    notes = ["Rows are one per trial and stage; configurations group seed repeats by `config_id` "
             "(status ok, classifier stage). Several rows for one seed are averaged first.",
             "95% CI: Student t-interval over seeds (mean ± t(0.975, n-1)·sd/√n), clipped to the metric's range. "
             "Differences: paired by seed (every arm of the confirm phase runs the same seeds); paired t-test "
             "(df = n - 1) with Holm's correction over the headline's claims; exact sign-flip test beside it. "
             "Below 3 paired seeds nothing is tested.",
             "Search-phase rows (one seed each, the runs the search chose on) appear only in the exploratory "
             "tables and figures (per loss, per variant, ratio curves, Pareto front, all configurations); the "
             "headline uses confirm-phase rows only."]
    if missing:
        notes.append("Columns absent from the results file (treated as empty): " + ", ".join(f"`{c}`" for c in missing) + ".")
    doc.bullets(notes)

    md = out / "report.md"
    md.write_text(doc.markdown())
    (out / "report.html").write_text(doc.html(title))
    return md


EXTRACTOR_NOTES = {
    "domain": "a small CNN trained on this data set's real images (extractor 'domain', the default)",
    "inception": "InceptionV3 from local weights (extractor 'inception')",
}


def _pick_text(name: str, pick) -> str:
    if pick is None:
        return f"{name}: none"
    label = f" ({ARM_LABELS.get(pick.arm, pick.arm)})" if pick.arm not in ("gan", "baseline") else ""
    seeds = f"{len(pick.seeds_ok)} seed(s) ok" + (f", {len(pick.seeds_failed)} failed or stopped"
                                                  if pick.seeds_failed else "")
    return (f"{name}{label}: {describe(pick.summary) if 'arm' in pick.summary else pick.config_id}; "
            f"LR chosen on validation among {pick.n_lrs}; {seeds}")


def _headline_tables(doc: Doc, hl) -> None:
    rows = []
    for _, r in hl.table.iterrows():
        rows.append({"Metric": METRIC_LABELS[r["metric"]] + ("" if r["metric"] in CLAIM_METRICS else " (descriptive)"),
                     "Baseline (no aug)": fci(r["baseline_mean"], r["baseline_lo"], r["baseline_hi"], r["baseline_n"]),
                     "GAN aug": fci(r["gan_mean"], r["gan_lo"], r["gan_hi"], r["gan_n"]),
                     "Best classical control": fci(r["control_mean"], r["control_lo"], r["control_hi"],
                                                   r["control_n"]),
                     "GAN - baseline": fdiff(r["improvement"], r["improvement_lo"], r["improvement_hi"]),
                     "Val: baseline / GAN / control": " / ".join(fnum(r[f"{a}_val_mean"])
                                                                 for a in ("baseline", "gan", "control"))})
    doc.table(pd.DataFrame(rows))
    doc.p("Real **test** metrics of the confirm phase (fresh seeds), mean ± half-width of the 95% t-interval over "
          "seeds, clipped to [0, 1]; the last column gives the same arms' mean real **validation** metric, on which "
          "every choice was made (test numbers never entered a choice). GAN - baseline: mean of the per-seed "
          "differences with its 95% t-interval. Only F1 and sensitivity carry claims; the other metrics are "
          "descriptive.")
    doc.bullets([_pick_text("GAN", hl.gan), _pick_text("Baseline", hl.baseline),
                 _pick_text("Best classical control", hl.control)])
    doc.h(3, "The claims and their tests")
    t = hl.tests[hl.tests["claim"]]
    doc.table(pd.DataFrame({
        "Comparison": t["comparison"], "Metric": t["metric"].map(METRIC_LABELS),
        "Mean difference": t["mean_diff"].map(lambda x: f"{x:+.3f}" if np.isfinite(x) else "n/a"),
        "95% t-CI": [f"[{a:+.3f}, {b:+.3f}]" if np.isfinite(a) else "n/a" for a, b in zip(t["ci_lo"], t["ci_hi"])],
        "Paired seeds": t["n_paired"].astype(int),
        "Paired t p": t["p_value"].map(fmt_p), "Holm p": t["p_holm"].map(fmt_p),
        "Sign-flip p (floor)": [f"{fmt_p(p)} ({f:.3g})" if np.isfinite(p) else "n/a"
                                for p, f in zip(t["p_sign_flip"], t["p_floor"])],
        "Verdict": t["verdict"], "Method": t["method"]}), "comparisons.csv")
    doc.p("A claim is made when the Holm-adjusted paired t-test p-value is below 0.05 (family: F1 and sensitivity "
          "x GAN vs baseline and vs the best control). The exact sign-flip p-value needs no normality but can never "
          "fall below its floor 2/2^n: with 3 seeds 0.25, with 5 seeds 0.0625; it is a check, not the claim.")


def _loss_notes(df: pd.DataFrame, pl: pd.DataFrame) -> list[str]:
    """What the per-loss table cannot show: losses tried whose every config stopped or failed, and the feature
    space FID/KID live in (a domain CNN's numbers rank GANs within a sweep, not against published values)."""
    notes = []
    gan = df[(df["arm"] == "gan") & (df["stage"] == "classifier")] if {"arm", "stage"} <= set(df.columns) else df[:0]
    unfinished = sorted(set(gan["gan_loss"].dropna()) - set(pl["gan_loss"])) if "gan_loss" in gan else []
    if unfinished:
        notes.append(f"{', '.join(unfinished)}: tried, but every config stopped early or failed (listed at the "
                     "end), so no row above.")
    refs = set(df["gan_kid_reference"].dropna()) - {""} if "gan_kid_reference" in df.columns else set()
    if "train" in refs:
        notes.append("FID/KID of some GANs were measured against the real TRAINING images (`gan_kid_reference` = "
                     "train), because validation held too few minority images for a reference: such values reward "
                     "memorisation, so the sweep did not prune GANs on them (ASHA off).")
    elif refs == {"val"}:
        notes.append("FID/KID (and the KID that ASHA pruned on) were measured against real VALIDATION minority "
                     "images, never the training images the GANs fit; the memorisation audit uses the training images.")
    used = sorted(df["gan_extractor"].dropna().unique()) if "gan_extractor" in df.columns else []
    if used:
        what = " and ".join(EXTRACTOR_NOTES.get(e, f"extractor {e!r}") for e in used)
        notes.append(f"FID and KID are computed on the features of {what}. They rank the GANs of this sweep; "
                     "only Inception-space values compare with published FID/KID.")
    return notes


def _figures(doc: Doc, out: Path, clf, configs, hl, pl, base: Path):
    if configs.empty:
        doc.p("No successful classifier results, so no figures.")
        return

    doc.h(3, "Real-test F1 and sensitivity vs synthetic ratio")
    path, why = plots.ratio_curves(configs, out / "ratio_f1_sensitivity.png")
    if path:
        doc.image(path, "Real-test F1 and sensitivity vs synthetic ratio per GAN loss (config chosen on validation "
                        "at each ratio; band = 95% t-CI over seeds); horizontal lines: baseline and best controls.")
    else:
        doc.p(f"Not drawn: {why}.")

    doc.h(3, "F1 vs sensitivity Pareto front (validation)")
    path, why = plots.pareto_plot(configs, out / "pareto_val.png")
    if path:
        doc.image(path, "Validation F1 vs validation sensitivity, one point per configuration; ringed points are "
                        "Pareto-optimal (no other configuration is better in both).")
        front = configs[pareto_mask(configs)].sort_values("val_f1", ascending=False)
        front.to_csv(out / "pareto_val.csv", index=False)
        doc.table(pd.DataFrame({"Config": front["config_id"], "Arm": front["arm"], "Loss": front["gan_loss"],
                                "Ratio": front["synthetic_ratio"].map(lambda x: fnum(x, 3)),
                                "Val F1": front["val_f1"].map(fnum), "Val sens.": front["val_sensitivity"].map(fnum),
                                "Test F1": front["test_f1"].map(fnum),
                                "Test sens.": front["test_sensitivity"].map(fnum)}), "pareto_val.csv")
    else:
        doc.p(f"Not drawn: {why}.")

    doc.h(3, "Does image quality predict usefulness?")
    path, why, rhos = plots.quality_vs_usefulness(configs, out / "quality_vs_f1.png")
    if path:
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
    else:
        doc.p(f"Not drawn: {why}.")

    # chosen GAN runs: the best per loss (the best overall is one of them)
    chosen = []
    if hl is not None and hl.gan is not None and "gan_loss" in hl.gan.summary:
        g = hl.gan.summary
        chosen.append((f"{g['gan_loss']} (the headline's GAN)", g["config_id"], g["gan_loss"]))
    for _, r in (pl.iterrows() if not pl.empty else []):
        if not chosen or r["config_id"] != chosen[0][1]:
            chosen.append((f"{r['gan_loss']} (best for this loss)", r["config_id"], r["gan_loss"]))
    chosen = chosen[:4]
    dirs = {cid: run_dirs(clf, cid, base) for _, cid, _ in chosen}

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
        doc.p(f"Not drawn: {why if chosen else 'no GAN configuration was chosen'}.")
    if missing and runs:
        doc.p("No history.jsonl for: " + "; ".join(missing) + ".")

    doc.h(3, "Real vs synthetic samples")
    panels, real = [], None
    for label, cid, loss in chosen:
        for _, d in dirs[cid]:
            real = real or plots.find_real_grid(d)
            if (d / "preview.png").is_file():
                panels.append((f"synthetic: {label}", d / "preview.png"))
                break
    if panels:
        imgs = ([("real training images", real)] if real else []) + panels
        path, why = plots.side_by_side(imgs, out / "samples_real_vs_synthetic.png")
        doc.image(path, "Real vs synthetic minority-class samples (preview.png of the chosen GAN runs).")
        if real is None:
            doc.p("No real-image grid was found next to the GAN runs (looked for "
                  + ", ".join(plots.REAL_GRID_NAMES[:3]) + ", ...); only synthetic samples are shown.")
    else:
        doc.p("Not drawn: no preview.png found in the chosen GAN runs' folders"
              + ("" if chosen else " (no GAN configuration was chosen)") + ".")

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


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    ap.add_argument("results", help="results.parquet written by the sweep (or the folder holding it)")
    ap.add_argument("--out", required=True, help="output folder for report.md, report.html, PNGs, CSVs")
    args = ap.parse_args(argv)
    try:
        md = build_report(args.results, args.out)
    except ResultsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {md} and {md.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
