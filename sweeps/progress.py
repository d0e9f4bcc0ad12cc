"""What the sweep prints while it runs: one line per event that matters and a short progress line, instead of
Tune's status tables (those come back with --verbose).

    [search] trial 3/8 ok: gan hinge ratio 2, val F1 0.712 (GAN trained, 41 s)
    [confirm] trial 12/60 failed: control+gan seed 1003 lr 0.001: GAN diverged: loss_D nan at epoch 37
    GAN 3f2a9c1e0b77: synthetic diversity is 0.04x that of real images (< 0.6): possible mode collapse
    [confirm] 45/60 done, 2 running, 1 failed, best val F1 0.731, ~6 min left

A trial's warnings arrive in its final row (`gan_warnings`, recorded by the trial around its GAN) and are printed
once per GAN key, not once per trial process with a source path. Progress lines come at most every
`every_s` seconds. Ray-free to test: the Tune callback is a thin shell around ProgressLog.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

try:
    from ray.tune import Callback
except ImportError:  # analysis-only installs
    Callback = object

PROGRESS_EVERY_S = 30.0


def quiet_console() -> None:
    """The driver's console without Tune's boxes and INFO lines or Optuna's study notes (--verbose keeps them):
    Tune's old-style output at verbose 0 prints nothing, and the loggers keep warnings and errors."""
    import logging
    import os

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    for name in ("ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import optuna  # its own handler resets the "optuna" logger's level: its setter is the one that holds

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _fmt_lr(x: Any) -> str:
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return "?"


def describe_trial(row: Mapping[str, Any], phase: str = "") -> str:
    """A trial in a few words: its arm, GAN loss and ratio, fix/augmentation, seed (confirm) and classifier LR."""
    arm = str(row.get("arm", "") or "?")
    bits = [arm]
    if arm in ("gan", "control+gan") and row.get("gan_loss"):
        ratio = row.get("synthetic_ratio")
        bits.append(f"{row['gan_loss']}" + (f" ratio {float(ratio):g}" if ratio is not None else ""))
    if arm == "external":
        bits.append(f"{row.get('external') or '?'} ratio {float(row.get('synthetic_ratio') or 0):g}")
    fix = [str(row.get(k)) for k in ("imbalance_fix", "augment") if str(row.get(k) or "none") != "none"]
    if fix and arm != "baseline":
        bits.append("+".join(fix))
    if phase == "confirm":
        bits.append(f"seed {row.get('seed')}")
    if row.get("fold") is not None and not (isinstance(row.get("fold"), float) and math.isnan(row["fold"])):
        bits.append(f"fold {int(row['fold'])}")
    bits.append(f"lr {_fmt_lr(row.get('clf_lr'))}")
    return " ".join(bits)


class ProgressLog:
    """The sweep's console lines for one phase (pure Python: the Tune callback feeds it)."""

    def __init__(self, phase: str, total: int, print_fn: Callable[[str], None] = print,
                 every_s: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.phase, self.total, self.print, self.every_s, self.clock = phase, int(total), print_fn, every_s, clock
        self.t0 = clock()
        self.last_progress = self.t0
        self.done = self.failed = self.stopped = 0
        self.best_val_f1 = -math.inf
        self.warned: set[tuple[str, str]] = set()

    def finished(self, row: Mapping[str, Any], seconds: float | None = None) -> None:
        """A trial's final row: one line (status, what it was, its key metric or reason), its new warnings."""
        self.done += 1
        status = str(row.get("status", "ok") or "ok")
        what = describe_trial(row, self.phase)
        if status == "ok":
            f1 = row.get("val_f1")
            if isinstance(f1, (int, float)) and math.isfinite(f1):
                self.best_val_f1 = max(self.best_val_f1, float(f1))
            notes = ["GAN trained" if row.get("gan_trained_here") else "GAN reused" if row.get("gan_key") else "",
                     f"{seconds:.0f} s" if seconds else ""]
            notes = ", ".join(n for n in notes if n)
            self.print(f"[{self.phase}] trial {self.done}/{self.total} ok: {what}, val F1 {_num(f1)}"
                       + (f" ({notes})" if notes else ""))
        else:
            if status == "stopped":  # the scheduler's or a budget's choice, not a fault
                self.stopped += 1
            else:
                self.failed += 1
            reason = str(row.get("error", "") or "no reason recorded").strip().splitlines()[0][:200]
            self.print(f"[{self.phase}] trial {self.done}/{self.total} {status}: {what}: {reason}")
        self._warnings(row)

    def errored(self, what: str, error: str) -> None:
        """A trial Tune saw raise (its row, if any, comes through `finished`)."""
        self.print(f"[{self.phase}] trial error: {what}: {error.strip().splitlines()[-1][:200] if error else ''}")

    def _warnings(self, row: Mapping[str, Any]) -> None:
        key = str(row.get("gan_key", "") or "")
        for w in [w for w in str(row.get("gan_warnings", "") or "").split(" | ") if w]:
            if (key, w) not in self.warned:
                self.warned.add((key, w))
                self.print(f"GAN {key or '?'}: {w}")

    def tick(self, running: int, force: bool = False) -> None:
        """The progress line, at most every every_s seconds (force: now, e.g. at the end of the phase)."""
        now = self.clock()
        if not force and now - self.last_progress < self.every_s:
            return
        self.last_progress = now
        left = ""
        if 0 < self.done < self.total:
            rate = (now - self.t0) / self.done
            left = f", ~{max(1, round(rate * (self.total - self.done) / 60))} min left"
        best = f", best val F1 {self.best_val_f1:.3f}" if math.isfinite(self.best_val_f1) else ""
        stopped = f", {self.stopped} stopped" if self.stopped else ""
        self.print(f"[{self.phase}] {self.done}/{self.total} done, {running} running, {self.failed} failed{stopped}"
                   f"{best}{left}")


def _num(x: Any) -> str:
    return f"{float(x):.3f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


class ProgressCallback(Callback):
    """Tune callback printing ProgressLog lines: final rows as trials end, a progress line between them."""

    def __init__(self, phase: str, total: int, every_s: float = PROGRESS_EVERY_S):
        self.log = ProgressLog(phase, total, lambda s: print(s, flush=True), every_s)
        self.started: dict[str, float] = {}
        self.last: dict[str, Mapping[str, Any]] = {}  # each trial's latest result
        self.said: set[str] = set()  # trials whose end has its line

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.monotonic())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result
        if result.get("phase") == "final":
            seconds = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
            self.log.finished(result, seconds)
            self.said.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """A trial that ended before its final report (ASHA or a time budget stopped it) gets its line too."""
        if trial.trial_id not in self.said:
            last = self.last.get(trial.trial_id, {})
            cfg = dict(getattr(trial, "config", {}) or {})
            row = {**cfg.get("trial", cfg), "status": "stopped",
                   "error": f"ended before its final report (stopped by the scheduler or a time budget during "
                            f"its {last.get('phase', '?')} phase, last KID {_num(last.get('gan_kid'))})"}
            self.log.finished(row)
            self.said.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.log.errored(trial.trial_id, str(getattr(trial, "error_msg", "") or ""))

    def on_step_end(self, iteration, trials, **info):
        self.log.tick(sum(1 for t in trials if t.status == "RUNNING"))

    def on_experiment_end(self, trials, **info):
        self.log.tick(0, force=True)
