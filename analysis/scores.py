"""The real-test scores of classifier runs, read from their run folders for the verdict's bootstrap over test images.

    source = RunScores(base)                 # base: the results file's folder (run folders are found from there)
    got = source(records)                    # records: dicts with trial_id, clf_run_dir -> {trial_id: (is_pos, score)}
    source.missing                           # "trial_id: why" of every run whose scores could not be read

Each run folder holds test_scores.csv (row, label, score: every real test image's position in the test split, its
label and the positive class's probability, from the pass that made the run's metrics) and metrics.json (its
positive label). Runs are found as analysis.runs finds them (as named, beside the results file, or in the store).
pandas/numpy (pyarrow for store URIs).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import _read, find_dir


class RunScores:
    """Reads test scores of runs on demand (each folder once) and remembers what it could not read."""

    def __init__(self, base: Path | str | None):
        self.base = Path(base) if base is not None else None
        self.missing: list[str] = []
        self._cache: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    def __call__(self, records) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for r in records:
            tid = str(r.get("trial_id", ""))
            if tid not in self._cache:
                self._cache[tid] = self._load(tid, str(r.get("clf_run_dir", "") or ""))
            if self._cache[tid] is not None:
                out[tid] = self._cache[tid]
        return out

    def _load(self, tid: str, named: str):
        if self.base is None:
            self.missing.append(f"{tid}: the results file's folder is unknown, so its run folder cannot be found")
            return None
        folder, why = find_dir(named, self.base)
        if folder is None:
            self.missing.append(f"{tid}: run folder not found ({why})")
            return None
        try:
            table = pd.read_csv(io.BytesIO(_read(folder, "test_scores.csv")))
            positive = int(json.loads(_read(folder, "metrics.json"))["positive_label"])
        except FileNotFoundError as exc:
            self.missing.append(f"{tid}: {Path(str(exc.filename or exc)).name} missing in {folder}")
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.missing.append(f"{tid}: test scores unreadable in {folder} ({type(exc).__name__})")
            return None
        if not {"row", "label", "score"} <= set(table.columns) or table.empty:
            self.missing.append(f"{tid}: {folder}/test_scores.csv lacks row, label, score")
            return None
        table = table.sort_values("row", kind="stable")
        return table["label"].to_numpy() == positive, table["score"].to_numpy(np.float64)
