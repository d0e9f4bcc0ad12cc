"""analysis/: loading results.parquet, statistics, val-based selection, Pareto front, the report.

Every parquet is built here with known numbers; no torch, no Ray, no sweep needed.
"""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import stats
from analysis.load import ResultsFileError
from analysis.report import build_report, main
from analysis.schema import ALL_COLUMNS, METRIC_NAMES
from fake_results import make_results

REPO = Path(__file__).resolve().parents[1]
IMG = '<img src="data:image/png;base64,'


def t975(n: int) -> float:
    sp = pytest.importorskip("scipy.stats")
    return float(sp.t.ppf(0.975, n - 1))


def row(config_id, arm, seed, test_f1, val_f1, *, stage="classifier", status="ok", error="", gan_loss="",
        ratio=0.0, val_sens=None, test_sens=None, **kw):
    """One classifier row; every val_/test_ metric gets a value derived from the F1 given."""
    r = {"sweep_name": "t", "trial_id": f"{config_id}-{seed}-{stage}", "stage": stage, "arm": arm,
         "config_id": config_id, "seed": seed, "status": status, "error": error, "gan_loss": gan_loss,
         "synthetic_ratio": ratio}
    for m in METRIC_NAMES:
        r[f"test_{m}"] = test_f1
        r[f"val_{m}"] = val_f1
    r["test_sensitivity"] = test_f1 if test_sens is None else test_sens
    r["val_sensitivity"] = val_f1 if val_sens is None else val_sens
    r.update(kw)
    return r


def write(tmp_path: Path, rows_or_df, name="results.parquet") -> Path:
    df = rows_or_df if isinstance(rows_or_df, pd.DataFrame) else pd.DataFrame(rows_or_df)
    p = tmp_path / name
    df.to_parquet(p, index=False)
    return p


def three_arm_rows(gan_test=(0.70, 0.74, 0.75), base_test=(0.60, 0.62, 0.64), ctrl_test=(0.66, 0.65, 0.70)):
    rows = []
    for s in range(3):
        rows.append(row("base", "baseline", s, base_test[s], 0.61))
        rows.append(row("gan_a", "gan", s, gan_test[s], 0.72, gan_loss="hinge", ratio=1.0))
        rows.append(row("cw", "class_weight", s, ctrl_test[s], 0.66))
    return rows


# ---------------------------------------------------------------- statistics
def test_headline_means_and_cis_match_hand_computation(tmp_path):
    p = write(tmp_path, three_arm_rows())
    df = analysis.load(p)
    hl = analysis.headline(df)
    f1 = hl.table.set_index("metric").loc["f1"]
    for prefix, vals in (("baseline", [0.60, 0.62, 0.64]), ("gan", [0.70, 0.74, 0.75]),
                         ("control", [0.66, 0.65, 0.70])):
        x = np.array(vals)
        half = t975(3) * x.std(ddof=1) / math.sqrt(3)
        assert f1[f"{prefix}_mean"] == pytest.approx(x.mean())
        assert f1[f"{prefix}_lo"] == pytest.approx(x.mean() - half)
        assert f1[f"{prefix}_hi"] == pytest.approx(x.mean() + half)
        assert f1[f"{prefix}_n"] == 3
    # paired by seed: the difference is the mean of the per-seed differences; without test scores (no run folders)
    # the interval is the paired t-interval over seeds, and no claim is made (no confirm phase either)
    diffs = np.array([0.70, 0.74, 0.75]) - np.array([0.60, 0.62, 0.64])
    assert f1["gan_vs_baseline"] == pytest.approx(diffs.mean())
    half_d = t975(3) * diffs.std(ddof=1) / math.sqrt(3)
    assert (f1["gan_vs_baseline_lo"], f1["gan_vs_baseline_hi"]) == (pytest.approx(diffs.mean() - half_d),
                                                                    pytest.approx(diffs.mean() + half_d))
    tests = hl.tests.set_index(["comparison", "metric"])
    assert tests.loc[("gan - baseline", "f1"), "n_paired"] == 3 and not tests["tested"].any()
    assert tests.loc[("stacked - control", "f1"), "method"] == "no test: no stacked arm in the confirm phase"
    assert hl.control.arm == "class_weight"  # results from before the tuned control: the best old control arm

    md = (build_report(p, tmp_path / "rep")).read_text()
    half = t975(3) * np.std([0.60, 0.62, 0.64], ddof=1) / math.sqrt(3)
    assert f"| F1 | 0.620 ± {half:.3f} |" in md
    csv = pd.read_csv(tmp_path / "rep" / "headline.csv").set_index("metric")
    assert csv.loc["f1", "gan_mean"] == pytest.approx(np.mean([0.70, 0.74, 0.75]))


def test_spearman_matches_scipy():
    sp = pytest.importorskip("scipy.stats")
    x, y = [3, 1, 4, 1, 5, 9, 2], [2, 7, 1, 8, 2, 8, 1]
    rho, n = stats.spearman(x, y)
    assert n == 7 and rho == pytest.approx(sp.spearmanr(x, y).statistic)
    assert math.isnan(stats.spearman([1, 2], [3, 4])[0])


def test_unpaired_seeds_are_reported_as_unpaired(tmp_path):
    rows = [row("base", "baseline", s, 0.6 + s / 100, 0.6) for s in (10, 11, 12)]
    rows += [row("g", "gan", s, 0.62 + s / 100, 0.7, gan_loss="bce", ratio=0.5) for s in (0, 1, 2)]
    md = build_report(write(tmp_path, rows), tmp_path / "rep").read_text()
    assert "**Answer: cannot be assessed.** These results record no confirm phase" in md
    comparisons = pd.read_csv(tmp_path / "rep" / "comparisons.csv")
    assert (comparisons["n_paired"] == 0).all()  # no seed has a result in both arms


# ---------------------------------------------------------------- selection and Pareto
def test_selection_uses_validation_not_test(tmp_path):
    rows = []
    for s in range(3):
        rows.append(row("base", "baseline", s, 0.60, 0.60))
        rows.append(row("val_best", "gan", s, 0.55 + s / 100, 0.80, gan_loss="hinge", ratio=1.0))   # best on val
        rows.append(row("test_best", "gan", s, 0.90 + s / 100, 0.70, gan_loss="hinge", ratio=2.0))  # best on test
        rows.append(row("cw_val", "class_weight", s, 0.50, 0.75))
        rows.append(row("os_test", "oversample", s, 0.95, 0.65))
        # tie on val F1 -> validation sensitivity decides
        rows.append(row("tie_lo_sens", "gan", s, 0.99, 0.60, gan_loss="bce", ratio=1.0, val_sens=0.5))
        rows.append(row("tie_hi_sens", "gan", s, 0.10, 0.60, gan_loss="bce", ratio=2.0, val_sens=0.9))
    p = write(tmp_path, rows)
    df = analysis.load(p)
    configs = analysis.summarize_configs(analysis.classifier_rows(df))
    hl = analysis.headline(df)
    assert hl.gan.config_id == "val_best"
    assert hl.control.config_id == "cw_val"
    per = analysis.per_loss(configs).set_index("gan_loss")
    assert per.loc["hinge", "config_id"] == "val_best"
    assert per.loc["bce", "config_id"] == "tie_hi_sens"
    md = build_report(p, tmp_path / "rep").read_text()
    assert "config `val_best`" in md
    # the val-chosen GAN is worse than baseline on test: the table shows it, and without a confirm phase the
    # report makes no claim either way
    assert hl.table.set_index("metric").loc["f1", "gan_vs_baseline"] < 0
    assert "**Answer: cannot be assessed.**" in md


def test_pareto_front_hand_example():
    df = pd.DataFrame({"name": list("ABCDEFG"),
                       "val_f1":          [0.70, 0.60, 0.50, 0.60, 0.70, np.nan, 0.40],
                       "val_sensitivity": [0.50, 0.60, 0.50, 0.60, 0.40, 0.99, 0.70]})
    # A and B/D trade off; C dominated by A; E dominated by A; F has a NaN; G has best sensitivity
    front = analysis.pareto_front(df)
    assert list(front["name"]) == ["A", "B", "D", "G"]
    assert list(analysis.pareto_mask(df)) == [True, True, False, True, False, False, True]
    # minimising the second objective flips the picture
    front_min = analysis.pareto_front(df, objectives=[("val_f1", "max"), ("val_sensitivity", "min")])
    assert list(front_min["name"]) == ["E"]  # E ties A on F1 with lower sensitivity, beats the rest on both
    assert analysis.pareto_front(df.iloc[:0]).empty
    with pytest.raises(ValueError, match="max' or 'min"):
        analysis.pareto_front(df, objectives=[("val_f1", "up")])


# ---------------------------------------------------------------- loading
def test_load_adds_missing_columns_with_types_and_errors_name_the_file(tmp_path):
    minimal = pd.DataFrame({"sweep_name": ["s"], "trial_id": ["t1"], "stage": ["classifier"], "arm": ["Baseline "],
                            "config_id": ["c"], "seed": [1.0], "status": ["OK"], "error": [None],
                            "diffaugment": ["true"], "finished_at": [1.7e9], "my_extra": [3]})
    df = analysis.load(write(tmp_path, minimal))
    assert list(df.columns[:len(ALL_COLUMNS)]) == ALL_COLUMNS and "my_extra" in df.columns
    assert df.loc[0, "arm"] == "baseline" and df.loc[0, "status"] == "ok" and df.loc[0, "error"] == ""
    assert str(df["seed"].dtype) == "Int64" and str(df["diffaugment"].dtype) == "boolean"
    assert df["test_f1"].dtype == "float64" and df["test_f1"].isna().all()
    assert df["gan_run_dir"].iloc[0] == "" and pd.api.types.is_datetime64_any_dtype(df["finished_at"])
    assert "gan_fid" in df.attrs["missing_columns"]
    # a folder holding results.parquet loads too
    assert len(analysis.load(tmp_path)) == 1

    with pytest.raises(ResultsFileError, match="nope.parquet"):
        analysis.load(tmp_path / "nope.parquet")
    bad = tmp_path / "notparquet.parquet"
    bad.write_text("hello")
    with pytest.raises(ResultsFileError, match="notparquet.parquet"):
        analysis.load(bad)
    other = write(tmp_path, pd.DataFrame({"path": ["a.png"], "label": [0]}), "manifest.parquet")
    with pytest.raises(ResultsFileError, match=r"manifest.parquet is not a results parquet.*'trial_id'"):
        analysis.load(other)
    assert main([str(other), "--out", str(tmp_path / "r")]) == 2


def test_gan_stage_metrics_are_joined_by_gan_key(tmp_path):
    rows = [row("g", "gan", 0, 0.7, 0.7, gan_loss="bce", ratio=1.0, gan_key="k0"),
            row("g", "gan", 1, 0.7, 0.7, gan_loss="bce", ratio=1.0, gan_key="k1", gan_fid=5.0),
            {"sweep_name": "t", "trial_id": "x0", "stage": "gan", "arm": "gan", "config_id": "gx", "seed": 0,
             "status": "ok", "error": "", "gan_key": "k0", "gan_fid": 30.0, "gan_run_dir": "/runs/k0"},
            {"sweep_name": "t", "trial_id": "x1", "stage": "gan", "arm": "gan", "config_id": "gx", "seed": 1,
             "status": "ok", "error": "", "gan_key": "k1", "gan_fid": 50.0, "gan_run_dir": "/runs/k1"}]
    clf = analysis.classifier_rows(analysis.load(write(tmp_path, rows))).set_index("seed")
    assert clf.loc[0, "gan_fid"] == 30.0 and clf.loc[0, "gan_run_dir"] == "/runs/k0"
    assert clf.loc[1, "gan_fid"] == 5.0  # the classifier row's own value wins


# ---------------------------------------------------------------- the report
def test_full_report_embeds_every_figure(tmp_path):
    df = make_results(losses=("bce", "hinge"), ratios=(0.5, 1.0), lrs=(2e-4,), run_root=tmp_path / "runs")
    p = write(tmp_path, df)
    out = tmp_path / "rep"
    (out).mkdir()
    (out / "stale.png").write_bytes(b"old")  # left over from an earlier run: must not linger
    main([str(p), "--out", str(out)])
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    pngs = sorted(x.name for x in out.glob("*.png"))
    assert html.count(IMG) == len(pngs)
    assert {"ratio_f1_sensitivity.png", "pareto_val.png", "quality_vs_f1.png", "gan_loss_curves.png",
            "samples_real_vs_synthetic.png", "closest_pairs_hinge.png", "closest_pairs_bce.png",
            "confusion_test.png", "roc_pr_test.png", "clf_training_curves.png"} <= set(pngs)
    for name in pngs:
        assert f"]({name})" in md
    for csv in ("headline.csv", "comparisons.csv", "configs.csv", "per_loss.csv", "pareto_val.csv",
                "failed_trials.csv", "status_counts.csv", "headline_runs.csv"):
        assert (out / csv).is_file(), csv
    assert "**" in md and "2 failed, 1 stopped" in md
    # failed/stopped trials are listed with their reasons, pipes and newlines escaped in markdown
    assert "CUDA out of memory. Tried to allocate 2.00 GiB \\| retry" in md
    assert "early-stopped by ASHA" in md and "(no reason recorded)" in md
    assert "Spearman rho" in md and not re.search(r"\bnan\b", md, re.I)
    assert "<script" not in html and "src=\"http" not in html  # self-contained


def test_missing_optional_columns_still_render(tmp_path):
    rows = []
    for s in range(3):
        for cid, arm, f1 in (("b", "baseline", 0.6), ("g", "gan", 0.65)):
            rows.append({"sweep_name": "t", "trial_id": f"{cid}{s}", "stage": "classifier", "arm": arm,
                         "config_id": cid, "seed": s, "status": "ok", "error": "",
                         "val_f1": f1 + s / 50, "test_f1": f1 + s / 40, "synthetic_ratio": 1.0 if arm == "gan" else 0})
    out = tmp_path / "rep"
    md = build_report(write(tmp_path, rows), out).read_text()
    html = (out / "report.html").read_text()
    assert html.count(IMG) == len(list(out.glob("*.png")))
    assert "n/a (no values)" in md                          # e.g. ROC-AUC column absent
    assert "No tuned classical control arm in the confirm phase" in md
    assert "Not drawn: no GAN configuration has both a FID/KID value" in md
    assert "no history.jsonl found" in md and "no preview.png found" in md
    assert "Columns absent from the results file" in md and "`gan_fid`" in md


def test_gan_run_files_missing_are_reported_not_fatal(tmp_path):
    rows = three_arm_rows()
    for r in rows:
        if r["arm"] == "gan":
            r["gan_run_dir"] = str(tmp_path / "does_not_exist")
    run = tmp_path / "run_only_preview"
    run.mkdir()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.imsave(run / "preview.png", np.random.default_rng(0).random((16, 16)), cmap="gray")
    (run / "history.jsonl").write_text('{"epoch": 0, "loss_D": 1.0}\n{"epoch": 1, "loss_D": 0.8}\n{"epoch": 2, "lo')
    rows[1]["gan_run_dir"] = "run_only_preview"  # relative to the parquet's folder
    out = tmp_path / "rep"
    md = build_report(write(tmp_path, rows), out).read_text()
    assert "samples_real_vs_synthetic.png" in md and "No real-image grid was found" in md
    assert "gan_loss_curves.png" in md  # truncated last line of history.jsonl is skipped
    assert "no quality/closest_pairs.png found" in md
    assert (out / "report.html").read_text().count(IMG) == len(list(out.glob("*.png")))


def test_single_seed_says_no_ci_instead_of_nan(tmp_path):
    rows = [row("b", "baseline", 0, 0.6, 0.6), row("g", "gan", 0, 0.7, 0.7, gan_loss="bce", ratio=1.0),
            row("c", "oversample", 0, 0.65, 0.65)]
    md = build_report(write(tmp_path, rows), tmp_path / "rep").read_text()
    assert "**Answer: cannot be assessed.**" in md
    assert "0.600 (1 seed: no CI)" in md and "+0.100 (no CI: too few seeds)" in md
    assert not re.search(r"\bnan\b", md, re.I)


def test_results_without_a_confirm_phase_are_said_plainly(tmp_path):
    p = write(tmp_path, three_arm_rows(gan_test=(0.61, 0.60, 0.66), base_test=(0.60, 0.62, 0.64)))
    md = build_report(p, tmp_path / "rep").read_text()
    assert "These results record no confirm phase" in md and "does NOT help" not in md
    # a DataFrame (e.g. from a notebook) renders the same verdict
    md_df = build_report(analysis.load(p), tmp_path / "rep_df").read_text()
    assert "These results record no confirm phase" in md_df


def test_empty_sweep_says_so(tmp_path):
    empty = pd.DataFrame({c: pd.Series([], dtype="object") for c in ALL_COLUMNS})
    md = build_report(write(tmp_path, empty), tmp_path / "rep").read_text()
    assert "holds no rows: the sweep has not finished any trial yet" in md
    no_columns = write(tmp_path, pd.DataFrame(), "bare.parquet")
    md = build_report(no_columns, tmp_path / "rep2").read_text()
    assert "holds no rows" in md


def test_failed_only_sweep_says_so_and_lists_reasons(tmp_path):
    rows = [row("g", "gan", s, np.nan, np.nan, status="failed", error=f"ValueError: boom {s}") for s in range(2)]
    rows.append(row("b", "baseline", 0, np.nan, np.nan, status="stopped", error="ASHA"))
    out = tmp_path / "rep"
    md = build_report(write(tmp_path, rows), out).read_text()
    assert "No classifier trial finished successfully: there is nothing to compare" in md
    assert "0 ok, 2 failed, 1 stopped" in md
    assert "ValueError: boom 0" in md and "ValueError: boom 1" in md and "ASHA" in md
    assert pd.read_csv(out / "failed_trials.csv").shape[0] == 3
    assert (out / "report.html").read_text().count(IMG) == len(list(out.glob("*.png"))) == 0


def test_analysis_imports_no_torch_and_no_ray():
    code = ("import sys, analysis, analysis.report, analysis.plots, analysis.verdict, analysis.document, "
            "analysis.report_figures, analysis.report_runs, analysis.runs, analysis.run_plots; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; print(bad); assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout + res.stderr


def test_best_gan_prefers_configs_rerun_with_seeds():
    """A one-seed search config with a lucky val F1 must not beat the config the sweep re-ran with seeds."""
    import pandas as pd

    from analysis.tables import select_best

    configs = pd.DataFrame([
        {"config_id": "lucky", "arm": "gan", "val_f1": 1.00, "val_sensitivity": 1.0, "n_seeds": 1},
        {"config_id": "confirmed", "arm": "gan", "val_f1": 0.90, "val_sensitivity": 0.9, "n_seeds": 3},
    ])
    assert select_best(configs, "gan")["config_id"] == "confirmed"
    assert select_best(configs.iloc[:1], "gan")["config_id"] == "lucky"  # alone, it is the best there is


def test_per_variant_table_has_a_row_per_gan_variant(tmp_path):
    """Conditioning, extra G terms and loss mixing each get their own report row (best config by val)."""
    import pandas as pd

    from analysis.report import build_report
    from analysis.tables import per_variant, summarize_configs, classifier_rows
    from analysis.load import tidy

    rows = []
    variants = [dict(conditional=False, feature_matching=0.0, synthetic_mix="single", gan_loss="bce", val=0.7),
                dict(conditional=True, feature_matching=0.0, synthetic_mix="single", gan_loss="hinge", val=0.8),
                dict(conditional=False, feature_matching=1.0, synthetic_mix="mix_losses", gan_loss="mix", val=0.6)]
    for i, v in enumerate(variants):
        for seed in range(3):
            rows.append({"sweep_name": "s", "trial_id": f"t{i}{seed}", "stage": "classifier", "arm": "gan",
                         "config_id": f"c{i}", "seed": seed, "status": "ok", "error": "", "gan_loss": v["gan_loss"],
                         "conditional": v["conditional"], "feature_matching": v["feature_matching"],
                         "synthetic_mix": v["synthetic_mix"], "synthetic_ratio": 1.0,
                         "val_f1": v["val"], "val_sensitivity": v["val"], "test_f1": v["val"] - 0.1 + 0.01 * seed,
                         "test_sensitivity": 0.5})
    df = tidy(pd.DataFrame(rows))
    pv = per_variant(summarize_configs(classifier_rows(df)))
    assert list(pv["gan_variant"]) == ["single GAN, conditional", "single GAN, minority-only",
                                       "mix of losses, minority-only, +feature matching 1"]
    pd.DataFrame(rows).to_parquet(tmp_path / "r.parquet")
    md = (build_report(tmp_path / "r.parquet", tmp_path / "rep").parent / "report.md").read_text()
    assert "## Per GAN variant" in md and "mix of losses" in md


def test_ci_of_identical_seeds_prints_zero_not_roundoff():
    from analysis.report import fci

    assert fci(0.8, 0.8 - 3.3e-16, 0.8 + 3.3e-16, 3) == "0.800 ± 0.000"
    assert fci(0.8, 0.7, 0.9, 3) == "0.800 ± 0.100"


def test_per_loss_notes_name_losses_with_no_finished_config_and_the_feature_space(tmp_path):
    df = make_results()
    df["gan_extractor"] = np.where(df["stage"] == "gan", "domain", None)
    df.loc[df["gan_loss"] == "wgan-gp", "status"] = "stopped"
    md = build_report(write(tmp_path, df), tmp_path / "rep").read_text()
    section = md[md.index("## Per GAN loss type"):md.index("## Figures")]
    assert "| wgan-gp |" not in section and "| bce |" in section
    assert "wgan-gp: tried, but every config stopped early or failed" in section
    assert "bce: tried" not in section
    assert "computed on the features of a small CNN trained on this data set's real images" in section
    md = build_report(write(tmp_path, make_results(), "plain.parquet"), tmp_path / "rep2").read_text()
    assert "tried, but every config" not in md and "computed on the features" not in md


def test_headline_uses_confirm_rows_tunes_every_arm_on_val_and_counts_failed_seeds(tmp_path):
    """Search rows (the lucky winner's own run) never enter the headline; each arm's LR is chosen on val within
    the confirm phase; the pre-registered GAN (confirm_rank 1) is the headline's even if rank 2 looks better on
    val; a failed confirm seed is counted and named, not silently dropped."""
    rows = [row("g_search", "gan", 0, 0.99, 0.99, gan_loss="hinge", ratio=1.0, sweep_phase="search",
                setup_id="G1")]
    seeds = [1000, 1001, 1002, 1003, 1004]
    for lr, val_shift in ((1e-3, 0.0), (3e-3, 0.05)):  # LR 3e-3 wins on val in every arm
        for i, s in enumerate(seeds):
            common = dict(sweep_phase="confirm", clf_lr=lr)
            rows.append(row(f"b_{lr}", "baseline", s, 0.60 + i / 100 - val_shift, 0.60 + val_shift,
                            setup_id="B", **common))
            rows.append(row(f"c_{lr}", "class_weight", s, 0.62 + i / 100, 0.62 + val_shift, setup_id="C", **common))
            failed = lr == 3e-3 and s == 1004
            rows.append(row(f"g1_{lr}", "gan", s, np.nan if failed else 0.61 + i / 100, np.nan if failed else
                            0.61 + val_shift, gan_loss="hinge", ratio=1.0, setup_id="G1", confirm_rank=1,
                            status="failed" if failed else "ok", error="RuntimeError: boom" if failed else "",
                            **common))
            rows.append(row(f"g2_{lr}", "gan", s, 0.70, 0.90, gan_loss="bce", ratio=2.0, setup_id="G2",
                            confirm_rank=2, **common))
    p = write(tmp_path, rows)
    hl = analysis.headline(analysis.load(p))
    assert hl.gan.config_id == "g1_0.003" and hl.gan.seeds_ok == seeds[:4] and hl.gan.seeds_failed == [1004]
    assert hl.baseline.config_id == "b_0.003" and hl.baseline.n_lrs == 2
    assert hl.control.config_id == "c_0.003"
    f1 = hl.table.set_index("metric").loc["f1"]
    assert f1["gan_mean"] == pytest.approx(np.mean([0.61, 0.62, 0.63, 0.64]))  # no 0.99 search run, no NaN
    t = hl.tests.set_index(["comparison", "metric"]).loc[("gan - baseline", "f1")]
    assert t["n_paired"] == 5 and t["n_as_no_help"] == 1  # the failed GAN seed counts as no help (0), not absent
    assert t["cc_n"] == 4
    md = build_report(p, tmp_path / "rep").read_text()
    assert "the GAN as searched: 1 seed(s) failed, were stopped or gated in the confirm phase, counted as no help" in md
    assert "RuntimeError: boom" in md
    assert "2 classifier LR(s) x 5 seed(s)" in md and "Caution" not in md
    assert "the test scores of the chosen runs could not be read" in md  # no run folders: no claim


def test_ratio_curve_shows_a_confirmed_mean_over_a_luckier_single_run():
    """At a ratio with a 5-seed config, the curve shows it even when a single search run there has a higher
    val F1 (that one run's luck); a ratio with single runs only shows the best of them."""
    from analysis.plots import ratio_points

    configs = pd.DataFrame([
        {"config_id": "lucky", "synthetic_ratio": 10.0, "n_seeds": 1, "val_f1": 0.99, "val_sensitivity": 1.0},
        {"config_id": "confirmed", "synthetic_ratio": 10.0, "n_seeds": 5, "val_f1": 0.95, "val_sensitivity": 0.9},
        {"config_id": "confirmed_worse", "synthetic_ratio": 10.0, "n_seeds": 5, "val_f1": 0.90, "val_sensitivity": 0.9},
        {"config_id": "a", "synthetic_ratio": 0.5, "n_seeds": 1, "val_f1": 0.80, "val_sensitivity": 0.7},
        {"config_id": "b", "synthetic_ratio": 0.5, "n_seeds": 1, "val_f1": 0.85, "val_sensitivity": 0.7},
    ])
    chosen = ratio_points(configs)
    assert list(chosen["synthetic_ratio"]) == [0.5, 10.0]
    assert list(chosen["config_id"]) == ["b", "confirmed"]
