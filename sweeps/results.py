"""results.parquet: one row per trial and stage, written as trials finish so an interrupted sweep keeps them.

Rows: stage "classifier" for every trial (with its GAN's metrics when it used one) and stage "gan" once
per GAN key: from the trial that trained it, or, when that trial's row was lost (its driver died after the
GAN was done), from the first trial that reused it. Failed trials get status "failed" and the error's first
lines; trials stopped by the scheduler get status "stopped". `reconcile` fills in any finished trial the
callback missed (a driver killed between a trial's end and the write), so a resumed sweep loses nothing and
repeats nothing.

Cost per trial end is O(new rows), not O(all rows): each trial end writes its rows as one small part file,
results.parts/<time>.json (and, with remote storage, publishes that part); results.parquet itself is
rewritten from all rows (and the parts deleted) once the rows in parts reach COMPACT_SHARE of the rows in it
(so rewrites cost O(1) per row, amortised), at the end of each Tune run and at the end of the sweep. Crash
guarantees are unchanged: a row is on disk (and in the store) when its trial's callback returns;
results.parquet + results.parts/ is the table (analysis.load.read_table reads both).

Callbacks never raise: a store error leaves the table dirty (its rows are safe on the driver's disk), the next
trial end publishes what is missing, and the end of the sweep flushes; Tune never sees the error, so a
finished trial is never marked failed or re-run because of the store.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from analysis.load import PARTS, part_files, read_table, row_keys
from analysis.schema import ALL_COLUMNS, GAN_COLUMNS, GAN_QUALITY_COLUMNS

try:
    from ray.tune import Callback
except ImportError:  # analysis-only installs read results without Ray
    Callback = object

COMPACT_SHARE = 0.25  # results.parquet is rewritten once the rows in parts reach this share of the rows in it
DIRTY_RETRY_S = 30.0  # after a store error, results go to the store again no sooner than this
GAN_ROW_KEYS = ("trial_id", "arm", "seed", "gan_loss", "gan_lr_g", "gan_lr_d", "diffaugment", "gan_arch", "gan_augment",
                "n_critic", "gan_key", "gan_run_dir", "time_gan_s", "config_id", "image_size", "channels", "sweep_phase",
                "setup_id", "confirm_rank", "fold", "gan_kid_reference", "gan_reference_cached", "gan_extractor",
                "gan_gate", "gan_gate_note", "label_smoothing", "minority_fraction", "n_train_positive")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns of mixed None/str/number made writable as parquet."""
    for c in df.columns:
        if df[c].dtype == object:
            non_null = df[c].dropna()
            if len(non_null) and not all(isinstance(v, str) for v in non_null):
                if all(isinstance(v, (int, float, bool)) for v in non_null):
                    df[c] = pd.to_numeric(df[c], errors="coerce")
                else:
                    df[c] = df[c].astype(str)
    return df


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.parquet")
    parquet_safe(df).to_parquet(tmp, index=False)
    tmp.replace(path)


def _plain(v: Any) -> Any:
    """A JSON value for a row value (numpy scalars and the like: their Python value; else text)."""
    return v.item() if hasattr(v, "item") else str(v)


def write_part(rows: list[dict[str, Any]], folder: Path) -> Path:
    """Rows as one part file, written atomically (a JSON list: a trial end's write is O(its rows))."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.time_ns():020d}.json"
    tmp = folder / f".{path.stem}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps([{k: _clean(v) for k, v in r.items()} for r in rows], default=_plain))
    tmp.replace(path)
    return path


class ResultsTable:
    """Rows keyed by (trial_id, stage) ("gan" rows by their GAN key); `add` writes a part, `write` the whole file."""

    def __init__(self, path: str | Path, sweep_name: str, phase: str = "", store=None):
        self.path = Path(path)
        self.parts = self.path.parent / PARTS
        self.store = store  # a remote sweeps.storage.Store: parts and results.parquet are published to it
        self.sweep_name = sweep_name
        self.phase = phase
        self.rows: dict[str, dict[str, Any]] = {}
        self.pending: list[dict[str, Any]] = []  # rows added with write=False, not yet in a part
        self.published: set[str] = set()  # part files already in the store
        self.dirty = False  # the store lacks rows this table holds (a store error): the whole table is published next
        self.retry_at = 0.0  # monotonic time before which a dirty table does not try the store again
        self.in_file, self.in_parts = 0, 0  # rows in results.parquet at its last rewrite; rows written since
        if self.path.exists() or self.parts.is_dir():  # resume: keep what earlier runs wrote
            df = read_table(self.path)
            for k, r in zip(row_keys(df), df.to_dict("records")) if len(df) else ():
                self.rows[k] = r
            self.in_file = len(self.rows)

    def has(self, trial_id: str, stage: str = "classifier") -> bool:
        return f"{trial_id}|{stage}" in self.rows

    def add(self, row: Mapping[str, Any], stage: str, write: bool = True) -> None:
        r = {k: _clean(v) for k, v in row.items() if k != "phase"}
        r.update(stage=stage, sweep_name=self.sweep_name, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if self.phase and "sweep_phase" not in r:
            r["sweep_phase"] = self.phase
        self.rows[f"{r['trial_id']}|{stage}"] = r
        self.pending.append(r)
        gan_row = self._gan_row(r) if stage == "classifier" else None
        if gan_row is not None:
            self.rows[f"gan|{gan_row['gan_key']}"] = gan_row
            self.pending.append(gan_row)
        if write:
            self.save()

    def _gan_row(self, r: dict[str, Any]) -> dict[str, Any] | None:
        """The "gan" row a classifier row brings: its trainer's, or a reuser's when the key has none yet."""
        key = r.get("gan_key")
        if not key or not (r.get("gan_trained_here") or (
                f"gan|{key}" not in self.rows and r.get("gan_run_dir") and r.get("gan_loss") != "mix")):
            return None
        gan_row = {k: r.get(k) for k in GAN_ROW_KEYS}
        gated = r.get("status") == "gated"  # the GAN trained, and failed the quality gate (sweeps.quality)
        gan_failed = (r.get("error") or "").startswith("GAN")  # trial.ensure_gan's reasons start so
        gan_row.update({c: r.get(c) for c in GAN_COLUMNS + GAN_QUALITY_COLUMNS}, stage="gan", sweep_name=self.sweep_name,
                       status="gated" if gated else "failed" if gan_failed else "ok",
                       error=r["error"] if gan_failed else "",
                       finished_at=r["finished_at"])
        return gan_row

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(list(self.rows.values()))
        if df.empty:
            df = pd.DataFrame(columns=ALL_COLUMNS + ["sweep_phase"])
        front = [c for c in ALL_COLUMNS if c in df.columns]
        return df[front + [c for c in df.columns if c not in front]]

    def save(self) -> None:
        """The rows added since the last save, as one part file (and in the store); results.parquet rewritten
        when the parts hold COMPACT_SHARE of the rows in it, or the store missed rows."""
        if self.pending:
            write_part(self.pending, self.parts)
            self.in_parts += len(self.pending)
            self.pending = []
        if (self.dirty and self._store_due()) or self.in_parts >= max(1.0, COMPACT_SHARE * self.in_file):
            self.write(flush=False)
        elif self._store_due():
            self._publish_parts()

    def _remote(self) -> bool:
        return self.store is not None and self.store.remote

    def _store_due(self) -> bool:
        """Remote, and not inside the pause after a store error (each try may wait out its retries)."""
        return self._remote() and time.monotonic() >= self.retry_at

    def _publish_parts(self) -> None:
        try:
            for p in part_files(self.parts):
                if p.name not in self.published:
                    self.store.publish(f"{PARTS}/{p.name}", record=False)
                    self.published.add(p.name)
        except Exception as exc:  # the rows are on this disk; a later save or the end of the sweep retries
            self._store_failed(exc)

    def _store_failed(self, exc: Exception) -> None:
        if not self.dirty:
            warn(f"results not published to {self.store.uri()} yet ({type(exc).__name__}: {exc}); they are safe in "
                 f"{self.path.parent} and published at a later trial end or at the end of the sweep")
        self.dirty, self.retry_at = True, time.monotonic() + DIRTY_RETRY_S

    def write(self, flush: bool = True) -> Path:
        """results.parquet from every row (atomically) and in the store (flush=False: unless the store failed
        moments ago); the parts it holds are then deleted. -> its local path."""
        _write_atomic(self.frame(), self.path)
        self.pending, self.in_file, self.in_parts = [], len(self.rows), 0
        local_parts = part_files(self.parts)
        if self._remote() and (flush or self._store_due()):
            try:
                self.store.publish(self.path.name, record=False)
                self.store.delete_keys([o.key for o in self.store.list(PARTS)])
                self.published.clear()
                self.dirty, self.retry_at = False, 0.0
            except Exception as exc:  # keep the parts: the store may lack their rows
                self._store_failed(exc)
        if self._remote() and self.dirty:
            local_parts = []
        for p in local_parts:
            p.unlink(missing_ok=True)
        if local_parts and not any(self.parts.iterdir()):
            self.parts.rmdir()
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
    """Tune callback: writes a row when a trial completes, errors, or is stopped by the scheduler. It never
    raises (Tune would fail or re-run a finished trial): an error is logged and the row kept to be written."""

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

    def _record(self, trial, failed: bool) -> None:
        try:
            last = self.last.get(trial.trial_id, {})
            row = {**self._base(trial), **last}
            if failed:
                row.update(status="failed", error=_error_text(trial))
            elif last.get("phase") != "final":  # ended before its final report: the scheduler or a budget stopped it
                row.update(status="stopped", error=self._stop_reason(last))
            self.table.add(row, "classifier")
        except Exception:
            warn(f"results callback, trial {getattr(trial, 'trial_id', '?')}: {traceback.format_exc(limit=3)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._record(trial, failed=True)

    def on_experiment_end(self, trials, **info):
        try:
            self.table.write()
        except Exception:
            warn(f"results callback, end of the Tune run: {traceback.format_exc(limit=3)}")


def reconcile(table: ResultsTable, result_grid) -> int:
    """Add rows for finished trials the callback never wrote (e.g. the driver died in between); rewrites
    results.parquet (the end of a phase)."""
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
    table.write()
    return added
