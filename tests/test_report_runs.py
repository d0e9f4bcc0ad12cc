"""The report's section on the headline's runs (analysis.report_runs): confusion matrices, ROC / PR curves,
classifier training curves and per-class metrics of the baseline, the GAN and the best control, built through
`python -m analysis.report` (analysis.report.main) from REAL classifier run folders (trainables.classifier,
2 epochs on a tiny demo set, ~0.3 s each) named by results rows made from each run's own metrics.json.

The "gan" arm's runs are plain classifier runs with another seed and LR (no GAN is trained here): the report
reads run folders, not how they were trained, and the sweep's own smoke test covers real GAN arms.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.report import main
from analysis.schema import METRIC_NAMES
from demo_data import make_demo, write_three_class_folder

IMG = '<img src="data:image/png;base64,'
SEEDS = (1000, 1001, 1002)
# arm -> (classifier settings, config_id); the GAN arm is the one the search fixed (confirm_rank 1)
ARMS = {"baseline": ({"imbalance_fix": "none", "lr": 1e-3}, "cfg_base"),
        "gan": ({"imbalance_fix": "none", "lr": 3e-3}, "cfg_gan"),
        "class_weight": ({"imbalance_fix": "class_weight", "lr": 1e-3}, "cfg_cw"),
        "oversample": ({"imbalance_fix": "oversample", "lr": 1e-3}, "cfg_os")}
SMALL = {"model": "small_cnn", "image_size": 16, "batch_size": 16, "device": "cpu", "num_epochs": 2}


def _runs(manifest: Path, root: Path, arms=ARMS, seeds=SEEDS) -> list[dict]:
    """Real classifier runs under root/classifiers/<trial>, and the results rows the sweep would write for them."""
    from trainables.classifier.run import run_classifier_local

    rows = []
    for arm, (cfg, cid) in arms.items():
        for seed in seeds:
            trial = f"{cid}_{seed}"
            run = root / "classifiers" / trial
            out = run_classifier_local(manifest, run, {**SMALL, **cfg, "seed": seed})
            rows.append({"sweep_name": "t", "trial_id": trial, "stage": "classifier", "arm": arm, "config_id": cid,
                         "setup_id": f"setup_{arm}", "seed": seed, "status": "ok", "error": "",
                         "sweep_phase": "confirm", "confirm_rank": 1 if arm == "gan" else None,
                         "gan_loss": "hinge" if arm == "gan" else "", "synthetic_ratio": 1.0 if arm == "gan" else 0.0,
                         "clf_run_dir": str(run),
                         **{f"{s}_{m}": float(out[s][m]) for s in ("val", "test") for m in METRIC_NAMES}})
    return rows


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these runs are tiny, and on a busy 2-core machine a second thread made each ~20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("sweep")
    return root, _runs(make_demo(root / "data", 60, 20, 16), root)


def _write(folder: Path, rows: list[dict], best_control: str) -> Path:
    """results.parquet in `folder`; `best_control` gets the higher validation F1 of the two controls, and a
    search-phase run of the GAN config with a perfect test F1 is added (it must not appear)."""
    rows = [dict(r) for r in rows]
    for r in rows:
        if r["arm"] in ("class_weight", "oversample"):
            r["val_f1"] = 0.9 if r["arm"] == best_control else 0.5
    search = dict(next(r for r in rows if r["arm"] == "gan"), trial_id="search_0", seed=0, sweep_phase="search",
                  confirm_rank=None, test_f1=1.0, clf_run_dir="/nowhere/classifiers/search_0")
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows + [search]).to_parquet(folder / "results.parquet", index=False)
    return folder / "results.parquet"


def _report(results: Path, out: Path) -> str:
    assert main([str(results), "--out", str(out)]) == 0
    return (out / "report.md").read_text()


def test_report_shows_the_verdicts_runs_with_figures_and_their_labels_follow_the_best_control(sweep, tmp_path):
    root, rows = sweep
    for best, label, other in (("class_weight", "Best control (class-weighted loss)", "random oversampling"),
                               ("oversample", "Best control (random oversampling)", "class-weighted loss")):
        out = tmp_path / best
        results = _write(root / best, rows, best)
        md = _report(results, out)
        section = md[md.index("## The headline's runs"):md.index("## Per GAN loss")]
        for png in ("confusion_test.png", "roc_pr_test.png", "clf_training_curves.png"):
            assert (out / png).is_file() and f"]({png})" in section, png
        assert (out / "report.html").read_text().count(IMG) == len(list(out.glob("*.png")))
        assert label in section and other not in section
        assert "summed over the seeds (runs)" in section and "Per-class metrics" not in md  # two classes: no table
        assert "Missing run files" not in section and "Not drawn" not in section

        hl = analysis.headline(analysis.load(results))
        shown = pd.read_csv(out / "headline_runs.csv")
        picked = {k: getattr(hl, k).config_id for k in ("baseline", "gan", "control")}
        assert dict(zip(shown["arm"], shown["config_id"])) == picked
        assert picked["control"] == ARMS[best][1]
        assert set(shown["seed"]) == set(SEEDS)  # the search run (seed 0, test F1 1.0) is not shown
        for arm, g in shown.groupby("arm"):
            rep = g[g["representative"]].iloc[0]
            f1 = sorted(zip(g["test_f1"], g["seed"]))
            assert rep["seed"] == f1[(len(f1) - 1) // 2][1]  # the median real-test F1
            m = json.loads((Path(rep["run_dir"]) / "metrics.json").read_text())
            # the curves' areas, from test_scores.csv, are the run's own test ROC-AUC / PR-AUC
            assert rep["roc_auc_from_scores"] == pytest.approx(m["test"]["roc_auc"], abs=1e-5)
            assert rep["ap_from_scores"] == pytest.approx(m["test"]["pr_auc"], abs=1e-5)
            assert f"AUC {rep['roc_auc_from_scores']:.3f}" not in md  # the numbers live in the figure's legend
            scores = pd.read_csv(Path(rep["run_dir"]) / "test_scores.csv")
            assert len(scores) == m["test"]["n"] and scores["row"].tolist() == list(range(m["test"]["n"]))
            assert (scores["label"] == m["positive_label"]).sum() == m["test"]["tp"] + m["test"]["fn"]


def test_moved_sweep_folder_finds_its_runs_and_missing_runs_are_a_note(sweep, tmp_path):
    root, rows = sweep
    # results.parquet beside the sweep's classifiers/ folder, its rows naming another machine's paths: found
    moved = rows_at(rows, root, Path("/old/machine/sweep"))
    results = _write(root, moved, "oversample")
    md = _report(results, tmp_path / "found")
    assert "roc_pr_test.png" in md and "Missing run files" not in md
    # the same file copied alone elsewhere: the section says what is missing, the rest of the report stands
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(results, alone / "results.parquet")
    md = _report(alone / "results.parquet", tmp_path / "lost")
    section = md[md.index("## The headline's runs"):md.index("## Per GAN loss")]
    assert "Missing run files (9 run(s)" in section and "run folder not found (/old/machine/sweep/" in section
    assert section.count("Not drawn:") == 3 and "## Headline" in md and "nan" not in section.lower()
    assert not (tmp_path / "lost" / "roc_pr_test.png").exists()
    # rows naming run folders by store URI (a sweep with remote storage): read in place through pyarrow.fs
    uris = rows_at(rows, root, Path("/STORE"))
    uris = [dict(r, clf_run_dir=r["clf_run_dir"].replace("/STORE", (root).as_uri())) for r in uris]
    assert uris[0]["clf_run_dir"].startswith("file:///")
    md = _report(_write(tmp_path / "driver", uris, "oversample"), tmp_path / "remote")
    assert "roc_pr_test.png" in md and "Missing run files" not in md
    shown = pd.read_csv(tmp_path / "remote" / "headline_runs.csv")
    assert shown["run_dir"].str.startswith("file:///").all() and shown["found"].all()
    # a run folder without test_scores.csv (made before it existed): no ROC/PR for that arm, said so
    old = tmp_path / "old"
    shutil.copytree(root / "classifiers", old / "classifiers")
    for f in (old / "classifiers").glob("cfg_os_*/test_scores.csv"):
        f.unlink()
    md = _report(_write(old, rows_at(rows, root, old), "oversample"), tmp_path / "no_scores")
    assert "no test_scores.csv" in md and "roc_pr_test.png" in md
    shown = pd.read_csv(tmp_path / "no_scores" / "headline_runs.csv")
    assert shown.loc[shown["arm"] == "control", "roc_auc_from_scores"].isna().all()
    assert shown.loc[shown["arm"] == "gan", "roc_auc_from_scores"].notna().sum() == 1


def test_cv_folds_are_runs_of_their_seed(sweep, tmp_path):
    """Results of a --folds K confirm phase (a "fold" column; one classifier run per seed and fold, the folds
    sharing the real test set): every (seed, fold) is a run, and the representative is their median."""
    root, rows = sweep
    folded = [dict(r, fold=f, trial_id=f"{r['trial_id']}_f{f}", test_f1=r["test_f1"] + f / 100)
              for r in rows for f in (0, 1)]
    md = _report(_write(tmp_path / "cv", folded, "class_weight"), tmp_path / "rep")
    shown = pd.read_csv(tmp_path / "rep" / "headline_runs.csv")
    assert len(shown) == 3 * len(SEEDS) * 2 and set(shown["fold"]) == {0, 1}
    for _, g in shown.groupby("arm"):
        f1 = sorted(zip(g["test_f1"], g["seed"], g["fold"]))
        rep = g[g["representative"]].iloc[0]
        assert (rep["seed"], rep["fold"]) == f1[(len(f1) - 1) // 2][1:]
    assert "of 6 runs (seeds x folds)" in md and "fold " in md


def rows_at(rows: list[dict], old_root: Path, new_root: Path) -> list[dict]:
    return [dict(r, clf_run_dir=r["clf_run_dir"].replace(str(old_root), str(new_root))) for r in rows]


def test_multi_class_sets_get_a_per_class_table_and_square_confusion_matrices(tmp_path):
    import data_prep

    src = write_three_class_folder(tmp_path / "img")
    data_prep.prepare(data_prep.PrepConfig(source=str(src), image_size=16), tmp_path / "d", progress=False)
    arms = {k: ARMS[k] for k in ("baseline", "gan", "class_weight")}
    rows = _runs(tmp_path / "d" / "manifest.parquet", tmp_path / "sweep", arms, seeds=(1000, 1001))
    md = _report(_write(tmp_path / "sweep", rows, "class_weight"), tmp_path / "rep")
    section = md[md.index("## The headline's runs"):md.index("## Per GAN loss")]
    assert "### Per-class metrics on real test" in section and "| dog (+) |" in section
    per = pd.read_csv(tmp_path / "rep" / "per_class_test.csv")
    assert sorted(per["class"].unique()) == ["bird", "cat", "dog"] and set(per["arm"]) == {"baseline", "gan",
                                                                                            "control"}
    n_test = json.loads((Path(rows[0]["clf_run_dir"]) / "metrics.json").read_text())["test"]["n"]
    assert per.groupby("arm")["support"].sum().eq(n_test).all()
    for arm, (_, cid) in arms.items():  # the table's numbers are the seeds' mean of each run's per_class
        f1 = [json.loads((tmp_path / "sweep" / "classifiers" / f"{cid}_{s}" / "metrics.json").read_text())
              ["test"]["per_class"]["cat"]["f1"] for s in (1000, 1001)]
        key = "control" if arm == "class_weight" else arm
        assert per[(per["arm"] == key) & (per["class"] == "cat")]["f1"].iloc[0] == pytest.approx(np.mean(f1))
    assert (tmp_path / "rep" / "confusion_test.png").is_file()


def test_roc_and_average_precision_match_torchmetrics_with_ties():
    import torch
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    from analysis.runs import pr, roc

    rng = np.random.default_rng(3)
    for n in (7, 50, 400):
        y = rng.random(n) < 0.3
        y[:2] = (True, False)
        s = np.round(rng.random(n), 1)  # many ties
        _, _, auc = roc(y, s)
        recall, precision, ap = pr(y, s)
        yt, st = torch.as_tensor(y.astype(np.int64)), torch.as_tensor(s)
        assert auc == pytest.approx(float(binary_auroc(st, yt, thresholds=None)), abs=1e-6)
        assert ap == pytest.approx(float(binary_average_precision(st, yt, thresholds=None)), abs=1e-6)
        assert recall[0] == 0 and recall[-1] == 1 and np.all(np.diff(recall) >= 0)
    assert np.isnan(roc(np.ones(4, bool), np.arange(4.0))[2]) and np.isnan(pr(np.zeros(4, bool), np.arange(4.0))[2])
