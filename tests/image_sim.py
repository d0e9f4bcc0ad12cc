"""Sweeps simulated image by image, with a known truth, to check the verdict's claim rates and interval coverage.

What a real sweep has, put in on purpose:
  * ONE fixed val set and ONE fixed test set per sweep (15 minority / 150 majority images each, as the demo);
  * every configuration (each LR of each arm, each searched GAN and control) has its own SYSTEMATIC per-image logit
    errors, the same for every seed: the source of the test-image term that seeds never average away;
  * per run: a logit shift and per-image noise (the seed's randomness), sized so a config's test F1 varies by
    ~0.13 between seeds (the demo's spread);
  * each run picks its threshold on its own val scores (max F1) and keeps it for test, as the classifier does;
  * a search phase that ranks GAN configs and control candidates on val (seed 0), fixing the headline's GAN and
    the best control C before the confirm phase;
  * GAN configs that differ in their true effect and FAIL MORE OFTEN WHEN WORSE (a failed seed fails both GAN arms,
    every LR: the GAN is shared);
  * the confirm phase: baseline, C, C + GAN, GAN x 3 LRs x fresh seeds.
The truth of the primary claim (C + GAN vs C, failures included) is (1 - p_fail) x the population difference of a
working GAN, computed by Monte Carlo on an unlimited test set (population_effect).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.special import ndtr

N_POS, N_NEG = 15, 150
LRS = 3


@dataclass(frozen=True)
class Model:
    """Logit model of a classifier's scores. Calibrated so a config's test F1 has sd ~0.13 over seeds on a fixed
    test set and the test-set term of an arm's seed-averaged F1 has sd ~0.03 (tests/test_image_sim.py checks)."""
    mu_pos: float = 2.0     # mean logit of a minority image (before errors)
    mu_neg: float = -1.0    # mean logit of a majority image
    img: float = 1.0        # spread of images' own difficulty (shared by every arm: the population)
    sys: float = 0.5        # a config's systematic per-image error (fixed across seeds)
    run: float = 0.3        # a run's global logit shift
    quality: float = 0.55   # a run's shift of the minority images' logits (a seed that learned them better or worse)
    noise: float = 1.0      # a run's per-image noise (seed x image)


def _thresholds(val_logits: np.ndarray, is_pos: np.ndarray) -> np.ndarray:
    """(R,) max-F1 threshold of each run on its val logits (R, N): candidates are the scores themselves."""
    order = np.argsort(-val_logits, axis=1, kind="stable")
    s = np.take_along_axis(val_logits, order, axis=1)
    y = is_pos[order]
    tp, fp = np.cumsum(y, axis=1), np.cumsum(~y, axis=1)
    f1 = 2 * tp / (tp + fp + is_pos.sum())
    return s[np.arange(len(s)), np.argmax(f1, axis=1)]


def _metrics(logits: np.ndarray, is_pos: np.ndarray, thr: np.ndarray) -> dict[str, np.ndarray]:
    pred = logits >= thr[:, None]
    tp = (pred & is_pos).sum(1)
    fp = (pred & ~is_pos).sum(1)
    p, q = is_pos.sum(), (~is_pos).sum()
    return {"f1": 2 * tp / (tp + fp + p), "sensitivity": tp / p, "specificity": (q - fp) / q}


class Sweep:
    """One simulated sweep: fixed images, configs with fixed systematic errors, runs, rows and test scores."""

    def __init__(self, rng: np.random.Generator, model: Model = Model()):
        self.rng, self.m = rng, model
        self.is_pos = np.r_[np.ones(N_POS, bool), np.zeros(N_NEG, bool)]
        self.base = {s: np.where(self.is_pos, model.mu_pos, model.mu_neg) + rng.normal(0, model.img, N_POS + N_NEG)
                     for s in ("val", "test")}
        self.rows: list[dict] = []
        self.scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._sys: dict[str, dict[str, np.ndarray]] = {}

    def _errors(self, config: str) -> dict[str, np.ndarray]:
        if config not in self._sys:
            self._sys[config] = {s: self.rng.normal(0, self.m.sys, N_POS + N_NEG) for s in ("val", "test")}
        return self._sys[config]

    def runs(self, config: str, effect: float, seeds, fail: np.ndarray, **row) -> None:
        """One run per seed of `config` (its positives' logits shifted by `effect`); fail: (len(seeds),) bool."""
        n = len(seeds)
        sys = self._errors(config)
        shift = self.rng.normal(0, self.m.run, (n, 1)) + self.rng.normal(0, self.m.quality, (n, 1)) * self.is_pos
        logit = {s: self.base[s] + effect * self.is_pos + sys[s] + shift + self.rng.normal(0, self.m.noise, (n, len(
            self.is_pos))) for s in ("val", "test")}
        thr = _thresholds(logit["val"], self.is_pos)
        val, test = _metrics(logit["val"], self.is_pos, thr), _metrics(logit["test"], self.is_pos, thr)
        for i, seed in enumerate(seeds):
            tid = f"t{len(self.rows)}"
            ok = not fail[i]
            self.rows.append({"trial_id": tid, "stage": "classifier", "config_id": config, "seed": int(seed),
                              "status": "ok" if ok else "failed", "error": "" if ok else "GAN failed",
                              "clf_threshold": float(1 / (1 + np.exp(-thr[i]))), "clf_run_dir": "",
                              "n_test_positive": N_POS, **row,
                              **{f"val_{k}": (float(v[i]) if ok else np.nan) for k, v in val.items()},
                              **{f"test_{k}": (float(v[i]) if ok else np.nan) for k, v in test.items()}})
            if ok:
                self.scores[tid] = (self.is_pos, 1 / (1 + np.exp(-logit["test"][i])))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def simulate(rng: np.random.Generator, n_seeds: int, gan_effect: float = 0.0, gan_spread: float = 0.0,
             n_search: int = 6, fail_base: float = 0.1, fail_slope: float = 0.0, model: Model = Model()):
    """-> (results frame, scores, truth): truth = {"p_fail", "effect"} of the headline's GAN config (the primary
    claim's population difference in F1, failures included, is (1 - p_fail) * population_effect(effect)).

    GAN config g has a true effect gan_effect + gan_spread * k_g, k_g in -2..2 (a logit shift of the minority
    images), and fails
    with probability fail_base + fail_slope * (gan_effect - effect_g), clipped to [0, 0.6]: worse GANs fail more."""
    sw = Sweep(rng, model)
    effects = gan_effect + gan_spread * rng.integers(-2, 3, n_search)  # a few levels: population_effect is cached
    p_fail = np.clip(fail_base + fail_slope * (gan_effect - effects), 0.0, 0.6)
    search = dict(sweep_phase="search", confirm_rank=np.nan)
    val = []
    for g in range(n_search):  # the GAN search: one run per config at seed 0 (its GAN may fail)
        fail = rng.random(1) < p_fail[g]
        sw.runs(f"gan{g}", effects[g], [0], fail, arm="gan", setup_id=f"gan{g}", **search)
        val.append(-1.0 if fail[0] else sw.rows[-1]["val_f1"])
    ctl_val = []
    for j in range(n_search):  # the control search: as many trials, no effect of its own
        sw.runs(f"ctl{j}", 0.0, [0], np.zeros(1, bool), arm="control", setup_id=f"ctl{j}", **{**search,
                                                                                              "sweep_phase": "controls"})
        ctl_val.append(sw.rows[-1]["val_f1"])
    g, c = int(np.argmax(val)), int(np.argmax(ctl_val))
    seeds = np.arange(1000, 1000 + n_seeds)
    gan_fail = rng.random(n_seeds) < p_fail[g]  # one GAN per seed, shared by both GAN arms and every LR
    none = np.zeros(n_seeds, bool)
    confirm = dict(sweep_phase="confirm")
    for lr in range(LRS):
        sw.runs(f"base-lr{lr}", 0.0, seeds, none, arm="baseline", setup_id="base", confirm_rank=np.nan, **confirm)
        sw.runs(f"ctl{c}-lr{lr}", 0.0, seeds, none, arm="control", setup_id=f"ctl{c}", confirm_rank=np.nan,
                **confirm)
        sw.runs(f"ctl{c}+gan{g}-lr{lr}", effects[g], seeds, gan_fail, arm="control+gan", setup_id=f"ctl{c}+gan{g}",
                confirm_rank=1.0, **confirm)
        sw.runs(f"gan{g}-lr{lr}", effects[g], seeds, gan_fail, arm="gan", setup_id=f"gan{g}", confirm_rank=1.0,
                **confirm)
    return sw.frame(), sw.scores, {"p_fail": float(p_fail[g]), "effect": float(effects[g])}


@lru_cache(maxsize=256)
def population_effect(effect: float, metric: str = "f1", model: Model = Model(), draws: int = 8000) -> float:
    """Population difference in `metric` between an arm whose minority logits are shifted by `effect` and one that
    is not, each run picking its threshold on a val set of the sweep's size: the mean over runs of the metric on
    an unlimited test set (normal CDFs), Monte Carlo over runs (fixed seed, so the same number every call)."""
    spread = np.sqrt(model.img ** 2 + model.sys ** 2 + model.noise ** 2)

    def pop(shift: float) -> float:
        rng = np.random.default_rng(12345)  # common random numbers: the difference is not Monte Carlo noise
        is_pos = np.r_[np.ones(N_POS, bool), np.zeros(N_NEG, bool)]
        r = rng.normal(0, model.run, (draws, 1))
        q = rng.normal(0, model.quality, (draws, 1))
        val = (np.where(is_pos, model.mu_pos + shift, model.mu_neg) + r + q * is_pos
               + rng.normal(0, spread, (draws, len(is_pos))))
        thr = _thresholds(val, is_pos)
        sens = 1 - ndtr((thr - (model.mu_pos + shift + r[:, 0] + q[:, 0])) / spread)
        fpr = 1 - ndtr((thr - (model.mu_neg + r[:, 0])) / spread)
        prev = N_POS / (N_POS + N_NEG)
        if metric == "sensitivity":
            return float(sens.mean())
        if metric == "specificity":
            return float((1 - fpr).mean())
        prec = prev * sens / np.maximum(prev * sens + (1 - prev) * fpr, 1e-12)
        return float(np.mean(2 * prec * sens / np.maximum(prec + sens, 1e-12)))

    return pop(effect) - pop(0.0)
