"""Analysis of sweep results: results.parquet -> tables, figures, report. Needs no torch and no Ray."""
