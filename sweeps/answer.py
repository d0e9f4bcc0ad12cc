"""What the sweep prints when it ends: the verdict and each arm's real-test numbers, and the disk it used."""
from __future__ import annotations

from pathlib import Path


def summarize(df, base: Path | None = None) -> str:
    """The answer in a few lines: the headline's verdict and each arm's real-test numbers (confirm phase).
    base: the sweep's folder, where the classifier run folders (their test scores) are found."""
    import analysis
    from analysis.claims import arm_keys, arm_text
    from analysis.scores import RunScores
    from analysis.tables import METRIC_LABELS

    tidy = analysis.tidy(df)
    if analysis.classifier_rows(tidy).empty:
        return "no trial finished successfully; see the failed rows in results.parquet"
    h = analysis.headline(tidy, scores=RunScores(base))
    t = h.table.set_index("metric")
    head = f"  {'arm':<44}{'seeds':>6}{'val F1':>9}{'test F1':>9}{'test sens':>11}{'test AUC':>10}"
    rows = []
    for key in arm_keys(h):
        pick = h.pick(key)
        if pick is None:
            continue
        label = arm_text(h, key)
        if key in ("stacked", "gan") and pick.config_id and not h.primary_external:
            label += f" ({pick.summary.get('gan_loss', '')}, ratio {pick.summary.get('synthetic_ratio', 0):g})"
        elif pick.arm == "external":  # the set's name first: the control's description would hide it
            name = h.primary_external if key == "stacked" else key.split(":", 1)[1]
            ratio = f" ratio {pick.summary.get('synthetic_ratio', 0):g}" if pick.config_id else ""
            label = f"external {name!r}{ratio}" + (" + C" if h.control is not None else "")
        label = label if len(label) <= 42 else label[:39] + "..."
        rows.append(f"  {label:<44}{len(pick.seeds_ok):>6}{t.loc['f1', key + '_val_mean']:>9.3f}"
                    f"{t.loc['f1', key + '_mean']:>9.3f}{t.loc['sensitivity', key + '_mean']:>11.3f}"
                    f"{t.loc['roc_auc', key + '_mean']:>10.3f}")
    verdict = [m.replace("**", "") for m in h.messages] + refused_lines(base)
    return "\n".join(["real-test metrics of the confirm phase, mean over seeds (every choice made on val):", head]
                     + rows + [""] + verdict + [f"({METRIC_LABELS['f1']} and sensitivity carry the claims; "
                                                "the report has the tests and what they cover.)"])


def refused_lines(base: Path | None) -> list[str]:
    """External sets refused as arms (a leak, too few images) and leaky sets judged anyway: said loudly."""
    from analysis.report_external import external_records

    out = []
    for rec in external_records(base):
        if rec.get("refused"):
            out.append(f"EXTERNAL SET {rec['name']!r} REFUSED: {rec['refused']}")
        elif rec.get("leaky"):
            out.append(f"WARNING: external set {rec['name']!r} holds near-copies of real held-out images and was "
                       f"judged anyway (--allow-leaky): its test numbers may be inflated")
    return out


def disk_use(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def finish(cfg, table, work: Path, no_report: bool) -> None:
    """results.parquet to its storage, the answer printed, the report written."""
    results = table.write()  # and to remote storage (ResultsTable.store)
    print("\n" + summarize(table.frame(), work))
    failed = table.frame().query("status != 'ok'")
    if len(failed):
        print(f"\n{len(failed)} trial row(s) failed or were stopped (reasons in results.parquet and the report)")
    print(f"\nresults: {results}")
    if no_report:
        return
    try:
        from analysis.report import build_report
        from sweeps.storage import sweep_store

        store = sweep_store(cfg, work)
        if store.remote:  # the runs' small files (histories, metrics, scores), found beside results.parquet
            for key in ("gans", "classifiers"):  # not checkpoints, synthetic sets, Train runs
                store.fetch(key, skip_suffixes=(".pt",), skip_folders=("synthetic", "samples", "ray"))
        report = build_report(results, work / "report")
        where = store.publish("report")
        print(f"report:  {where}/report.html (and report.md)")
    except Exception as exc:  # the results are safe on disk; say what went wrong with the report
        print(f"report could not be written ({type(exc).__name__}: {exc}); "
              f"try: python -m analysis.report {results} --out {work / 'report'}")
