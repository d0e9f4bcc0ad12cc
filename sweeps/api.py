"""The sweep from Python (a notebook, a script): the same run as `python sweeps/augment_ratio.py`, with the same
settings, returning what it found.

    from sweeps import run_sweep
    out = run_sweep("sweeps/configs/skin_lesion_64.yaml", smoke_test=True, storage_path="runs")  # or a dict,
    out.headline.messages[0]          # the answer line                                     # a SweepConfig, None
    out.results                       # results.parquet as a DataFrame (analysis.load: every column typed)
    out.report                        # report.html's path (None with report=False)

Overrides are SweepConfig field names (the flags without dashes); they win over the config, as flags win over a
YAML file. The analysis of an existing results file is `import analysis` (analysis/__init__.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from sweeps.config import SweepConfig, load_yaml


@dataclass
class SweepOutcome:
    """What a sweep left: its exit status (0 ok, 2 refused input), folder, rows, headline and report."""
    status: int
    work_dir: Path | None        # the sweep's local folder (results.parquet, report/, sweep_state.json)
    results: pd.DataFrame | None  # every row, failed and stopped included (analysis.load)
    headline: Any                # analysis.decision.Headline: .messages[0] is the answer line; None if no rows
    report: Path | None          # report/report.html, when written

    @property
    def answer(self) -> str:
        return self.headline.messages[0] if self.headline is not None and self.headline.messages else ""


def _values(config: SweepConfig | Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, SweepConfig):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return dict(config)
    return load_yaml(str(config))


def run_sweep(config: SweepConfig | Mapping[str, Any] | str | Path | None = None, *, report: bool = True,
              verbose: bool = False, **overrides: Any) -> SweepOutcome:
    """Run the sweep. config: a SweepConfig, a dict of its fields, a YAML path, or None (the defaults, the demo
    data); overrides: SweepConfig fields, applied last (smoke_test=True shrinks what they do not set). Errors in
    the input (no data, a bad setting, patients across splits) raise ValueError with the reason."""
    from sweeps import augment_ratio

    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(SweepConfig)})
    if unknown:
        raise TypeError(f"run_sweep got unknown setting(s) {unknown}: use SweepConfig's field names")
    err = io.StringIO()
    with contextlib.redirect_stderr(_Tee(err, sys.stderr)):
        status, work = augment_ratio.run(_values(config), {**overrides, "no_report": not report, "verbose": verbose})
    if status != 0:
        raise ValueError(err.getvalue().strip().removeprefix("error: ") or f"the sweep exited with {status}")
    return outcome(work, status)


def outcome(work: Path, status: int = 0) -> SweepOutcome:
    """A finished sweep's folder -> its rows, headline and report (also for a sweep run from the command line)."""
    import analysis
    from analysis.scores import RunScores

    results = Path(work) / "results.parquet"
    df = analysis.load(results) if results.is_file() else None
    h = analysis.headline(df, scores=RunScores(Path(work))) if df is not None and len(df) else None
    html = Path(work) / "report" / "report.html"
    return SweepOutcome(status, Path(work), df, h, html if html.is_file() else None)


class _Tee(io.TextIOBase):
    """stderr kept for the error message and still shown."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()
