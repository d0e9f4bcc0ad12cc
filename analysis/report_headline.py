"""The report's headline section: the verdict, the four arms on real test, the claims and what they cover
(+ headline.csv, comparisons.csv). The numbers are analysis.verdict.headline's; this module only lays them out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.claims import arm_keys, arm_text, fmt_interval, fmt_p
from analysis.decision import CLAIM_METRICS
from analysis.picks import EXTERNAL
from analysis.document import Doc, fci, fdiff, fnum
from analysis.scores import RunScores
from analysis.tables import METRIC_LABELS
from analysis.uncertainty import BOOT_METRICS
from analysis.verdict import Headline, headline
from trainables.arms import ARM_DESCRIPTIONS, CLASSICAL_CONTROLS

ARM_TITLES = {"baseline": "Baseline (no fix)", "control": "Best control (C)", "stacked": "C + GAN", "gan": "GAN"}


def title(hl: Headline, key: str) -> str:
    """A column title: the four arms', an external set's ("C + ext 'name' (secondary)"), or in a sweep without a
    GAN the first external set's in the GAN's place."""
    on_c = "C + " if hl.control is not None else ""
    if key.startswith(EXTERNAL):
        return f"{on_c}ext {key[len(EXTERNAL):]!r} (secondary)"
    if key == "stacked" and hl.primary_external:
        return f"{on_c}ext {hl.primary_external!r}"
    return ARM_TITLES[key]


def headline_section(doc: Doc, out: Path, df: pd.DataFrame, configs: pd.DataFrame, base: Path) -> Headline | None:
    """The verdict, the headline tables and what they cover (+ headline.csv, comparisons.csv)."""
    doc.h(2, "Headline: does adding GAN images help on real test data?")
    if configs.empty:
        doc.p("No successful classifier results, so no headline table.")
        return None
    hl = headline(df, scores=RunScores(base))
    hl.table.to_csv(out / "headline.csv", index=False)
    hl.tests.to_csv(out / "comparisons.csv", index=False)
    doc.bullets(hl.messages)
    _arms_table(doc, hl)
    _claims_table(doc, hl)
    doc.bullets(hl.context)
    return hl


def describe(c: pd.Series | None) -> str:
    """One-line description of a config (summary row)."""
    if c is None:
        return "none"
    arm = c["arm"]
    bits = []
    if arm == "external":
        bits.append(f"external set {c.get('external', '?')!r}, synthetic ratio {fnum(c['synthetic_ratio'], 3)}")
    if arm in ("gan", "control+gan"):
        bits.append(f"GAN loss {c['gan_loss'] or '?'}, synthetic ratio {fnum(c['synthetic_ratio'], 3)}")
        if np.isfinite(c.get("gan_lr_g", np.nan)):
            bits.append(f"lr_G {fnum(c['gan_lr_g'])}, lr_D {fnum(c['gan_lr_d'])}")
    if arm in CLASSICAL_CONTROLS:  # results from before the tuned control: one fix per arm
        bits.append(ARM_DESCRIPTIONS[arm])
    if arm in ("gan", "control+gan", "external"):  # the tuned control's settings are in its label (claims.arm_text)
        bits += [f"{k.replace('_', ' ')} {c.get(k)}" for k in ("imbalance_fix", "augment")
                 if str(c.get(k, "") or "none") != "none"]
    if np.isfinite(c.get("clf_lr", np.nan)):
        bits.append(f"classifier lr {fnum(c['clf_lr'])}")
    return (", ".join(bits) + f" (config `{c['config_id']}`, {int(c['n_seeds'])} seed(s), "
            f"val F1 {fnum(c['val_f1'])}, val sensitivity {fnum(c['val_sensitivity'])})")


def _pick_text(hl: Headline, key: str) -> str:
    pick = hl.pick(key)
    name = title(hl, key)
    if pick is None:
        return f"{name}: not in this sweep's confirm phase"
    if not pick.config_id:
        return f"{name}: every confirm run failed, was stopped or gated ({'; '.join(pick.failures[:3])})"
    label = f": {arm_text(hl, 'control')}" if pick.arm == "control" else ""
    seeds = f"{len(pick.seeds_ok)} seed(s) ok" + (f", {len(pick.seeds_failed)} failed, stopped or gated"
                                                  if pick.seeds_failed else "")
    return (f"{name}{label}: {describe(pick.summary) if 'arm' in pick.summary else pick.config_id}; "
            f"LR chosen on validation among {pick.n_lrs}; {seeds}")


def _arms_table(doc: Doc, hl: Headline) -> None:
    keys = [k for k in arm_keys(hl) if hl.pick(k) is not None]
    rows = []
    for _, r in hl.table.iterrows():
        seeds_only = hl.covers_test_images and r["metric"] not in BOOT_METRICS  # AUC, macro/weighted F1
        row = {"Metric": METRIC_LABELS[r["metric"]] + ("" if r["metric"] in CLAIM_METRICS else " (descriptive"
                                                      + ("; seeds only)" if seeds_only else ")"))}
        for k in keys:
            row[title(hl, k)] = fci(r[f"{k}_mean"], r[f"{k}_lo"], r[f"{k}_hi"], r[f"{k}_n"])
        for a, b in hl.comparisons:
            if hl.pick(a) is not None and hl.pick(b) is not None:
                row[f"{title(hl, a)} - {title(hl, b)}"] = fdiff(r[f"{a}_vs_{b}"], r[f"{a}_vs_{b}_lo"],
                                                                r[f"{a}_vs_{b}_hi"])
        row["Val: " + " / ".join(title(hl, k) for k in keys)] = " / ".join(fnum(r[f"{k}_val_mean"]) for k in keys)
        rows.append(row)
    doc.table(pd.DataFrame(rows))
    cover = ("seeds and test images (a stratified bootstrap of the test images combined with the spread between "
             "seeds)" if hl.covers_test_images else "seeds only")
    doc.p("Real **test** metrics of the confirm phase (fresh seeds), mean ± half-width of the 95% interval over "
          f"{cover}, clipped to [0, 1]; the differences are means of the per-seed differences (a failed, stopped or "
          "gated GAN seed counted as 0) with their 95% intervals; the last column gives each arm's mean real "
          "**validation** metric, on which every choice was made (test numbers never entered a choice). Only F1 and "
          "sensitivity carry claims; the other metrics are descriptive.")
    doc.bullets([_pick_text(hl, k) for k in arm_keys(hl)])


def _claims_table(doc: Doc, hl: Headline) -> None:
    doc.h(3, "The claims and their tests")
    t = hl.tests[hl.tests["claim"]]
    doc.table(pd.DataFrame({
        "Comparison": [f"{arm_text(hl, a)} vs {arm_text(hl, b)}" for a, b in zip(t["a"], t["b"])],
        "Family": ["secondary (external sets)" if f == "external" else "primary"
                   for f in t.get("family", pd.Series("primary", index=t.index))],
        "Metric": t["metric"].map(METRIC_LABELS),
        "Difference": t["mean_diff"].map(lambda x: f"{x:+.3f}" if np.isfinite(x) else "n/a"),
        "95% CI": [fmt_interval(a, b) for a, b in zip(t["ci_lo"], t["ci_hi"])],
        "Seeds (as no help)": [f"{int(n)} ({int(z)})" for n, z in zip(t["n_paired"], t["n_as_no_help"])],
        "Complete case": [f"{m:+.3f} [{fmt_interval(a, b)}]" if np.isfinite(m) else "n/a"
                          for m, a, b in zip(t["cc_mean_diff"], t["cc_lo"], t["cc_hi"])],
        "p": t["p_value"].map(fmt_p), "Holm p": t["p_holm"].map(fmt_p),
        "Verdict": t["verdict"], "Method": t["method"]}), "comparisons.csv")
    doc.p("A claim is made when its Holm-adjusted p-value is below 0.05 (family: F1 and sensitivity x C + GAN vs C, "
          "the primary question, and GAN vs baseline; each external set's two claims vs C form a second family, "
          "corrected among the external sets only and labelled secondary). The test is a t-test of the seed-averaged difference whose "
          "standard error adds the spread between seeds and the test-image term (the part of a bootstrap over the "
          "test images that the seeds share), with Welch-Satterthwaite degrees of freedom. A sensitivity gain whose "
          f"specificity is not non-inferior (margin {hl.margin:g}) is a trade-off, not a claim.")
