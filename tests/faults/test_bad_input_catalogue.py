"""Fault 6: the bad input catalogue. One case per row of the "Bad input catalogue" table
in docs/reliability.md.

Each case builds one bad input in a temporary folder and feeds it through the user-facing path (a CLI `main()`
returning exit status 2, or the public function a sweep calls); the message must name the culprit: the file,
the CSV row, the key or the value. Every case takes well under a second (no training, no Ray).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path, size: int = 16, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def _class_folders(root: Path, counts=(12, 6)) -> Path:
    for name, n in zip(("benign", "malignant"), counts):
        for i in range(n):
            _png(root / name / f"{i:03d}.png", value=(i * 17 + len(name) * 5) % 255)
    return root


def _prep(argv):
    from data_prep.__main__ import main
    return main(argv)


def _gan(argv):
    from trainables.gan.__main__ import main
    return main(argv)


def _sample(argv):
    from trainables.gan.sample import main
    return main(argv)


def _clf(argv):
    from trainables.classifier.__main__ import main
    return main(argv)


def _sweep(argv):
    from sweeps.augment_ratio import main
    return main(argv)


def _report(argv):
    from analysis.report import main
    return main(argv)


def _export(argv):
    from analysis.export import main
    return main(argv)


# ---- the cases: name -> fn(tmp, manifest) returning (cli, argv, substrings the message must contain) ----------

def c_source_missing(t, m):
    return _prep, ["--source", str(t / "nope"), "--out", str(t / "o")], ["source not found", str(t / "nope")]


def c_csv_missing_column(t, m):
    (t / "l.csv").write_text("file,label\na.png,x\n")
    return _prep, ["--source", str(t / "l.csv"), "--out", str(t / "o")], [str(t / "l.csv"), "missing column(s) ['path']"]


def c_csv_row_file_missing(t, m):
    _class_folders(t / "img")
    rows = [f"img/benign/{i:03d}.png,benign" for i in range(12)] + ["img/malignant/404.png,malignant"]
    (t / "l.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return _prep, ["--source", str(t / "l.csv"), "--out", str(t / "o")], ["row 14", "file not found", "404.png"]


def c_csv_path_escapes_root(t, m):
    _png(t / "outside.png")
    (t / "d").mkdir()
    (t / "d" / "l.csv").write_text("path,label\n../outside.png,benign\n")
    return _prep, ["--source", str(t / "d" / "l.csv"), "--out", str(t / "o")], \
        ["row 2", "'../outside.png'", "outside the CSV's folder", "--allow-outside-root"]


def c_unreadable_image(t, m):
    _class_folders(t / "img")
    (t / "img" / "malignant" / "broken.png").write_bytes(b"not a png at all")
    return _prep, ["--source", str(t / "img"), "--out", str(t / "o")], ["unreadable image", "broken.png", "--skip-bad"]


def c_npz_pickled_objects(t, m):
    np.savez(t / "d.npz", images=np.array([object()] * 4, dtype=object), labels=np.zeros(4))
    return _prep, ["--source", str(t / "d.npz"), "--out", str(t / "o")], [str(t / "d.npz"), "pickled objects"]


def c_npz_label_count(t, m):
    np.savez(t / "d.npz", images=np.zeros((10, 8, 8), np.uint8), labels=np.zeros(9, np.int64))
    return _prep, ["--source", str(t / "d.npz"), "--out", str(t / "o")], [str(t / "d.npz"), "9 labels", "10 images"]


def c_fractions_sum(t, m):
    return _prep, ["--source", "demo", "--out", str(t / "o"), "--fractions", "0.7,0.2,0.2"], \
        ["fractions must sum to 1", "(0.7, 0.2, 0.2)"]


def c_relabel_syntax(t, m):
    return _prep, ["--source", "demo", "--out", str(t / "o"), "--relabel", "MT_Crack:defect"], \
        ["label map entry 'MT_Crack:defect'", "SOURCE=TASK"]


def c_positive_not_a_class(t, m):
    return _prep, ["--source", "demo", "--out", str(t / "o"), "--demo-counts", "30,6", "--positive", "cancer"], \
        ["positive class 'cancer'", "benign"]


def c_single_class(t, m):
    for i in range(6):
        _png(t / "img" / "only" / f"{i}.png", value=i * 30)
    return _prep, ["--source", str(t / "img"), "--out", str(t / "o")], ["found 1 class", "'only'", "at least 2"]


def c_manifest_missing(t, m):
    return _gan, ["--manifest", str(t / "m.parquet"), "--out", str(t / "g"), "--smoke-test"], \
        ["manifest not found", str(t / "m.parquet")]


def c_manifest_not_ours(t, m):
    pd.DataFrame({"a": [1]}).to_parquet(t / "m.parquet")
    return _gan, ["--manifest", str(t / "m.parquet"), "--out", str(t / "g"), "--smoke-test"], \
        [str(t / "m.parquet"), "without ganaug metadata"]


def c_gan_loss_unknown(t, m):
    return _gan, ["--manifest", str(m), "--out", str(t / "g"), "--smoke-test", "--loss", "lsgan"], \
        ["unknown GAN loss 'lsgan'", "hinge"]


def c_gan_config_unknown_key(t, m):
    (t / "gan.yaml").write_text("gan:\n  learning_rate: 0.001\n")
    return _gan, ["--manifest", str(m), "--out", str(t / "g"), "--config", str(t / "gan.yaml")], \
        ["key(s) ['learning_rate']", "lr_g"]


def c_gan_checkpoint_garbage(t, m):
    (t / "checkpoint_000001.pt").write_bytes(b"\x00truncated")
    return _sample, ["--checkpoint", str(t / "checkpoint_000001.pt"), "--num-samples", "4",
                     "--output-dir", str(t / "s")], [str(t / "checkpoint_000001.pt"), "not a loadable GAN checkpoint"]


def c_gan_checkpoint_foreign(t, m):
    import torch
    torch.save({"weights": torch.zeros(2)}, t / "foreign.pt")
    return _sample, ["--checkpoint", str(t / "foreign.pt"), "--num-samples", "4", "--output-dir", str(t / "s")], \
        [str(t / "foreign.pt"), "is not a GAN checkpoint of this project"]


def c_sample_count(t, m):
    return _sample, ["--checkpoint", str(t / "c.pt"), "--num-samples", "0", "--output-dir", str(t / "s")], \
        ["num_samples must be a positive integer", "0"]


def c_classifier_model_unknown(t, m):
    return _clf, ["--manifest", str(m), "--out", str(t / "c"), "--smoke-test", "--model", "vgg16"], \
        ["unknown model 'vgg16'", "small_cnn"]


def c_classifier_weights_missing(t, m):
    return _clf, ["--manifest", str(m), "--out", str(t / "c"), "--smoke-test", "--weights", str(t / "w.pt")], \
        ["weights file not found", str(t / "w.pt")]


def c_synthetic_ratio_without_dir(t, m):
    return _clf, ["--manifest", str(m), "--out", str(t / "c"), "--smoke-test", "--synthetic-ratio", "2"], \
        ["--synthetic-ratio", "--synthetic DIR"]


def c_synthetic_ratio_range(t, m):
    return _clf, ["--manifest", str(m), "--out", str(t / "c"), "--smoke-test", "--synthetic", str(t),
                  "--synthetic-ratio", "50"], ["synthetic_ratio must be in [0, 10]", "50"]


def c_synthetic_leak(t, m):
    from data_prep.manifest import read_manifest
    syn = t / "syn"
    syn.mkdir()
    rows = read_manifest(m).df.query("split == 'train'").head(4).assign(is_synthetic=True, split="val")
    rows.to_parquet(syn / "manifest.parquet")
    return _clf, ["--manifest", str(m), "--out", str(t / "c"), "--smoke-test", "--synthetic", str(syn)], \
        [str(syn / "manifest.parquet"), "split != 'train'"]


def c_sweep_yaml_unknown_key(t, m):
    (t / "s.yaml").write_text("num_sample: 3\n")
    return _sweep, ["--config", str(t / "s.yaml"), "--storage-path", str(t / "r")], ["['num_sample']", "num_samples"]


def c_sweep_yaml_missing(t, m):
    return _sweep, ["--config", str(t / "s.yaml")], ["sweep config file not found", str(t / "s.yaml")]


def c_sweep_ratio_range(t, m):
    (t / "s.yaml").write_text("synthetic_ratios: [0.5, 12]\n")
    return _sweep, ["--config", str(t / "s.yaml"), "--storage-path", str(t / "r")], \
        ["synthetic_ratios must be in (0, 10]", "12"]


def c_sweep_manifest_not_ours(t, m):
    pd.DataFrame({"a": [1]}).to_parquet(t / "m.parquet")
    return _sweep, ["--manifest", str(t / "m.parquet"), "--storage-path", str(t / "r"), "--no-report"], \
        [str(t / "m.parquet"), "without ganaug metadata"]


def c_results_missing(t, m):
    return _report, [str(t / "results.parquet"), "--out", str(t / "rep")], ["results file not found",
                                                                          str(t / "results.parquet")]


def c_results_not_ours(t, m):
    pd.DataFrame({"a": [1]}).to_parquet(t / "results.parquet")
    return _report, [str(t / "results.parquet"), "--out", str(t / "rep")], \
        [str(t / "results.parquet"), "lacks required column(s)", "trial_id"]


def c_presplit_tree_no_choice(t, m):
    for s in ("train", "test"):
        _class_folders(t / "tree" / s)
    return _prep, ["--source", str(t / "tree"), "--out", str(t / "o")], \
        [str(t / "tree"), "split folders train/, test/", "--use-given-split", "--resplit"]


def c_csv_bad_split_value(t, m):
    _class_folders(t / "img")
    rows = [f"img/benign/{i:03d}.png,benign,train" for i in range(12)] + ["img/malignant/000.png,malignant,tset"]
    (t / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return _prep, ["--source", str(t / "l.csv"), "--out", str(t / "o"), "--use-given-split"], \
        [str(t / "l.csv"), "row 14", "split 'tset'", "expected one of train, val, test"]


def c_classifier_folds_with_synthetic(t, m):
    return _clf, ["--manifest", str(m), "--out", str(t / "c"), "--smoke-test", "--folds", "3", "--synthetic", str(t)], \
        ["k-fold CV (3 folds) with synthetic images", "leak", "without --synthetic", "drop --folds"]


def c_classifier_config_unknown_key(t, m):
    (t / "c.yaml").write_text("classifier:\n  learning_rate: 0.01\n")
    return _clf, ["--manifest", str(m), "--out", str(t / "c"), "--config", str(t / "c.yaml")], \
        [str(t / "c.yaml"), "['learning_rate']", "lr"]


def c_export_no_gan_row(t, m):
    pd.DataFrame({"sweep_name": ["s"], "trial_id": ["t1"], "stage": ["classifier"], "arm": ["baseline"],
                  "config_id": ["c"], "seed": [0], "status": ["ok"], "error": [""], "val_f1": [0.9]}
                 ).to_parquet(t / "results.parquet")
    return _export, [str(t / "results.parquet"), "--out", str(t / "exp")], \
        [str(t / "results.parquet"), "no successful GAN configuration"]


CASES = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("c_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_naming_the_culprit(case, fault_manifest, tmp_path, capsys):
    cli, argv, must_name = CASES[case](tmp_path, fault_manifest)
    rc = cli(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"{case}: exit status {rc}, stderr: {err}"
    assert err.startswith("error: "), err
    for s in must_name:
        assert s in err, f"{case}: {s!r} not in: {err}"


def test_docs_catalogue_lists_every_case():
    """The docs/reliability.md table and this file stay in step: one row per case, named in the table's last column."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("## Bad input catalogue", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    named = {ln.rstrip(" |").rsplit("|", 1)[-1].strip(" `") for ln in rows}
    assert named == set(CASES), (sorted(set(CASES) - named), sorted(named - set(CASES)))
    assert len(CASES) >= 15
