"""The verdict in words: the answer line, one sentence per claim, cautions, and what the intervals cover.

    h.messages = verdict(h); h.context = context(h, df)      # h: analysis.decision.Headline

The answer is one of: "adding the GAN to <C> helps", "the GAN hurts", "the GAN helps over no fix but not beyond
<C>", "no evidence of a difference", "cannot be assessed" (C = the best classical pipeline, fixed on validation by
the search). Numbers that could not be computed read n/a; a zero-width interval reads n/a too (no spread is no
proof). pandas/numpy only.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.tables import METRIC_LABELS
from analysis.decision import ALPHA, CLAIM_METRICS, COMPARISONS, FAMILY, GAN_KEYS, Headline, Pick
from analysis.picks import EXTERNAL
from trainables.arms import ARM_DESCRIPTIONS, AUGMENT_POLICIES


def fmt_x(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_eq(p: float) -> str:
    s = fmt_p(p)
    return s if s.startswith("<") or s == "n/a" else f"= {s}"


def fmt_interval(lo: float, hi: float) -> str:
    """'-0.050 to +0.120', or n/a for a missing or zero-width interval."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-12:
        return "n/a"
    return f"{lo:+.3f} to {hi:+.3f}"


def _num(s: pd.Series, key: str) -> float:
    try:
        v = float(s.get(key))
        return v if math.isfinite(v) else math.nan
    except (TypeError, ValueError):
        return math.nan


def describe_control(pick: Pick | None) -> str:
    """The best classical pipeline C in words, e.g. 'class-weighted loss (weights^0.80) + standard augmentation
    (x1.20)'; an old per-fix control arm by its description."""
    if pick is None:
        return "the best classical control"
    if pick.arm != "control":
        return ARM_DESCRIPTIONS.get(pick.arm, pick.arm)
    s = pick.summary
    fix, aug = str(s.get("imbalance_fix", "") or "none"), str(s.get("augment", "") or "none")
    parts = []
    if fix == "class_weight":
        power = _num(s, "class_weight_power")
        parts.append("class-weighted loss" + (f" (inverse frequency^{power:.2f})" if np.isfinite(power) else ""))
    elif fix == "oversample":
        share = _num(s, "oversample_share")
        parts.append("random oversampling" + (f" (minority share {share:.2f})" if np.isfinite(share) and share > 0
                                              else " (balanced)"))
    if aug != "none":
        strength = _num(s, "augment_strength")
        name = "standard" if aug == "standard" else aug if aug in AUGMENT_POLICIES else aug
        parts.append(f"{name} augmentation" + (f" (x{strength:.2f})" if np.isfinite(strength) else ""))
    return " + ".join(parts) or "no fix"


def generator(h: Headline) -> str:
    """What the primary claim adds: our GAN, or (a sweep with no GAN) the first external set's images."""
    return f"the {h.primary_external!r} images" if h.primary_external else "the GAN"


def arm_text(h: Headline, key: str) -> str:
    c = describe_control(h.control)
    if key.startswith(EXTERNAL):
        name = key[len(EXTERNAL):]
        return f"{c} + the {name!r} images" if h.control is not None else f"the {name!r} images"
    if key == "stacked" and h.primary_external and h.control is None:
        return generator(h)
    return {"baseline": "the baseline (no fix)", "control": c, "stacked": f"{c} + {generator(h)}",
            "gan": "the GAN as searched"}[key]


def arm_keys(h: Headline) -> tuple[str, ...]:
    """Every arm of the headline: the four, then the secondary external sets."""
    return ("baseline", "control", "stacked", "gan", *h.externals)


def _claims(h: Headline) -> pd.DataFrame:
    order = {k: i for i, k in enumerate(CLAIM_METRICS)}
    comp = {f"{a} - {b}": i for i, (a, b) in enumerate(h.comparisons)}
    t = h.tests[h.tests["claim"]]
    return t.assign(_o=t["comparison"].map(comp) * 10 + t["metric"].map(order)).sort_values("_o").drop(columns="_o")


def verdict(h: Headline) -> list[str]:
    """The answer first, then one sentence per claim, then failed seeds and cautions."""
    claims = _claims(h)
    return [answer(h, claims), *_external_answers(h, claims), *_missing_arms(h),
            *(_claim_sentence(h, r) for r in claims.itertuples() if np.isfinite(r.mean_diff)), *_cautions(h)]


def _n_external_claims(h: Headline) -> int:
    t = h.tests
    return int((t["family"].eq("external") & t["claim"] & t["tested"]).sum()) if "family" in t else 0


def _external_answers(h: Headline, claims: pd.DataFrame) -> list[str]:
    """One line per secondary external set: its verdict vs the best control, Holm among the external sets."""
    out = []
    for key in h.externals:
        rows = claims[claims["a"] == key]
        tested = rows[rows["tested"]]
        lead = f"Secondary ({arm_text(h, key)} vs {arm_text(h, rows['b'].iloc[0]) if len(rows) else 'C'}"
        if tested.empty:
            why = str(rows["method"].iloc[0]) if len(rows) else "no comparison"
            out.append(f"{lead}): not tested ({why}).")
            continue
        words = {v: _listing(h, tested[tested.verdict == v]) for v in ("helps", "worse", "trade-off")
                 if (tested.verdict == v).any()}
        said = "; ".join(f"{v} on {w}" for v, w in words.items()) or "no evidence of a difference"
        n = _n_external_claims(h)
        out.append(f"{lead}, an external generator; Holm-corrected among the {n} external claim(s), not part of "
                   f"the primary answer): {said}.")
    return out


def _listing(h: Headline, rows: pd.DataFrame) -> str:
    return "; ".join(f"{METRIC_LABELS[r.metric]}" for r in rows.itertuples())


def answer(h: Headline, claims: pd.DataFrame) -> str:
    """The verdict's first sentence (see the module docstring for the five answers), and whether the GAN under
    test worked: on how many confirm seeds it failed the quality gate."""
    return _answer(h, claims) + _gate_note(h)


def _gate_note(h: Headline) -> str:
    p = h.gan
    if p is None or not p.seeds_gated:
        return ""
    n = len(set(p.seeds_ok) | set(p.seeds_failed))
    seeds = ", ".join(str(s) for s in p.seeds_gated)
    return (f" The GAN under test failed the quality gate on {len(p.seeds_gated)} of {n} confirm seeds (seed(s) "
            f"{seeds}: recall or diversity below the set share of the real images' own, e.g. a collapsed "
            "generator); no classifier used those seeds' images, and they count as no help.")


def _answer(h: Headline, claims: pd.DataFrame) -> str:
    c = describe_control(h.control)
    cannot = "**Answer: cannot be assessed.** "
    if not h.confirm_only:
        return cannot + ("These results record no confirm phase (fresh seeds shared by every arm, every choice "
                         "fixed before them), so no claim is made; rerun the sweep to get one.")
    if h.primary_external:
        if h.stacked is None or not h.stacked.seeds_ok:
            return cannot + (f"{generator(h).capitalize()} failed the quality gate, or every run with them failed, "
                             "on every confirm seed.")
    elif h.gan is None or not h.gan.seeds_ok:
        return cannot + ("The search's best GAN configuration (rank 1, fixed before the confirm phase) failed, "
                         "was stopped or was gated on every confirm seed; no other configuration is put in its "
                         "place." if h.gan is not None else "No GAN configuration reached the confirm phase.")
    tested = claims[claims["tested"]]
    if tested.empty:
        why = str(claims["method"].iloc[0]) if len(claims) else "no comparison could be made"
        for lead in ("no claim: ", "no test: "):
            why = why[len(lead):] if why.startswith(lead) else why
        return cannot + f"No claim is made: {why}."
    prim, sec = (claims[claims["comparison"] == f"{a} - {b}"] for a, b in COMPARISONS)
    tested = tested[tested["family"] != "external"] if "family" in tested else tested
    fam = f"Holm-corrected over the {len(tested)} claim(s) tested, 5% level; intervals over " + (
        "seeds and test images" if h.covers_test_images else "seeds")
    g = generator(h)
    if (prim["verdict"] == "worse").any():
        hurt, it = ("hurt", "them") if h.primary_external else ("hurts", "it")
        return (f"**Answer: {g} {hurt}**: adding {it} to {c} makes {_listing(h, prim[prim.verdict == 'worse'])} "
                f"worse ({fam}).")
    if (prim["verdict"] == "helps").any():
        return f"**Answer: adding {g} to {c} helps** on {_listing(h, prim[prim.verdict == 'helps'])} ({fam})."
    if (sec["verdict"] == "worse").any():
        return (f"**Answer: the GAN hurts**: the GAN as searched is worse than no fix on "
                f"{_listing(h, sec[sec.verdict == 'worse'])}, and adding it to {c} shows no gain ({fam}).")
    if (sec["verdict"] == "helps").any():
        return (f"**Answer: the GAN helps over no fix but not beyond {c}** (on "
                f"{_listing(h, sec[sec.verdict == 'helps'])}; no evidence that adding it to {c} helps; {fam}).")
    trade = claims[claims["verdict"] == "trade-off"]
    extra = (f" Sensitivity rose where specificity fell by more than the margin ({_listing(h, trade)}): a "
             "trade-off, not a gain." if len(trade) else "")
    what = (f"Neither adding the GAN to {c} nor the GAN over no fix shows" if prim["tested"].any() else
            f"Adding the GAN to {c} was not tested (no such arm in the confirm phase), and the GAN over no fix shows")
    if h.primary_external:
        what = f"Adding {g} to {c} does not show"
    return (f"**Answer: no evidence of a difference.** {what} a difference in F1 or sensitivity ({fam}). This is "
            f"not evidence that it does not help: see the smallest difference this sweep could detect." + extra)


def _missing_arms(h: Headline) -> list[str]:
    out = []
    for key, text in (("baseline", "baseline (no fix)"), ("control", "tuned classical control"),
                      ("stacked", "best control + GAN")):
        if h.pick(key) is None:
            out.append(f"No {text} arm in the confirm phase: the claims that need it are not tested.")
    return out


def _claim_sentence(h: Headline, r) -> str:
    """One claim (a row of Headline.tests) in words, with its numbers."""
    a, b = r.comparison.split(" - ")
    label = METRIC_LABELS[r.metric]
    what = f"Test {label}, {arm_text(h, a)} vs {arm_text(h, b)}"
    zeros = (f"; {r.n_as_no_help} failed/stopped/gated GAN seed(s) counted as no help (complete-case "
             f"{fmt_x(r.cc_mean_diff, signed=True)}, 95% CI {fmt_interval(r.cc_lo, r.cc_hi)}, {r.cc_n} seeds)"
             if r.n_as_no_help else "")
    if not r.tested:
        return f"{what}: observed difference {fmt_x(r.mean_diff, signed=True)}; {r.method}; no claim{zeros}."
    nums = (f"difference {fmt_x(r.mean_diff, signed=True)} (95% CI {fmt_interval(r.ci_lo, r.ci_hi)} over "
            f"{'seeds and test images' if r.covers_test_images else 'seeds'}; t = {fmt_x(r.t, 2)}, df {r.df:.1f}, "
            f"p {_p_eq(r.p_value)}, Holm-adjusted p {_p_eq(r.p_holm)}; {r.n_paired} seeds{zeros})")
    if r.verdict == "helps":
        return f"{what}: better: {nums}."
    if r.verdict == "worse":
        return f"{what}: worse: {nums}."
    if r.verdict == "trade-off":
        return (f"{what}: higher, but specificity fell (one-sided 95% lower bound of its difference "
                f"{fmt_x(r.spec_lower_bound, signed=True)}, beyond the non-inferiority margin -{h.margin:g}): a "
                f"trade-off, not a gain: {nums}.")
    if np.isfinite(r.ci_lo) and (r.ci_lo > 0 or r.ci_hi < 0):
        fam = (f"{_n_external_claims(h)} external-set" if getattr(r, "family", "primary") == "external"
               else f"{FAMILY}")
        return f"{what}: no evidence of a difference once the {fam} claims are corrected for: {nums}."
    return f"{what}: no evidence of a difference: {nums}; the interval includes 0."


def _cautions(h: Headline) -> list[str]:
    """Seeds that failed in the confirm phase (every arm), results without a preregistered GAN, missing scores."""
    out = []
    for key in ("gan", "stacked", "baseline", "control", *h.externals):
        pick = h.pick(key)
        if pick is not None and pick.seeds_failed:
            how = ("counted as no help in the claims" if key in GAN_KEYS or key.startswith(EXTERNAL)
                   else "left out of the pairing (not the GAN's doing)")
            out.append(f"{arm_text(h, key)}: {len(pick.seeds_failed)} seed(s) failed, were stopped or gated in the "
                       f"confirm phase, {how} ({'; '.join(pick.failures[:3])}"
                       f"{' ...' if len(pick.failures) > 3 else ''}).")
    if h.confirm_only and not h.gan_preregistered and not h.primary_external:
        out.append("Caution: no GAN configuration was fixed before the confirm phase; the GAN was chosen among the "
                   "confirmed ones on the same runs' validation, which flatters its test numbers.")
    if h.confirm_only and h.scores_missing:
        out.append(f"The test scores of {len(h.scores_missing)} chosen run(s) could not be read (e.g. "
                   f"{h.scores_missing[0]}), so the intervals could not cover the test images and no claim is made.")
    return out


def context(h: Headline, df: pd.DataFrame) -> list[str]:
    """What the intervals cover, failed seeds, how large a difference the sweep could detect, each arm's budget."""
    out = []
    seeds = sorted({s for k in arm_keys(h) if (p := h.pick(k)) for s in p.seeds_ok})
    span = (f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}, none used by the search)" if seeds and h.confirm_only
            else f"{len(seeds)} seed(s)")
    folds = (f"; each seed the mean of its {h.folds} CV folds (n = seeds, never seeds x folds)" if h.folds else "")
    if h.covers_test_images:
        out.append(f"What the intervals cover: the variation between training seeds ({span}, every seed retraining "
                   f"the GAN and the classifier{folds}) AND the sampling of the test images: a stratified bootstrap "
                   f"of the {h.n_test_positive} minority and {h.n_test - h.n_test_positive} other test images "
                   f"({h.draws} resamples, one shared by every arm and seed; each run's metrics recomputed at its own "
                   "validation threshold). More seeds shrink the first part only. Not covered: which images went "
                   "into training and validation (one split).")
    elif h.confirm_only:
        out.append(f"What the intervals cover: the variation between training seeds only ({span}{folds}); the test "
                   "images' scores could not be read, so the sampling of the test images is not covered.")
    if h.confirm_only:
        out.append("A GAN seed that failed, was stopped or was gated counts as no help (difference 0 against its "
                   "pair): the estimate is the effect of adopting the GAN, failures included; the complete-case "
                   "estimate is given beside it.")
        out.append(f"A sensitivity gain is claimed only when specificity is non-inferior: the one-sided 95% lower "
                   f"bound of its difference above -{h.margin:g}.")
    out += _gan_quality(h, df)
    out += _external_quality(h, df)
    claims = h.tests[h.tests["claim"] & h.tests["tested"]]
    if len(claims):
        def size(x: float) -> str:
            return fmt_x(x) if np.isfinite(x) and x <= 1 else "beyond the metric's range"

        parts = [f"{METRIC_LABELS[r.metric]}, {arm_text(h, r.a)} vs {arm_text(h, r.b)}: {size(r.mde)} "
                 f"({size(r.mde_upper)} at the spread's upper 90% bound)" for r in claims.itertuples()]
        out.append("Smallest true difference this sweep would detect with 80% power (an estimate: exact "
                   f"noncentral-t power at the combined standard error and its df, two-sided alpha {ALPHA:g}/"
                   f"{FAMILY}, Holm's strictest step): " + "; ".join(parts) + ".")
    budgets = [f"{arm_text(h, k)} {p.n_lrs} classifier LR(s) x {len(set(p.seeds_ok) | set(p.seeds_failed))} seed(s)"
               for k in arm_keys(h) if (p := h.pick(k))]
    steps = pd.to_numeric(df.get("clf_steps", pd.Series(dtype=float)), errors="coerce").dropna()
    if budgets:
        out.append("Tuning budget per arm in the confirm phase (LR chosen on real validation within each arm): "
                   + "; ".join(budgets) + "."
                   + (f" Every classifier run took the same number of optimizer steps ({int(steps.iloc[0])}), "
                      "however many synthetic images it had." if len(steps) and steps.nunique() == 1 else ""))
    return out


QUALITY_SHARES = (("gan_recall_vs_real", "recall"), ("gan_diversity_vs_real", "feature diversity"),
                  ("gan_pixel_diversity_vs_real", "pixel diversity"))


def _gan_quality(h: Headline, df: pd.DataFrame) -> list[str]:
    """How good the GAN under test was on its confirm seeds: each quality metric as a share of the same metric of
    real training images against the same validation reference (1 = as good as real images), median and worst."""
    p = h.gan
    if p is None or not h.confirm_only or "gan_key" not in df or "stage" not in df:
        return []
    sid = df["setup_id"] if "setup_id" in df else df["config_id"]
    mine = df[(df["stage"] == "classifier") & (df["arm"] == p.arm) & (sid == p.setup_id)]
    if "sweep_phase" in mine:  # the search's run of the same setup is not a confirm seed
        mine = mine[mine["sweep_phase"] == "confirm"]
    gans = df[(df["stage"] == "gan") & df["gan_key"].isin(set(mine["gan_key"].dropna()) - {""})]
    parts = []
    for col, label in QUALITY_SHARES:
        v = pd.to_numeric(gans.get(col, pd.Series(dtype=float)), errors="coerce").dropna()
        if len(v):
            parts.append(f"{label} {v.median():.2f}x (worst {v.min():.2f}x)")
    if not parts:
        return []
    return [f"How good the GAN under test was ({len(gans)} confirm GAN(s), one per seed): " + ", ".join(parts)
            + " of the real training images' own value against the same real validation images (median over "
            "seeds; 1 = as good as real images)."]


def _external_quality(h: Headline, df: pd.DataFrame) -> list[str]:
    """How good each external set was (audited once, against the same real validation images as our GAN) and
    the synthetic ratio chosen for it on validation."""
    out = []
    keys = [*h.externals] + ([f"{EXTERNAL}{h.primary_external}"] if h.primary_external else [])
    for key in keys:
        name = key[len(EXTERNAL):]
        p = h.stacked if name == h.primary_external else h.pick(key)
        rows = df[(df.get("arm") == "external") & (df.get("external") == name)] if "external" in df else df.iloc[:0]
        if rows.empty:
            continue
        r = rows.iloc[0]
        parts = [f"{label} {float(r[col]):.2f}x" for col, label in QUALITY_SHARES
                 if col in rows and np.isfinite(pd.to_numeric(r[col], errors="coerce"))]
        ratio = _num(p.summary, "synthetic_ratio") if p is not None else math.nan
        leaks = [int(pd.to_numeric(r.get(c), errors="coerce")) for c in ("leak_val_copies", "leak_test_copies")
                 if np.isfinite(pd.to_numeric(r.get(c), errors="coerce"))]
        out.append(f"External set {name!r}: quality " + (", ".join(parts) + " of the real training images' own "
                   "value against the same real validation images" if parts else "not measured")
                   + (f"; leak audit {leaks[0]} validation / {leaks[1]} test near-copies"
                      + (" (judged anyway: --allow-leaky; its test numbers may be inflated)" if sum(leaks) else "")
                      if len(leaks) == 2 else "")
                   + (f"; synthetic ratio chosen on validation: {ratio:g}" if np.isfinite(ratio) else "") + ".")
    return out
