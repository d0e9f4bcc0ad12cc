"""The comparison report: results.parquet -> report.md, self-contained report.html, PNGs, CSVs.

    python -m analysis.report RESULTS.parquet --out DIR
    python -m analysis.report --smoke-test [--out DIR]      # a made-up results table, in seconds

Sections: trial status counts; headline (baseline vs best GAN vs best classical control on real
test, chosen on real validation, mean +- 95% t-CI over seeds, paired tests, a plain verdict); the
headline's runs (confusion matrices, ROC / PR curves, classifier training curves, per-class metrics, from
the classifier run folders the rows name: analysis.report_runs); per GAN loss; per GAN variant; curation of the
synthetic images (when a run was curated: analysis.report_curation); figures
(ratio curves, validation Pareto front, image quality vs usefulness, GAN loss curves, real vs synthetic
samples, closest synthetic-real pairs); the exchange rate (--exchange-rate sweeps: what the synthetic set is worth
in real minority images, analysis.report_exchange); all configurations; failed and stopped trials; notes. Missing
columns or files make a section say what is missing. build_report writes one section per function below; the
document model and cell formats are in analysis.document, the figures in analysis.report_figures, the verdict
in analysis.verdict.
Needs pandas, pyarrow, numpy, matplotlib; no torch, no Ray.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.document import Doc, fci, fnum
from analysis.load import ResultsFileError, load, tidy
from analysis.report_figures import figures
from analysis.report_runs import runs_section
from analysis.tables import (METRIC_LABELS, classifier_rows, not_ok, per_loss, per_variant, status_counts,
                             summarize_configs)
from analysis.report_exchange import exchange_section, without_exchange
from analysis.report_curation import curation_section
from analysis.report_external import external_section, refused_warnings
from analysis.report_headline import headline_section
from analysis.scores import RunScores

def build_report(results: str | Path | pd.DataFrame, out: str | Path) -> Path:
    """Write report.md, report.html, PNGs and CSVs into `out`; returns the report.md path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # a re-run must not leave figures the new report does not embed
        old.unlink()
    df, source, base, missing = _read(results)
    every, df = df, without_exchange(df)  # --exchange-rate rows: their own section only (analysis/report_exchange.py)
    clf = classifier_rows(df)
    configs = summarize_configs(clf)
    configs.to_csv(out / "configs.csv", index=False)
    bad = not_ok(every)

    doc = Doc(out)
    sweeps = sorted(s for s in df["sweep_name"].unique() if s)
    title = "GAN augmentation sweep report" + (f": {', '.join(sweeps)}" if sweeps else "")
    doc.h(1, title)
    doc.p(f"Source: `{source}`. Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.")
    status_section(doc, out, every, clf, bad)
    doc.bullets(refused_warnings(base))  # a leaky external set, said before any number
    hl = headline_section(doc, out, df, configs, base)
    exchange_section(doc, out, every, RunScores(base))
    external_section(doc, out, base, df)
    runs_section(doc, out, clf, hl, base)
    pl = per_loss_section(doc, out, df, configs)
    per_variant_section(doc, out, configs)
    curation_section(doc, out, df, hl, base)  # only when a run was curated (analysis.report_curation)
    doc.h(2, "Figures")
    figures(doc, out, clf, configs, hl, pl, base)
    all_configs_section(doc, configs)
    failures_section(doc, out, bad)
    notes_section(doc, missing)

    md = out / "report.md"
    md.write_text(doc.markdown())
    (out / "report.html").write_text(doc.html(title))
    return md


def _read(results: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str, Path, list[str]]:
    """-> (tidy rows, source named in the report, folder relative run paths are under, columns the file lacked)."""
    if isinstance(results, pd.DataFrame):
        return tidy(results), "(DataFrame)", Path.cwd(), list(results.attrs.get("missing_columns", []))
    df = load(results)
    return df, df.attrs["source"], Path(df.attrs["source"]).parent, df.attrs["missing_columns"]


def status_section(doc: Doc, out: Path, df: pd.DataFrame, clf: pd.DataFrame, bad: pd.DataFrame) -> None:
    """Rows per stage and status, at the top: nothing is silently dropped."""
    doc.h(2, "Trial status")
    counts = status_counts(df)
    counts.to_csv(out / "status_counts.csv", index=False)
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
    if not df.empty and clf.empty:
        doc.p("**No classifier trial finished successfully: there is nothing to compare.** "
              f"({len(bad)} row(s) failed or were stopped; see the list below.)")


def per_loss_section(doc: Doc, out: Path, df: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """The best configuration per GAN loss (+ per_loss.csv) and notes on memorisation and FID/KID; -> the table."""
    doc.h(2, "Per GAN loss type (exploratory)")
    pl = per_loss(configs) if not configs.empty else pd.DataFrame()
    if pl.empty:
        doc.p("No successful GAN-augmented configurations with validation metrics.")
        return pl
    pl.to_csv(out / "per_loss.csv", index=False)
    gan_missing = [c for c in ("gan_fid", "gan_kid", "gan_memorised_fraction") if pl[c].isna().all()]
    doc.table(pd.DataFrame({
        "Loss": pl["gan_loss"], "Configs tried": pl["n_configs"].astype(int),
        "Best config (by val F1)": pl["config_id"],
        "Ratio": pl["synthetic_ratio"].map(lambda x: fnum(x, 3)),
        "lr_G / lr_D": [f"{fnum(a)} / {fnum(b)}" for a, b in zip(pl["gan_lr_g"], pl["gan_lr_d"])],
        "Seeds": pl["n_seeds"].astype(int),
        "Val F1": pl["val_f1"].map(fnum), "Val sens.": pl["val_sensitivity"].map(fnum),
        "Test F1": _test_ci(pl, "f1"), "Test sens.": _test_ci(pl, "sensitivity"),
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
    return pl


def _test_ci(t: pd.DataFrame, metric: str) -> list[str]:
    """'mean ± half-width' cells of a test metric of summary rows (n_seeds gives the CI's n)."""
    col = f"test_{metric}"
    return [fci(m, lo, hi, n) for m, lo, hi, n in zip(t[col], t[f"{col}_lo"], t[f"{col}_hi"], t["n_seeds"])]


def per_variant_section(doc: Doc, out: Path, configs: pd.DataFrame) -> None:
    """The best configuration per GAN variant (conditioning, extra G terms, mixing); only when there are several."""
    pv = per_variant(configs) if not configs.empty else pd.DataFrame()
    if pv.empty or pv["gan_variant"].nunique() <= 1:
        return
    doc.h(2, "Per GAN variant (exploratory)")
    pv.to_csv(out / "per_variant.csv", index=False)
    doc.table(pd.DataFrame({
        "Variant": pv["gan_variant"], "Configs tried": pv["n_configs"].astype(int),
        "Best config (by val F1)": pv["config_id"], "Loss": pv["gan_loss"],
        "Ratio": pv["synthetic_ratio"].map(lambda x: fnum(x, 3)), "Seeds": pv["n_seeds"].astype(int),
        "Val F1": pv["val_f1"].map(fnum), "Val sens.": pv["val_sensitivity"].map(fnum),
        "Test F1": _test_ci(pv, "f1"), "Test sens.": _test_ci(pv, "sensitivity"),
        "KID": pv["gan_kid"].map(lambda x: fnum(x, 4))}), "per_variant.csv")
    doc.p("Variants: one GAN or an equal mix of one GAN per loss; a GAN of the minority class only or one "
          "class-conditional GAN over all classes; optional feature-matching / perceptual terms in G's loss.")


def all_configs_section(doc: Doc, configs: pd.DataFrame) -> None:
    """Every configuration, ranked by validation F1 (the full table is configs.csv)."""
    doc.h(2, "All configurations, ranked by validation F1")
    if configs.empty:
        doc.p("None.")
        return
    unranked = configs[configs["val_f1"].isna()]
    if len(unranked):
        doc.p(f"{len(unranked)} configuration(s) have no validation F1 and cannot be ranked or chosen: "
              + ", ".join(f"`{c}`" for c in unranked["config_id"]) + ".")
    doc.table(pd.DataFrame({
        "Config": configs["config_id"], "Phase": configs["sweep_phase"].replace("", "n/a"),
        "Arm": [f"{a} {e}" if a == "external" else a for a, e in
                zip(configs["arm"], configs.get("external", pd.Series("", index=configs.index)).fillna(""))],
        "Loss": configs["gan_loss"],
        "Ratio": configs["synthetic_ratio"].map(lambda x: fnum(x, 3)), "Seeds": configs["n_seeds"].astype(int),
        "Val F1": configs["val_f1"].map(fnum), "Val sens.": configs["val_sensitivity"].map(fnum),
        "Test F1": _test_ci(configs, "f1")}), "configs.csv")


def failures_section(doc: Doc, out: Path, bad: pd.DataFrame) -> None:
    """Every row that did not finish ok, with its reason (+ failed_trials.csv with the full text)."""
    doc.h(2, "Failed and stopped trials")
    bad.to_csv(out / "failed_trials.csv", index=False)
    if bad.empty:
        doc.p("None: every row has status ok.")
        return
    doc.p(f"{len(bad)} row(s) did not finish with status ok (all listed; full text in `failed_trials.csv`).")
    shown = bad.assign(error=bad["error"].map(lambda s: s if len(s) <= 300 else s[:297] + "..."),
                       synthetic_ratio=bad["synthetic_ratio"].map(lambda x: fnum(x, 3)),
                       seed=bad["seed"].map(lambda s: "" if pd.isna(s) else str(int(s))))
    doc.table(shown, "failed_trials.csv", max_rows=200)


def notes_section(doc: Doc, missing: list[str]) -> None:
    """How rows are grouped, what the intervals and tests are, and the columns the results file lacked."""
    doc.h(2, "Notes")
    notes = ["Rows are one per trial and stage; configurations group seed repeats by `config_id` "
             "(status ok, classifier stage). Several rows for one seed are averaged first.",
             "95% CI of a configuration's mean: Student t-interval over seeds (mean ± t(0.975, n-1)·sd/√n), clipped "
             "to the metric's range. The headline's intervals and tests add the sampling of the test images (a "
             "stratified bootstrap over the fixed test set, shared by every arm and seed) to the spread between "
             "seeds, with Welch-Satterthwaite degrees of freedom and Holm's correction over the four claims; below 3 "
             "paired seeds nothing is tested.",
             "Search-phase rows (one seed each, the runs the search chose on) appear only in the exploratory "
             "tables and figures (per loss, per variant, ratio curves, Pareto front, all configurations); the "
             "headline uses confirm-phase rows only."]
    if missing:
        notes.append("Columns absent from the results file (treated as empty): " + ", ".join(f"`{c}`" for c in missing) + ".")
    doc.bullets(notes)


EXTRACTOR_NOTES = {
    "domain": "a small CNN trained on this data set's real images (extractor 'domain', the default)",
    "inception": "InceptionV3 from local weights (extractor 'inception')",
}


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", help="results.parquet written by the sweep (or the folder holding it)")
    ap.add_argument("--out", help="output folder for report.md, report.html, PNGs, CSVs")
    ap.add_argument("--smoke-test", action="store_true",
                    help="tiny and fast: a report of a made-up results table (analysis/smoke.py) into --out or a "
                         "temporary folder")
    args = ap.parse_args(argv)
    if args.smoke_test:
        import tempfile

        from analysis.smoke import smoke_results

        args.results = smoke_results()
        args.out = args.out or tempfile.mkdtemp(prefix="report_smoke_")
    if args.results is None or not args.out:
        ap.error("give RESULTS.parquet and --out DIR (or --smoke-test)")
    try:
        md = build_report(args.results, args.out)
    except ResultsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {md} and {md.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
