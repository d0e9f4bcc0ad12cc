"""results.parquet: one row per trial and stage, written as trials finish so an interrupted sweep keeps them.

Rows: stage "classifier" for every trial (with its GAN's metrics when it used one) and stage "gan" once
per GAN trained. Failed trials get status "failed" and the error's first lines; trials stopped by the
scheduler get status "stopped". `reconcile` fills in any finished trial the callback missed (a driver
killed between a trial's end and the write), so a resumed sweep loses nothing and repeats nothing.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from analysis.schema import ALL_COLUMNS, GAN_COLUMNS, GAN_QUALITY_COLUMNS

try:
    from ray.tune import Callback
except ImportError:  # analysis-only installs read results without Ray
    Callback = object


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


class ResultsTable:
    """Rows keyed by (trial_id, stage); every `add` rewrites the parquet atomically."""

    def __init__(self, path: str | Path, sweep_name: str, phase: str = "", store=None):
        self.path = Path(path)
        self.store = store  # a remote sweeps.storage.Store: every write is published as <sweep>/results.parquet
        self.sweep_name = sweep_name
        self.phase = phase
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.exists():  # resume: keep what earlier runs wrote
            for r in pd.read_parquet(self.path).to_dict("records"):
                self.rows[(r["trial_id"], r["stage"])] = r

    def has(self, trial_id: str, stage: str = "classifier") -> bool:
        return (trial_id, stage) in self.rows

    def add(self, row: Mapping[str, Any], stage: str, write: bool = True) -> None:
        r = {k: _clean(v) for k, v in row.items() if k != "phase"}
        r.update(stage=stage, sweep_name=self.sweep_name, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if self.phase and "sweep_phase" not in r:
            r["sweep_phase"] = self.phase
        self.rows[(str(r["trial_id"]), stage)] = r
        if stage == "classifier" and row.get("gan_trained_here") and row.get("gan_key"):
            gan_row = {k: r.get(k) for k in ("trial_id", "arm", "seed", "gan_loss", "gan_lr_g", "gan_lr_d",
                                             "diffaugment", "gan_arch", "gan_augment", "n_critic", "gan_key",
                                             "gan_run_dir", "time_gan_s",
                                             "config_id", "image_size", "channels", "sweep_phase",
                                             "setup_id", "confirm_rank", "fold", "gan_kid_reference",
                                             "gan_reference_cached", "gan_extractor", "gan_gate", "gan_gate_note")}
            gated = r.get("status") == "gated"  # the GAN trained, and failed the quality gate (sweeps.quality)
            gan_failed = (r.get("error") or "").startswith("GAN")  # trial.ensure_gan's reasons start so
            gan_row.update({c: r.get(c) for c in GAN_COLUMNS + GAN_QUALITY_COLUMNS}, stage="gan",
                           sweep_name=self.sweep_name, status="gated" if gated else "failed" if gan_failed else "ok",
                           error=r["error"] if gan_failed else "",
                           finished_at=r["finished_at"])
            self.rows[(str(r["trial_id"]), "gan")] = gan_row
        if write:
            self.write()

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(list(self.rows.values()))
        if df.empty:
            df = pd.DataFrame(columns=ALL_COLUMNS + ["sweep_phase"])
        front = [c for c in ALL_COLUMNS if c in df.columns]
        return df[front + [c for c in df.columns if c not in front]]

    def write(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.parquet")
        df = self.frame()
        for c in df.columns:  # object columns of mixed None/str/number: make parquet-safe
            if df[c].dtype == object:
                non_null = df[c].dropna()
                if len(non_null) and not all(isinstance(v, str) for v in non_null):
                    if all(isinstance(v, (int, float, bool)) for v in non_null):
                        df[c] = pd.to_numeric(df[c], errors="coerce")
                    else:
                        df[c] = df[c].astype(str)
        df.to_parquet(tmp, index=False)
        tmp.replace(self.path)
        if self.store is not None and self.store.remote:  # losing the driver's disk loses no row
            self.store.publish(self.path.name)
        return self.path


def _error_text(trial) -> str:
    try:
        err = trial.get_error()
        text = str(err) if err is not None else ""
    except Exception:
        text = ""
    if not text and getattr(trial, "error_file", None) and Path(trial.error_file).exists():
        text = Path(trial.error_file).read_text()
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # the exception line (last) says what happened; keep it plus a little context
    return " | ".join(lines[-3:])[:1000] if lines else "unknown error"


class ResultsCallback(Callback):
    """Tune callback: writes a row when a trial completes, errors, or is stopped by the scheduler."""

    def __init__(self, table: ResultsTable, trial_budget_s: float = 0.0, sweep_deadline: float = 0.0):
        self.table = table
        self.trial_budget_s = trial_budget_s  # > 0: a trial ended early past it was stopped by the time budget
        self.sweep_deadline = sweep_deadline  # > 0: time.time() at which the sweep's budget ends
        self.last: dict[str, dict] = {}

    def _stop_reason(self, last: Mapping[str, Any]) -> str:
        phase = last.get("phase", "?")
        if self.trial_budget_s and float(last.get("time_total_s") or 0) >= self.trial_budget_s:
            return f"stopped by the trial time budget ({self.trial_budget_s:g} s) during the {phase} phase"
        if self.sweep_deadline and time.time() >= self.sweep_deadline - 1:
            return f"stopped by the sweep time budget during the {phase} phase"
        return f"stopped early by the scheduler during the {phase} phase (last KID {last.get('gan_kid')})"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        prev = self.last.setdefault(trial.trial_id, {})
        prev.update({k: v for k, v in result.items() if not isinstance(v, dict)})

    def _base(self, trial) -> dict[str, Any]:
        from sweeps.space import ROW_KEYS, TRIAL_KEYS, config_id, gan_key, knob_values, setup_id

        cfg = dict(trial.config.get("trial", trial.config))
        return {**{k: cfg[k] for k in (*TRIAL_KEYS, *ROW_KEYS) if k in cfg}, **knob_values(cfg),
                "trial_id": trial.trial_id,
                "config_id": config_id(cfg), "setup_id": setup_id(cfg), "gan_key": gan_key(cfg)}

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = self.last.get(trial.trial_id, {})
        row = {**self._base(trial), **last}
        if last.get("phase") != "final":  # ended before its final report: the scheduler or a time budget stopped it
            row.update(status="stopped", error=self._stop_reason(last))
        self.table.add(row, "classifier")

    def on_trial_error(self, iteration, trials, trial, **info):
        row = {**self._base(trial), **self.last.get(trial.trial_id, {})}
        row.update(status="failed", error=_error_text(trial))
        self.table.add(row, "classifier")


def reconcile(table: ResultsTable, result_grid) -> int:
    """Add rows for finished trials the callback never wrote (e.g. the driver died in between)."""
    added = 0
    for res in result_grid:
        metrics = dict(res.metrics or {})
        trial_id = metrics.get("trial_id")
        if not trial_id or table.has(trial_id):
            continue
        cfg = metrics.get("config", {}) or {}
        cfg = cfg.get("trial", cfg)
        row = {**{k: cfg.get(k) for k in ("arm", "seed")}, **{k: v for k, v in metrics.items() if k != "config"}}
        if res.error is not None:
            row.update(status="failed", error=str(res.error).strip().splitlines()[-1][:1000])
        elif metrics.get("phase") != "final":
            row.update(status="stopped", error="stopped early by the scheduler")
        table.add(row, "classifier", write=False)
        added += 1
    if added:
        table.write()
    return added
