"""The headline: the practitioner's comparison on real test, from the confirm phase only, with uncertainty that
covers the training seeds AND the test images, and its verdict in words.

    h = headline(df)          # df: analysis.load(...); -> Headline (picks, table, tests, messages, context)

The choices and the tests are analysis.decision (decide); the words analysis.claims (verdict, context); the
bootstrap over test images analysis.uncertainty; each run's test scores analysis.scores. pandas/numpy/scipy only.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.claims import context, fmt_p, verdict
from analysis.decision import (ALPHA, ARM_KEYS, CLAIM_METRICS, COMPARISONS, DEFAULT_MARGIN, HEADLINE_METRICS,
                               Headline, Pick, decide, detectable, table)
from analysis.scores import RunScores
from analysis.tables import classifier_rows, confirm_rows, summarize_configs

__all__ = ["ALPHA", "ARM_KEYS", "CLAIM_METRICS", "COMPARISONS", "HEADLINE_METRICS", "Headline", "Pick", "confirm_rows",
           "decide", "fmt_p", "headline"]


def headline(df: pd.DataFrame, metrics=HEADLINE_METRICS, configs: pd.DataFrame | None = None, scores=None,
             margin: float = DEFAULT_MARGIN) -> Headline:
    """The four arms on real test from the confirm phase only, with the claims.

    df: the tidy results (analysis.load: df.attrs["source"] says where the run folders are found, for the test
    scores). scores: a test-score source (analysis.scores.RunScores); default: the run folders beside the results."""
    every = df[df["stage"] == "classifier"]
    ok = classifier_rows(df)
    if scores is None:
        src = df.attrs.get("source")
        scores = RunScores(None if src is None else Path(src).parent)
    d = decide(ok, every, metrics, scores, margin=margin)
    picks = [p for p in d.picks.values() if p is not None and p.config_id]
    ok = confirm_rows(ok)[0] if d.phase_recorded else ok
    if configs is None:  # only the chosen configs' summaries are needed here
        configs = summarize_configs(ok[ok["config_id"].isin([p.config_id for p in picks])])
    by_id = configs.set_index("config_id") if len(configs) else None
    for p in picks:
        if by_id is not None and p.config_id in by_id.index:
            p.summary = by_id.loc[p.config_id].copy()
            p.summary["config_id"] = p.config_id
    numbers = table(d, ok, metrics)
    ns = [len(p.seeds_ok) for p in picks]
    h = Headline(**{k: d.picks.get(k) for k in ARM_KEYS}, table=numbers, tests=detectable(d.tests),
                 single_seed=bool(ns) and max(ns) < 2, confirm_only=d.phase_recorded,
                 gan_preregistered=d.preregistered, folds=d.folds, covers_test_images=d.covers_test_images,
                 n_test_positive=d.n_test_positive, n_test=d.n_test, draws=d.draws, scores_missing=d.scores_missing,
                 margin=margin, externals={k: d.picks[k] for k in d.externals}, primary_external=d.primary_external,
                 comparisons=d.comparisons)
    h.messages = verdict(h)
    h.context = context(h, df)
    return h


