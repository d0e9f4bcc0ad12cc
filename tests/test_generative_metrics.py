"""Generative metrics: FID/KID maths (and agreement with torchmetrics), precision/recall, diversity,
memorisation audit, the cached GAN evaluator, offline behaviour, Inception loading and the evaluate CLI.

Everything runs on CPU at 16-32 px; the domain CNN is trained once (2 epochs) into a module-scoped cache.
"""
from __future__ import annotations

import json
import socket
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainables.metrics import features as feat_mod
from trainables.metrics.features import (InceptionUnavailableError, extract_features, load_inception_extractor,
                                         resolve_extractor)
from trainables.metrics.generative import (DIVERSITY_WARN_RATIO, build_reference, compute_metrics,
                                           evaluate_synthetic, frechet_distance, gaussian_stats, inception_score,
                                           kernel_inception_distance, make_gan_evaluator, memorisation_audit,
                                           precision_recall_density_coverage)


class RandomFeatures(nn.Module):
    """A fixed random conv net: uint8 (N, C, H, W) -> (N, 32). Same contract as the real extractors."""

    kind = "random"
    name = "random-test"
    num_features = 32
    has_logits = False

    def __init__(self, channels: int = 3, double: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(channels, 16, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.double_out = double

    def forward(self, x):
        y = torch.relu(self.c2(torch.relu(self.c1(x.float() / 127.5 - 1.0)))).mean(dim=(2, 3))
        return y.double() if self.double_out else y


def smooth_images(n: int, size: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Distinct random low-frequency images (uint8)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (n, 4, 4, channels))
    x = torch.nn.functional.interpolate(torch.tensor(low).permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                                        align_corners=False)
    x = x + torch.tensor(rng.normal(0, 6, x.shape))
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("metrics_cache")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download or open a connection fails the test."""
    def boom(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(torch.hub, "load", boom)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(feat_mod, "find_packaged_inception", lambda: None)


# --------------------------------------------------------------------------------------------- FID / KID
def test_fid_zero_for_same_set_and_monotone_in_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    ref = gaussian_stats(x)
    assert abs(frechet_distance(ref, gaussian_stats(x))) < 1e-8
    fids = [frechet_distance(ref, gaussian_stats(x + s)) for s in (0.1, 0.3, 1.0, 2.0)]
    assert fids[0] > 0 and all(a < b for a, b in zip(fids, fids[1:]))
    assert fids[-1] == pytest.approx(16 * 4.0, rel=1e-6)  # pure mean shift: ||delta mu||^2


def test_fid_on_images_self_zero_and_brightness_monotone():
    ext = RandomFeatures()
    imgs = smooth_images(120, seed=1)
    ref = gaussian_stats(extract_features(ext, imgs))
    assert abs(frechet_distance(ref, gaussian_stats(extract_features(ext, imgs)))) < 1e-6
    vals = []
    for shift in (5, 20, 60):
        shifted = np.clip(imgs.astype(int) + shift, 0, 255).astype(np.uint8)
        vals.append(frechet_distance(ref, gaussian_stats(extract_features(ext, shifted))))
    assert 0 < vals[0] < vals[1] < vals[2]


def test_kid_is_unbiased_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(0)
    same = [kernel_inception_distance(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)), subsets=1,
                                      subset_size=100)[0] for _ in range(30)]
    assert min(same) < 0 < max(same)  # unbiased: can be slightly negative
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same)) + 1e-4
    shifted, std, m = kernel_inception_distance(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 1.0,
                                                subsets=10, subset_size=50)
    assert shifted > 10 * max(abs(v) for v in same) and std > 0 and m == 50


def test_fid_kid_agree_with_torchmetrics_same_feature_network():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = smooth_images(96, seed=2), np.clip(smooth_images(80, seed=3).astype(int) + 25, 0, 255).astype(np.uint8)
    ext = RandomFeatures()
    fr, ff = extract_features(ext, real), extract_features(ext, fake)
    ours_fid = frechet_distance(gaussian_stats(fr), gaussian_stats(ff))
    ours_kid, ours_std, _ = kernel_inception_distance(fr, ff, subsets=5, subset_size=60, seed=7)

    to_t = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())  # noqa: E731
    tm_fid = FrechetInceptionDistance(feature=RandomFeatures(double=True))
    tm_kid = KernelInceptionDistance(feature=RandomFeatures(double=True), subsets=5, subset_size=60)
    for metric in (tm_fid, tm_kid):
        metric.update(to_t(real), real=True)
        metric.update(to_t(fake), real=False)
    torch.manual_seed(7)  # torchmetrics draws subsets from the global generator, in our order
    kid_mean, kid_std = tm_kid.compute()
    assert ours_fid > 0.01
    assert ours_fid == pytest.approx(float(tm_fid.compute()), rel=1e-3)
    assert ours_kid == pytest.approx(float(kid_mean), rel=1e-3)
    assert ours_std == pytest.approx(float(kid_std), rel=1e-3)


def test_inception_score_bounds():
    assert inception_score(np.zeros((50, 10)), splits=5)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(100) % 10] * 50.0
    assert inception_score(confident, splits=2)[0] == pytest.approx(10.0, rel=1e-3)


# ------------------------------------------------------------------------- precision/recall, diversity
def test_precision_recall_separate_fidelity_from_diversity():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    same = precision_recall_density_coverage(real, rng.normal(size=(200, 8)))
    assert same["precision"] > 0.7 and same["recall"] > 0.7 and same["coverage"] > 0.7
    far = precision_recall_density_coverage(real, rng.normal(size=(200, 8)) + 10)
    assert far["precision"] == 0 and far["coverage"] == 0
    collapsed = precision_recall_density_coverage(real, np.repeat(real[:4], 50, axis=0) + rng.normal(0, 1e-3, (200, 8)))
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.2  # faithful but not diverse


def test_diversity_ratio_drops_for_collapsed_set():
    ext = RandomFeatures()
    real = smooth_images(80, seed=4)
    ref = build_reference(real, ext)
    diverse = smooth_images(80, seed=5)
    rng = np.random.default_rng(0)  # mode collapse: one image, repeated with slight pixel noise
    collapsed = np.clip(np.repeat(smooth_images(1, seed=6), 80, axis=0) + rng.integers(-4, 5, (80, 16, 16, 3)),
                        0, 255).astype(np.uint8)
    ok = compute_metrics(ref, diverse, extract_features(ext, diverse), full=False, kid_subsets=2)
    with pytest.warns(UserWarning, match="mode collapse"):
        bad = compute_metrics(ref, collapsed, extract_features(ext, collapsed), full=False, kid_subsets=2)
    assert ok["diversity_ratio"] > 0.8 and not ok["diversity_warning"]
    assert bad["diversity_ratio"] < DIVERSITY_WARN_RATIO and bad["diversity_warning"]
    assert bad["diversity_ratio"] < ok["diversity_ratio"] / 2


# -------------------------------------------------------------------------------------------- memorisation
def test_memorisation_audit_flags_planted_copies_not_distinct_images(tmp_path):
    ext = RandomFeatures()
    train = smooth_images(120, seed=7)
    ref = build_reference(train, ext)
    rng = np.random.default_rng(0)
    exact = train[:4]
    near = np.clip(train[4:8].astype(int) + rng.integers(-3, 4, train[4:8].shape), 0, 255).astype(np.uint8)
    distinct = smooth_images(60, seed=8)  # new images from the same distribution: flagged only by chance
    fake = np.concatenate([exact, near, distinct])
    summary, per = memorisation_audit(fake, extract_features(ext, fake), ref)
    assert per["flag_pixel"][:8].all() and per["flagged"][:8].all()
    assert np.allclose(per["nn_pixel_distance"][:4], 0, atol=1e-6)
    assert (per["nn_pixel_index"][:8] == np.arange(8)).all()
    assert per["nn_pixel_distance"][:8].max() < 0.2 * per["nn_pixel_distance"][8:].min()
    assert per["flagged"][8:].mean() <= 0.2 and 0 < summary["memorised_fraction_expected_by_chance"] <= 0.15
    assert summary["memorised_count"] == int(per["flagged"].sum())

    out = evaluate_synthetic(train, fake, train, ext, out_dir=tmp_path, kid_subsets=3)
    assert (tmp_path / "closest_pairs.png").stat().st_size > 1000
    assert (tmp_path / "memorisation_audit.csv").is_file()
    for key in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "diversity_ratio",
                "memorised_fraction", "ssim_nearest_mean", "channel_stats", "inception_score"):
        assert key in out
    assert out["ssim_nearest_max"] == pytest.approx(1.0)  # the exact copies
    assert out["ms_ssim_nearest_mean"] is None and "160" in out["ms_ssim_note"]
    json.dumps(out)
    again = evaluate_synthetic(None, fake, None, ext, reference=ref, kid_subsets=3)  # the sweep's call pattern
    assert again["fid"] == pytest.approx(out["fid"]) and again["memorised_count"] == out["memorised_count"]


# --------------------------------------------------------------------------------- evaluator, offline
def test_gan_evaluator_domain_offline_and_cached(tiny_demo, cache_dir, no_network, monkeypatch):
    from data_prep import read_manifest
    from data_prep.arrays import load_split_arrays

    m = read_manifest(tiny_demo)
    evaluate = make_gan_evaluator(m, 32, 3, cache_dir, domain_epochs=2, kid_subsets=5)
    assert not evaluate.reference_was_cached and evaluate.num_samples >= 8
    assert 0 <= evaluate.extractor.info["val_balanced_accuracy"] <= 1  # recorded with the cached network
    pool = np.concatenate([load_split_arrays(m, s, 32, 3, label=m.positive_label)[0] for s in ("val", "test")])
    rng = np.random.default_rng(0)
    calls = []

    def sample_fn(n):
        calls.append(n)
        return pool[rng.integers(0, len(pool), n)]

    out = evaluate(sample_fn, 3)
    assert calls == [evaluate.num_samples]
    for key in ("fid", "kid", "kid_std", "precision", "recall", "diversity_ratio", "memorised_fraction", "epoch"):
        assert key in out and np.isscalar(out[key])
    assert out["epoch"] == 3 and out["extractor"] == "domain"
    # second trial: nothing retrained, real reference read from the cache
    monkeypatch.setattr(feat_mod, "train_domain_cnn", lambda *a, **k: pytest.fail("domain CNN retrained"))
    again = make_gan_evaluator(m, 32, 3, cache_dir, domain_epochs=2, kid_subsets=5)
    assert again.reference_was_cached
    assert again.extractor.name == evaluate.extractor.name
    # Inception asked for, none available: warns how to get weights, falls back to domain
    with pytest.warns(UserWarning, match="inception-weights"):
        fallback = make_gan_evaluator(m, 32, 3, cache_dir, extractor="inception", kid_subsets=5, domain_epochs=2)
    assert fallback.extractor.kind == "domain" and "not comparable" in fallback.extractor_note


def test_missing_inception_weights_file_is_a_clear_error(tmp_path, tiny_demo, cache_dir):
    missing = tmp_path / "nope" / "inception.pth"
    with pytest.raises(InceptionUnavailableError, match="not found: .*nope/inception.pth"):
        load_inception_extractor(missing)
    from data_prep import read_manifest
    with pytest.raises(InceptionUnavailableError, match="nope/inception.pth"):
        resolve_extractor("inception", read_manifest(tiny_demo), 32, 3, cache_dir, inception_weights=missing)
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(InceptionUnavailableError, match="junk.pth"):
        load_inception_extractor(bad)


def test_inception_loaders_torchscript_and_torchvision(tmp_path, no_network):
    class TinyTS(nn.Module):  # stands in for fid-helper's TorchScript InceptionV3: (N, 3, 299, 299) -> (N, 2048)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2048, 8, stride=8)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    ts_path = tmp_path / "inception_ts.pt"
    torch.jit.script(TinyTS()).save(str(ts_path))
    ext = load_inception_extractor(ts_path, "cpu")
    gray = smooth_images(3, size=16, channels=1)
    f = extract_features(ext, gray)
    assert f.shape == (3, 2048) and ext.kind == "inception" and not ext.has_logits

    import torchvision
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    tv_path = tmp_path / "inception_v3_google.pth"
    torch.save(net.state_dict(), tv_path)
    ext = load_inception_extractor(tv_path, "cpu")
    f, logits = extract_features(ext, smooth_images(2, size=16), with_logits=True)
    assert f.shape == (2, 2048) and logits.shape == (2, 1000) and ext.has_logits


# ------------------------------------------------------------------------------------------------- CLI
def test_evaluate_cli_on_synthetic_dir(tmp_path, tiny_demo, cache_dir, no_network):
    import hashlib

    import pandas as pd
    from PIL import Image

    from data_prep import read_manifest
    from data_prep.arrays import load_split_arrays
    from data_prep.manifest import write_synthetic_rows
    from trainables.gan.evaluate import main

    m = read_manifest(tiny_demo)
    imgs = load_split_arrays(m, "val", 32, 3, label=m.positive_label)[0]
    imgs = np.concatenate([imgs, load_split_arrays(m, "train", 32, 3, label=m.positive_label)[0][:2]])  # 2 copies
    syn = tmp_path / "syn"
    syn.mkdir()
    rows = []
    for i, img in enumerate(imgs):
        p = syn / f"synthetic_{m.positive_class}_{i:06d}.png"
        Image.fromarray(img).save(p)
        rows.append({"image_id": p.stem, "source": str(p), "label": m.positive_label, "label_name": m.positive_class,
                     "sha256": hashlib.sha256(img.tobytes()).hexdigest(), "generator": "test", "width": 32,
                     "height": 32, "channels": 3})
    write_synthetic_rows(pd.DataFrame(rows), syn)
    out = tmp_path / "eval"
    rc = main(["--synthetic-dir", str(syn), "--manifest", str(tiny_demo), "--out", str(out),
               "--cache-dir", str(cache_dir), "--smoke-test"])
    assert rc == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["inception"] is None and "inception-weights" in result["inception_note"]
    assert result["domain"]["memorised_count"] >= 2 and result["num_synthetic"] == len(imgs)
    assert (out / "closest_pairs.png").is_file()
    assert main(["--synthetic-dir", str(syn), "--manifest", str(tiny_demo), "--out", str(out),
                 "--cache-dir", str(cache_dir), "--inception-weights", str(tmp_path / "missing.pt")]) == 2
