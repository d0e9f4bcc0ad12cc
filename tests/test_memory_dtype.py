"""Splits stay uint8 in memory and become float one batch at a time, with the same bits (issue 16, item 5).

A 26k-image 224 px RGB train split is 3.9 GB as uint8 and 15.7 GB as float32; the trainers keep the uint8 and
normalise each batch on its device. These tests check that the result cannot tell: the float32 values are the
same bits as normalising the whole split up front (every one of the 256 pixel values), and a classifier or a
GAN trained on uint8 batches ends with the same losses, metrics and weights as one trained on float batches.
The peak-memory figures are measured by bench/memory.py, not here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep import read_manifest
from data_prep.arrays import decode_rows, normalize, normalize_batch, to_channels_first

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _bits(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    assert a.dtype == np.float32
    return a.view(np.int32)


def _every_pixel_value(channels: int) -> np.ndarray:
    """uint8 (2, 16, 16, channels) holding every value 0..255 in every channel (the op is elementwise)."""
    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = np.stack([np.roll(v, c * 37) for c in range(channels)], axis=-1)
    return np.stack([img, img[::-1, ::-1]])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
def test_per_batch_normalisation_has_the_bits_of_normalising_the_split_up_front(device, channels):
    x = _every_pixel_value(channels)
    want = normalize(x)  # the old path: the whole split as float32 at once
    got = normalize_batch(torch.from_numpy(to_channels_first(x)).to(device))
    assert got.device.type == device and got.shape == want.shape and got.is_contiguous()
    np.testing.assert_array_equal(_bits(got), _bits(want))
    assert float(got.min()) == -1.0 and float(got.max()) == 1.0
    # the check can fail: rounding once from float64 (another order of operations) differs in most values
    other = (x.astype(np.float64).transpose(0, 3, 1, 2) * (2.0 / 255.0) - 1.0).astype(np.float32)
    assert (_bits(other) != _bits(want)).sum() > 100


def test_normalize_batch_passes_float_batches_and_refuses_other_dtypes():
    f = torch.rand(2, 3, 4, 4) * 2 - 1
    assert normalize_batch(f) is f
    with pytest.raises(TypeError, match="expected a uint8 .* got torch.int64"):
        normalize_batch(torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expected uint8 images shaped \(N, H, W, C\), got float32"):
        to_channels_first(np.zeros((2, 4, 4, 3), np.float32))


def test_decoding_channels_first_and_load_tensors_keep_uint8(tiny_demo):
    from trainables.classifier.data import load_tensors

    rows = read_manifest(tiny_demo).split("train")
    nhwc = decode_rows(rows, 16, 3)
    nchw = decode_rows(rows, 16, 3, channels_first=True)
    assert nchw.dtype == np.uint8 and nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))
    x, y = load_tensors(rows, 16, 3)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (len(rows), 3, 16, 16)
    np.testing.assert_array_equal(_bits(normalize_batch(x)), _bits(normalize(nhwc)))
    np.testing.assert_array_equal(y.numpy(), rows["label"].to_numpy())


def _train_classifier(x_tr, y_tr, x_va, y_va):
    from trainables.classifier.config import classifier_config
    from trainables.classifier.loop import tensor_batches, train_classifier

    cfg = classifier_config({"model": "small_cnn", "image_size": 16, "batch_size": 8, "device": "cpu",
                             "num_epochs": 2, "augment": "standard", "imbalance_fix": "oversample", "seed": 3})
    rows = []
    out = train_classifier(cfg, lambda e: tensor_batches(x_tr, y_tr, 8, torch.randperm(len(y_tr))),
                           lambda: tensor_batches(x_va, y_va, 8, with_index=True), rows.append,
                           num_classes=2, positive_label=1, train_labels=y_tr.numpy(), channels=3, image_size=16,
                           num_val=len(y_va))
    return rows, out["best"]["model"]


def test_classifier_trained_on_uint8_batches_equals_one_trained_on_float_batches(tiny_demo):
    """Same seed, same data: uint8 kept (new) vs the split normalised up front (old) -> identical run."""
    from trainables.classifier.data import load_tensors

    m = read_manifest(tiny_demo)
    (x_tr, y_tr), (x_va, y_va) = load_tensors(m.split("train"), 16, 3), load_tensors(m.split("val"), 16, 3)
    runs = []
    for as_float in (False, True):
        conv = (lambda t: torch.from_numpy(normalize(t.numpy().transpose(0, 2, 3, 1)))) if as_float else (lambda t: t)
        runs.append(_train_classifier(conv(x_tr), y_tr, conv(x_va), y_va))
    (rows_u8, best_u8), (rows_f, best_f) = runs
    drop = ("images_per_s",)  # wall-clock
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_u8] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows_f]
    assert all(torch.equal(best_u8[k], best_f[k]) for k in best_f)


def test_gan_trained_on_uint8_batches_equals_one_trained_on_float_batches():
    from trainables.gan.batching import array_batches
    from trainables.gan.config import GanConfig, resolve_config
    from trainables.gan.loop import GanTrainer, train_gan

    cfg = resolve_config(GanConfig(image_size=32, channels=3, ngf=8, ndf=8, batch_size=4, device="cpu",
                                   num_epochs=2, diffaugment="color,translation", seed=5))
    u8 = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    old = torch.from_numpy(normalize(u8.numpy().transpose(0, 2, 3, 1)))  # the old path: normalised up front
    runs = []
    for images in (u8, old):
        hist, tr = [], GanTrainer(cfg, "cpu")
        train_gan(cfg, array_batches(images, cfg.batch_size, cfg.seed), hist.append, trainer=tr)
        runs.append((hist, tr.G_module.state_dict(), tr.D_module.state_dict()))
    (h_u8, g_u8, d_u8), (h_f, g_f, d_f) = runs
    keys = ("loss_D", "loss_G", "D_x", "D_G_z")
    assert [[r[k] for k in keys] for r in h_u8] == [[r[k] for k in keys] for r in h_f]
    assert all(torch.equal(g_u8[k], g_f[k]) for k in g_f) and all(torch.equal(d_u8[k], d_f[k]) for k in d_f)


def test_in_process_trials_hold_their_splits_as_uint8(tiny_demo, tmp_path, monkeypatch):
    """What run_gan_local and run_classifier_local hand their batch makers: uint8 (N, C, S, S), not float."""
    import trainables.classifier.run as clf_run
    import trainables.gan.run as gan_run

    seen: dict[str, list] = {"gan": [], "clf": []}
    real_ab, real_tb = gan_run.array_batches, clf_run.tensor_batches

    def spy_ab(images, *a, **kw):
        seen["gan"].append((images.dtype, tuple(images.shape)))
        return real_ab(images, *a, **kw)

    def spy_tb(x, *a, **kw):
        seen["clf"].append((x.dtype, tuple(x.shape)))
        return real_tb(x, *a, **kw)

    monkeypatch.setattr(gan_run, "array_batches", spy_ab)
    monkeypatch.setattr(clf_run, "tensor_batches", spy_tb)
    gan = gan_run.run_gan_local(tiny_demo, tmp_path / "gan", {"image_size": 32, "ngf": 8, "ndf": 8, "batch_size": 4,
                                                              "num_epochs": 1, "device": "cpu"},
                                report=lambda m: None)
    assert gan["status"] == "finished"
    df = read_manifest(tiny_demo).df
    n_minority = int(((df["split"] == "train") & (df["label"] == read_manifest(tiny_demo).positive_label)).sum())
    assert seen["gan"] == [(torch.uint8, (n_minority, 3, 32, 32))]
    clf_run.run_classifier_local(tiny_demo, tmp_path / "clf", {"model": "small_cnn", "image_size": 32,
                                                               "batch_size": 16, "num_epochs": 1, "device": "cpu"})
    assert seen["clf"] and all(d == torch.uint8 and s[1:] == (3, 32, 32) for d, s in seen["clf"]), seen["clf"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: torch.cuda.is_available() is False "
                                                          "here (run on a GPU host: bash bench/gpu_check.sh)")
@pytest.mark.parametrize("where", ["cuda", "cpu"])  # uint8 on the device (in-process) / on the host (a Ray shard)
def test_graphed_gan_on_uint8_batches_trains_like_float_batches(where):
    """A CUDA-graphed step copies each batch into a static float buffer: uint8 batches are made float before that
    copy, on the replaying stream, so the graph sees the values a float batch would give."""
    from trainables.gan.batching import array_batches
    from trainables.gan.config import GanConfig, resolve_config
    from trainables.gan.loop import GanTrainer, train_gan
    from trainables.gan.step_checks import strict_numerics

    cfg = resolve_config(GanConfig(image_size=32, channels=3, ngf=16, ndf=16, batch_size=8, device="cuda",
                                   num_epochs=2, cuda_graphs="on", bf16="off", diffaugment="color,translation",
                                   seed=5))
    u8 = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    old = torch.from_numpy(normalize(u8.numpy().transpose(0, 2, 3, 1)))
    runs = []
    with strict_numerics():
        for images in (u8.to(where), old.to(where)):
            hist, tr = [], GanTrainer(cfg, "cuda")
            train_gan(cfg, array_batches(images, cfg.batch_size, cfg.seed), hist.append, trainer=tr)
            assert tr._graphs, "12 full batches: the step is captured after its warm-up steps"
            runs.append((hist, {k: v.float().cpu() for k, v in tr.G_module.state_dict().items()}))
    (h_u8, g_u8), (h_f, g_f) = runs
    for a, b in zip(h_u8, h_f):
        assert (a["loss_D"], a["loss_G"]) == pytest.approx((b["loss_D"], b["loss_G"]), rel=1e-5)
    worst = max(float((g_u8[k] - g_f[k]).abs().max() / g_f[k].abs().max().clamp_min(1e-12)) for k in g_f)
    assert worst < 1e-5, worst
