"""Fault 7: security. Checkpoints and weights load with weights_only=True (a pickle that runs code is refused
by every loader), user files are never unpickled (object-array .npz refused), CSV paths cannot leave the
dataset root unless allowed, and cluster.yaml keeps the dashboard on the head's localhost."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("data_prep", "trainables", "sweeps", "analysis")


class _Payload:
    """Unpickling this runs code: it creates the file named in `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def malicious_pt(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "checkpoint_000001.pt"
    torch.save({"format": "ganaug-gan-checkpoint-v1", "G_ema": _Payload(marker)}, path)
    with pytest.raises(Exception):  # sanity: the file really is a code-running pickle under weights_only=True
        torch.load(path, weights_only=True)
    return path, marker


def test_gan_checkpoint_loaders_refuse_code_pickles(malicious_pt):
    from data_prep.errors import DataError
    from trainables.gan.run_files import load_checkpoint
    from trainables.gan.sample import load_generator

    path, marker = malicious_pt
    for load in (load_checkpoint, load_generator):
        with pytest.raises(DataError, match=re.escape(str(path))):
            load(path)
    assert not marker.exists()


def test_classifier_weights_and_resume_state_refuse_code_pickles(malicious_pt, fault_manifest, tmp_path):
    from data_prep.errors import ConfigError
    from trainables.classifier.models import build_model
    from trainables.classifier.run import run_classifier_local

    path, marker = malicious_pt
    with pytest.raises(ConfigError, match="not a loadable torch state dict"):
        build_model("small_cnn", 2, 3, 32, str(path))
    ckpts = tmp_path / "clf" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.pt").write_bytes(path.read_bytes())  # a poisoned resume file in a run folder
    with pytest.raises(Exception, match="Unsupported global|weights_only"):
        run_classifier_local(fault_manifest, tmp_path / "clf", {"model": "small_cnn", "num_epochs": 1,
                                                                "image_size": 32}, resume=True)
    assert not marker.exists()


def test_every_torch_load_and_np_load_in_the_code_is_pickle_free():
    """Static guard: no torch.load without weights_only=True, no np.load with allow_pickle=True, no pickle.load."""
    offenders = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            src = f.read_text()
            for m in re.finditer(r"torch\.load\(", src):
                call = src[m.start():].split(")\n", 1)[0]  # up to the end of the call's statement
                if "weights_only=True" not in call:
                    offenders.append(f"{f.relative_to(ROOT)}: torch.load without weights_only=True")
            if "allow_pickle=True" in src:
                offenders.append(f"{f.relative_to(ROOT)}: allow_pickle=True")
            if re.search(r"\bpickle\.loads?\(", src) or "cloudpickle.load" in src:
                offenders.append(f"{f.relative_to(ROOT)}: pickle.load")
    assert not offenders, offenders


def test_object_array_npz_is_refused_without_unpickling(tmp_path):
    from data_prep.errors import DataError
    from data_prep.sources import scan_source

    marker = tmp_path / "PWNED"
    np.savez(tmp_path / "evil.npz", images=np.array([_Payload(marker)] * 3, dtype=object),
             labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="pickled objects"):
        scan_source(str(tmp_path / "evil.npz"))
    assert not marker.exists()


def test_csv_paths_cannot_escape_the_dataset_root_unless_allowed(tmp_path, capsys):
    from PIL import Image

    from data_prep.__main__ import main

    outside = tmp_path / "secret"
    for i in range(8):
        for cls, n in (("a", 8), ("b", 5)):
            if i < n:
                (outside / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8, 3), i * 20 + (cls == "b") * 7, np.uint8)).save(outside / cls / f"{i}.png")
    root = tmp_path / "data"
    root.mkdir()
    rows = [f"../secret/{c}/{i}.png,{c}" for c, n in (("a", 8), ("b", 5)) for i in range(n)]
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (root / "abs.csv").write_text(f"path,label\n{outside / 'a' / '0.png'},a\n")
    for csv in ("labels.csv", "abs.csv"):
        assert main(["--source", str(root / csv), "--dry-run", "--image-size", "8"]) == 2
        err = capsys.readouterr().err
        assert "resolves outside the CSV's folder" in err and "row 2" in err
    assert main(["--source", str(root / "labels.csv"), "--dry-run", "--image-size", "8", "--allow-outside-root"]) == 0


def test_cluster_yaml_keeps_the_dashboard_on_localhost():
    text = (ROOT / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in text
    assert "RAY_AUTH_MODE=disabled" not in text  # token auth stays on
    for cmd in cfg.get("worker_start_ray_commands", []):
        assert "--dashboard-host" not in cmd or "127.0.0.1" in cmd
