"""Every entry point the README names has a --smoke-test that runs in seconds on a CPU (issue 25: every README
promise true). The sweep's and the trainers' smoke tests run in their own test files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_data_prep_smoke_test_with_and_without_out(tmp_path):
    dry = _run("-m", "data_prep", "--smoke-test")
    assert dry.returncode == 0, dry.stderr
    assert "imbalance ratio (largest / smallest class): 5.00:1" in dry.stdout and "dry run: nothing written" in dry.stdout
    out = _run("-m", "data_prep", "--smoke-test", "--out", str(tmp_path / "m"))
    assert out.returncode == 0, out.stderr
    m = pd.read_parquet(tmp_path / "m" / "manifest.parquet")
    assert len(m) == 72 and set(m["split"]) == {"train", "val", "test"}


def test_analysis_report_smoke_test_renders_a_made_up_table(tmp_path):
    r = _run("-m", "analysis.report", "--smoke-test", "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "smoke_test_made_up_numbers" in md and "**Answer: cannot be assessed.**" in md
    assert (tmp_path / "rep" / "report.html").is_file()
    assert _run("-m", "analysis.report").returncode == 2  # neither results nor --smoke-test: a usage error


def test_gan_sample_smoke_test_samples_a_freshly_trained_checkpoint(tmp_path):
    r = _run("-m", "trainables.gan.sample", "--smoke-test", "--output-dir", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    pngs = sorted((tmp_path / "s").glob("synthetic_*.png"))
    assert len(pngs) == 16 and "16 PNG(s)" in r.stdout
    rows = pd.read_parquet(tmp_path / "s" / "manifest.parquet")
    assert len(rows) == 16 and rows["is_synthetic"].all() and set(rows["split"]) == {"train"}
    bare = _run("-m", "trainables.gan.sample")  # neither the three paths nor --smoke-test: a usage error
    assert bare.returncode == 2 and "--smoke-test" in bare.stderr


def test_analysis_export_smoke_test_exports_a_freshly_trained_run(tmp_path):
    r = _run("-m", "analysis.export", "--smoke-test", "--out", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "chosen on real validation: config smoke" in r.stdout
    data = tmp_path / "x" / "data"
    assert list((data / "train" / "malignant").glob("synthetic_*")) and list((data / "test" / "benign").glob("real_*"))
    assert not list((data / "test").rglob("synthetic_*"))  # real only outside train
    assert (tmp_path / "x" / "classifier.yaml").is_file()
    assert _run("-m", "analysis.export").returncode == 2  # neither results nor --smoke-test: a usage error
