"""Which GAN configs of the search go to the confirm phase: ranked on REAL VALIDATION only, and guarded against a
GAN that worked on its one search seed by luck.

    picks = confirmed_picks(cfg, data, table, max_conc)      # after the search phase; rank 1 = the headline's GAN

pick_best ranks the search's successful GAN trials (a gated trial is not "ok", so a config whose GAN failed the
quality gate cannot win). The guard then retrains each candidate's GAN, in rank order, on `guard_seeds` more
GAN seeds (1, 2, ...: never a confirm seed) - GAN only, no classifier - and applies the same quality gate
(sweeps.quality.quality_gate); a candidate gated (or failed) on any guard seed is passed over for the next one.
So a config is confirmed only when its GAN passed the gate on 1 + guard_seeds seeds. The guard's GANs run as Ray
tasks with a trial's resources, as many at once as trials may run; each is a stage "gan" row of results.parquet
with sweep_phase "guard" (status ok, gated or failed, its quality and its reason). Without a gate (thresholds
off, or no quality evaluation) there is nothing to guard and the ranking stands, said so.
"""
from __future__ import annotations

from typing import Any, Mapping

from sweeps.config import SweepConfig
from sweeps.gans import _canonical, gan_augment_of
from sweeps.space import SEARCH_SEED, TRIAL_KEYS

GUARD_PHASE = "guard"


def pick_best(df, k: int | None) -> list[dict]:
    """Top-k GAN configs of the search phase (k None: all, ranked), on REAL VALIDATION only: Pareto set on
    (val_f1, val_sensitivity), ranked by val_f1 then val_sensitivity; filled from the rest by the same ranking.
    Only trials with status "ok" count: failed, stopped and gated ones cannot win."""
    from analysis import pareto_front

    if not {"val_f1", "val_sensitivity"} <= set(df.columns):  # no search trial got as far as validation
        return []
    ok = df[(df["stage"] == "classifier") & (df["arm"] == "gan") & (df["status"] == "ok")].copy()
    ok = ok.dropna(subset=["val_f1", "val_sensitivity"])
    if ok.empty or k == 0:
        return []
    front = pareto_front(ok, [("val_f1", "max"), ("val_sensitivity", "max")])
    ranked = ok.assign(on_front=ok.index.isin(front.index)).sort_values(
        ["on_front", "val_f1", "val_sensitivity"], ascending=False)
    ranked = ranked.drop_duplicates("config_id")
    return (ranked if k is None else ranked.head(k)).to_dict("records")


def guard_config(candidate: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The candidate's trial values with another GAN seed (arch / augment of old rows mapped as in the confirm)."""
    base = {k: _canonical(candidate.get(k)) for k in TRIAL_KEYS}
    return {**base, "gan_arch": base["gan_arch"] or "dcgan", "gan_augment": gan_augment_of(candidate), "seed": seed}


def guard_gan(config: Mapping[str, Any], sweep: SweepConfig, data) -> dict[str, Any]:
    """In a Ray task: train (or reuse) the config's GAN(s) and judge them like a trial does -> a "gan" row."""
    import torch

    from sweeps.artifacts import localize
    from sweeps.space import config_id, gan_key
    from sweeps.trial import fold_data, trial_gans

    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    device = "cuda" if sweep.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    key = gan_key(config, sweep)
    row: dict[str, Any] = {**config, "trial_id": f"{GUARD_PHASE}_{key}", "config_id": config_id(config),
                           "gan_key": key, "status": "ok", "error": "", "sweep_phase": GUARD_PHASE,
                           "image_size": sweep.image_size, "channels": sweep.channels}
    try:
        trial_gans(config, sweep, fold_data(config, localize(data)), device, lambda m: None, row)
    except Exception as exc:  # one candidate's broken GAN is that candidate's failure, not the sweep's
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:1000])
    row.pop("gan_trained_here", None)  # the row is the GAN's own (stage "gan"): no second row is derived from it
    return row


def _run_guards(cfg: SweepConfig, data, configs: list[dict]) -> list[dict]:
    import ray

    from sweeps.plan import DDP_TRIAL_CPU

    ddp = cfg.workers_per_trial > 1  # the TorchTrainer inside reserves its workers itself
    task = ray.remote(num_cpus=DDP_TRIAL_CPU if ddp else cfg.cpus_per_trial,
                      num_gpus=0 if ddp else cfg.gpus_per_trial, max_retries=cfg.max_failures)(guard_gan)
    return ray.get([task.remote(c, cfg, data) for c in configs])


def gate_is_on(cfg: SweepConfig) -> bool:
    return bool(cfg.gan_eval_every) and bool(cfg.gate_min_recall_share or cfg.gate_min_diversity_share
                                             or cfg.max_kid is not None or cfg.max_fid is not None)


def confirmed_picks(cfg: SweepConfig, data, table, max_conc: int) -> list[dict]:
    """The top_k search configs whose GAN passes the gate on its search seed and on every guard seed, in rank
    order; the guard rows go into `table`. Prints who was passed over and why."""
    ranked = pick_best(table.frame(), None)
    if not cfg.guard_seeds or not gate_is_on(cfg) or not ranked or not cfg.top_k:
        if ranked and cfg.top_k and not cfg.guard_seeds:
            print("[guard] off (guard_seeds 0): the search's picks were judged on their one GAN seed", flush=True)
        elif ranked and cfg.top_k:
            print("[guard] off: no quality gate (gate thresholds off or gan_eval_every 0)", flush=True)
        return ranked[:cfg.top_k]
    seeds = [SEARCH_SEED + 1 + i for i in range(cfg.guard_seeds)]
    picks: list[dict] = []
    i, batch_size = 0, max(1, max_conc // len(seeds))
    while len(picks) < cfg.top_k and i < len(ranked):
        batch, i = ranked[i:i + batch_size], i + batch_size
        configs = [guard_config(c, s) for c in batch for s in seeds]
        rows = _run_guards(cfg, data, configs)
        for r in rows:
            table.add(r, "gan", write=False)
        table.write()
        for n, cand in enumerate(batch):
            mine = rows[n * len(seeds):(n + 1) * len(seeds)]
            bad = [r for r in mine if r["status"] != "ok"]
            if bad:
                print(f"[guard] passed over config {cand['config_id']} (search rank {ranked.index(cand) + 1}): "
                      + "; ".join(f"GAN seed {r['seed']}: {r['status']} ({r['error'][:200]})" for r in bad), flush=True)
            elif len(picks) < cfg.top_k:
                picks.append(cand)
                print(f"[guard] config {cand['config_id']} (search rank {ranked.index(cand) + 1}) passed the quality "
                      f"gate on GAN seeds {[SEARCH_SEED] + seeds}", flush=True)
    if len(picks) < cfg.top_k:
        print(f"[guard] only {len(picks)} of the search's {len(ranked)} GAN configs passed the gate on every seed",
              flush=True)
    return picks
