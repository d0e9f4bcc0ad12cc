"""Analysis of sweep results: results.parquet -> tables, figures, report. Needs no torch and no Ray.

    import analysis
    df = analysis.load("runs/sweep/results.parquet")          # tidy, every contract column present
    configs = analysis.summarize_configs(analysis.classifier_rows(df))
    analysis.pareto_front(configs)                             # val F1 vs val sensitivity
    analysis.build_report("runs/sweep/results.parquet", "runs/sweep/report")

CLI: python -m analysis.report RESULTS.parquet --out DIR
"""
from analysis.load import ResultsFileError, load, tidy
from analysis.stats import holm, mean_ci, paired_test, spearman, t_quantile
from analysis.tables import (classifier_rows, not_ok, pareto_front, pareto_mask, per_loss, select_best, status_counts,
                             summarize_configs)
from analysis.verdict import confirm_rows, headline

__all__ = ["ResultsFileError", "load", "tidy", "holm", "paired_test", "mean_ci", "spearman", "t_quantile",
           "classifier_rows", "confirm_rows", "headline", "not_ok", "pareto_front", "pareto_mask", "per_loss", "select_best",
           "status_counts", "summarize_configs", "build_report"]


def build_report(results, out):
    """Write report.md/report.html/PNGs/CSVs into `out` (see analysis.report). Imported lazily so that
    `python -m analysis.report` and notebooks that only load data do not import matplotlib."""
    from analysis.report import build_report as _build
    return _build(results, out)
