"""GAN stage tests (CPU, tiny: 32 px, narrow nets, a few steps). The DDP test starts Ray Train (~40 s)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from data_prep.errors import ConfigError, DataError
from demo_data import make_demo
from trainables.gan.config import GanConfig, gan_config_from_dict, resolve_config
from trainables.gan.batching import array_batches
from trainables.gan.loop import GanTrainer, train_gan
from trainables.gan.losses import GAN_LOSSES, get_loss, gradient_penalty
from trainables.gan.networks import Discriminator, Generator, build_networks, count_params

TINY = dict(image_size=32, channels=3, ngf=8, ndf=8, batch_size=4, device="cpu")


def tiny_cfg(**kw) -> GanConfig:
    return resolve_config(GanConfig(**{**TINY, **kw}))


def fake_images(n=12, size=32, channels=3, seed=0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("gan_demo"), 40, 12)


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- networks, config, losses -------------------------------------------------------------------------------
def test_param_counts_match_dcgan():
    assert abs(count_params(Generator(64, 3)) - 3.5e6) < 0.1e6  # 3,576,704
    assert abs(count_params(Discriminator(64, 3)) - 2.8e6) < 0.1e6  # 2,765,568


@pytest.mark.parametrize("size,channels", [(32, 3), (64, 1), (128, 1), (256, 3)])
def test_shapes_by_image_size(size, channels):
    G, D = Generator(size, channels, latent_dim=16, ngf=4), Discriminator(size, channels, ndf=4, norm="none")
    x = G(torch.randn(2, 16))
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    assert D(x).shape == (2,)
    ups = sum(isinstance(m, torch.nn.ConvTranspose2d) and m.stride == (2, 2) for m in G.modules())
    assert ups == int(math.log2(size // 4))  # 128 px -> 5 up blocks


def test_d_normalisation_follows_loss():
    for loss, has_bn, has_sn in [("bce", True, False), ("hinge", False, True), ("wgan-gp", False, False)]:
        _, D = build_networks(tiny_cfg(loss=loss))
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules()) == has_bn, loss
        assert any(hasattr(m, "parametrizations") for m in D.modules()) == has_sn, loss


def test_config_errors_name_the_culprit():
    with pytest.raises(ConfigError, match=r"unknown GAN loss 'wgan'.*bce.*hinge.*wgan-gp"):
        GanConfig(loss="wgan")
    with pytest.raises(ConfigError, match="wgan-gp"):
        get_loss("lsgan")
    with pytest.raises(ConfigError, match="image_size 8 is not supported"):
        GanConfig(image_size=8)
    with pytest.raises(ConfigError, match="lr_gen"):
        gan_config_from_dict({"lr_gen": 1e-3})
    with pytest.raises(ConfigError, match="unknown DiffAugment op"):
        GanConfig(diffaugment="color,flip")
    with pytest.warns(UserWarning, match="training at 64"):
        assert resolve_config(GanConfig(image_size=70, device="cpu")).image_size == 64
    cfg = gan_config_from_dict({"betas": [0.0, 0.9], "loss": "hinge"})
    assert cfg.betas == (0.0, 0.9)


@pytest.mark.parametrize("loss", sorted(GAN_LOSSES))
def test_each_loss_decreases_d_loss_on_separable_batch(loss):
    torch.manual_seed(0)
    cfg = tiny_cfg(loss=loss)
    _, D = build_networks(cfg)
    spec = get_loss(loss)
    real, fake = torch.full((8, 3, 32, 32), 0.8), torch.full((8, 3, 32, 32), -0.8)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def d_loss():
        out = spec.d_loss(D(real), D(fake), 1.0)
        if spec.gradient_penalty:
            out = out + 10 * gradient_penalty(D, real, fake, torch.Generator().manual_seed(0))
        return out

    first = d_loss().item()
    for _ in range(15):
        opt.zero_grad()
        d_loss().backward()
        opt.step()
    assert d_loss().item() < first - 0.1, loss
    assert spec.g_loss(D(fake)).item() > spec.g_loss(D(real)).item()  # G would want to look real


def test_gradient_penalty_known_value():
    # D(x) = c * sum(x): grad norm = |c| * sqrt(numel) everywhere; pick c so the norm is 3 -> GP = (3-1)^2 = 4
    x_shape = (4, 1, 4, 4)
    c = 3.0 / math.sqrt(16)
    D = lambda x: c * x.reshape(x.shape[0], -1).sum(1)  # noqa: E731
    gp = gradient_penalty(D, torch.randn(x_shape), torch.randn(x_shape))
    assert gp.item() == pytest.approx(4.0, rel=1e-5)
    D1 = lambda x: (1.0 / 4.0) * x.reshape(x.shape[0], -1).sum(1)  # noqa: E731  norm exactly 1 -> 0
    assert gradient_penalty(D1, torch.randn(x_shape), torch.randn(x_shape)).item() == pytest.approx(0.0, abs=1e-10)


def test_diffaugment_shapes_and_gradients():
    from trainables.gan.diffaugment import diff_augment, parse_policy

    x = fake_images(4).requires_grad_(True)
    y = diff_augment(x, parse_policy("color,translation,cutout"), torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ---- the loop -----------------------------------------------------------------------------------------------
def test_same_seed_identical_weights_different_seed_not():
    def run(seed):
        cfg = tiny_cfg(seed=seed, num_epochs=2, diffaugment="color,translation,cutout")
        tr = GanTrainer(cfg)
        train_gan(cfg, array_batches(fake_images(), cfg.batch_size, cfg.seed), lambda m: None, trainer=tr)
        return tr.state_dict()

    a, b, c = run(3), run(3), run(4)
    for key in ("G", "D", "G_ema"):
        assert weights_equal(a[key], b[key]), key
    assert not weights_equal(a["G"], c["G"])


@pytest.mark.parametrize("loss", ["hinge", "wgan-gp"])
def test_other_losses_train_with_n_critic(loss):
    cfg = tiny_cfg(loss=loss, n_critic=2, num_epochs=2)
    hist = []
    out = train_gan(cfg, array_batches(fake_images(), cfg.batch_size, 0), hist.append)
    assert out["status"] == "finished" and [h["epoch"] for h in hist] == [1, 2]
    assert all(math.isfinite(h["loss_D"]) and h["loss_G"] is not None for h in hist)


def test_nan_injection_stops_with_reason():
    cfg = tiny_cfg(num_epochs=5)
    good = fake_images()

    def batches(epoch):
        for b in array_batches(good, cfg.batch_size, 0)(epoch):
            yield b * float("nan") if epoch == 2 else b

    hist, saved = [], []
    out = train_gan(cfg, batches, hist.append, checkpoint=lambda s, e: saved.append(e))
    assert out["status"] == "diverged" and "non-finite" in out["reason"] and "epoch 2" in out["reason"]
    assert out["epochs"] == 1 and [h["status"] for h in hist] == ["running", "diverged"]
    assert saved == []  # checkpoint_every=5: nothing saved, and never the broken epoch
    json.dumps(hist)  # NaN losses are reported as null, not invalid JSON


def test_collapsed_discriminator_stops():
    cfg = tiny_cfg(num_epochs=6, collapse_loss_d=100.0, collapse_patience=2)  # threshold always met
    out = train_gan(cfg, array_batches(fake_images(), cfg.batch_size, 0), lambda m: None)
    assert out["status"] == "diverged" and "collapsed" in out["reason"] and out["epochs"] == 1


def test_evaluate_hook_merged_into_report():
    calls = []

    def evaluate(sample_fn, epoch):
        imgs = sample_fn(5)
        calls.append((epoch, imgs.shape, imgs.dtype))
        return {"fid": 1.0 * epoch}

    cfg = tiny_cfg(num_epochs=3, eval_every=2)
    hist = []
    train_gan(cfg, array_batches(fake_images(), cfg.batch_size, 0), hist.append, evaluate=evaluate)
    assert calls == [(2, (5, 32, 32, 3), np.uint8), (3, (5, 32, 32, 3), np.uint8)]  # every 2 + the last epoch
    assert [h.get("fid") for h in hist] == [None, 2.0, 3.0]


# ---- run directory, resume, CLIs ----------------------------------------------------------------------------
def test_local_run_files_and_resume_matches_uninterrupted(manifest, tmp_path):
    from trainables.gan.run_files import load_checkpoint
    from trainables.gan.run import run_gan_local

    cfg = dict(TINY, num_epochs=4, checkpoint_every=2, keep_checkpoints=1, sample_every=2,
               diffaugment="translation,cutout")
    full = run_gan_local(manifest, tmp_path / "full", cfg, report=lambda m: None)
    assert full["status"] == "finished" and full["epochs"] == 4
    half = run_gan_local(manifest, tmp_path / "split", {**cfg, "num_epochs": 2}, report=lambda m: None)
    assert half["epochs"] == 2
    resumed = run_gan_local(manifest, tmp_path / "split", cfg, report=lambda m: None)
    assert resumed["epochs"] == 4
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "checkpoint_000004.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "checkpoint_000004.pt")
    for key in ("G", "D", "G_ema"):
        assert weights_equal(a[key], b[key]), key
    run = tmp_path / "split"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint_000004.pt"]  # keep_checkpoints=1
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0002.png", "epoch_0004.png"]
    for name in ("config.json", "preview.png", "loss_curve.png", "metrics.json"):
        assert (run / name).is_file(), name
    hist = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
    assert json.loads((run / "config.json").read_text())["image_size"] == 32
    assert a["meta"]["label_name"] == "malignant"

    # bad input: resuming this run with another architecture names the field
    with pytest.raises(ConfigError, match=r"ngf: checkpoint has 8, config asks for 16"):
        run_gan_local(manifest, run, {**cfg, "ngf": 16, "num_epochs": 5}, report=lambda m: None)


def test_cli_smoke_then_sample_cli(manifest, tmp_path, capsys):
    import pandas as pd

    from data_prep.manifest import read_synthetic_rows
    from trainables.gan.__main__ import main as train_main
    from trainables.gan.sample import generate_images, load_generator
    from trainables.gan.sample import main as sample_main

    run = tmp_path / "run"
    assert train_main(["--manifest", str(manifest), "--out", str(run), "--smoke-test", "--loss", "hinge"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    ckpt = run / "checkpoints" / "checkpoint_000002.pt"
    out = tmp_path / "syn"
    args = ["--checkpoint", str(ckpt), "--num-samples", "5", "--batch-size", "2", "--output-dir", str(out),
            "--device", "cpu", "--seed", "7", "--no-progress"]
    assert sample_main(args) == 0
    pngs = sorted(out.glob("synthetic_malignant_*.png"))
    assert [p.name for p in pngs][0] == "synthetic_malignant_000000.png" and len(pngs) == 5
    rows = read_synthetic_rows(out)
    assert len(rows) == 5 and set(rows["split"]) == {"train"} and rows["is_synthetic"].all()
    assert set(rows["label_name"]) == {"malignant"} and rows["label"].iloc[0] == 1
    assert rows["generator"].iloc[0].endswith("checkpoint_000002.pt")
    imgs = generate_images(ckpt, 5, seed=7, batch_size=3)  # same seed, other batch size -> same images
    from data_prep.images import image_sha256
    assert [image_sha256(x) for x in imgs] == list(rows["sha256"])
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(pngs[0])), imgs[0])  # PNG is lossless

    assert sample_main(args) == 2  # refuses to overwrite
    assert "refusing to overwrite" in capsys.readouterr().err
    assert sample_main(args[:3] + ["3"] + args[4:] + ["--overwrite"]) == 0
    assert len(list(out.glob("synthetic_malignant_*.png"))) == 3 and len(pd.read_parquet(out / "manifest.parquet")) == 3
    assert sample_main(args + ["--preview-only", "--output-dir", str(tmp_path / "prev")]) == 0
    assert [p.name for p in (tmp_path / "prev").iterdir()] == ["preview.png"]

    G, cfg, meta = load_generator(ckpt)
    assert cfg.loss == "hinge" and meta["label"] == 1 and not G.training

    # bad input
    assert sample_main(args[:3] + ["0"] + args[4:]) == 2
    assert "num_samples must be a positive integer" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert sample_main(args[:6] + ["--output-dir", str(blocker / "sub")] + args[8:]) == 2
    assert "not writable" in capsys.readouterr().err
    assert sample_main(["--checkpoint", str(run / "config.json"), "--num-samples", "1", "--output-dir",
                        str(tmp_path / "x")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_empty_minority_shard_is_reported(manifest, tmp_path):
    from data_prep.manifest import read_manifest, write_manifest
    from trainables.gan.run import run_gan_local

    m = read_manifest(manifest)
    m.df = m.df[~((m.df["split"] == "train") & (m.df["label"] == m.positive_label))].reset_index(drop=True)
    path = write_manifest(m, tmp_path / "m" / "manifest.parquet")
    with pytest.raises(DataError, match="no real training images of the minority class 'malignant'"):
        run_gan_local(path, tmp_path / "run", TINY, report=lambda m: None)


# ---- Ray Train, 2 DDP workers (gloo, CPU) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray2():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_ddp_two_workers_ranks_identical(manifest, tmp_path, ray2):
    from train_hooks import save_rank_weights, ship_by_value
    from trainables.gan.ray_train import run_gan_ray

    ship_by_value()
    out = run_gan_ray(manifest, tmp_path / "ray", dict(TINY, num_epochs=2, checkpoint_every=1, keep_checkpoints=2),
                      num_workers=2, after_training=save_rank_weights)
    assert out["status"] == "finished" and out["epochs"] == 2
    r0, r1 = (torch.load(tmp_path / "ray" / "rank_weights" / f"rank_{r}.pt", weights_only=True) for r in (0, 1))
    for key in ("G", "D"):
        params = {k: v for k, v in r0[key].items() if "running" not in k and "num_batches" not in k}
        assert weights_equal(params, {k: r1[key][k] for k in params}), key
    run = tmp_path / "ray"
    assert (run / "checkpoints" / "checkpoint_000002.pt").is_file() and (run / "preview.png").is_file()
    assert [json.loads(x)["epoch"] for x in (run / "history.jsonl").read_text().splitlines()] == [1, 2]


# ---- checkpoints across devices and ranks, the random stream, bf16 spectral norm (issue 13) -------------------
def _cuda_shaped(state: dict) -> dict:
    """What a graphed CUDA worker's checkpoint holds, on a CPU: a 16-byte Philox RNG state (seed, offset) and
    capturable Adam (param_groups flag; `step` as a float32 tensor on the parameter's device)."""
    state = copy.deepcopy(state)
    state["rng"] = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    state["rng_device"] = "cuda"
    for key in ("opt_G", "opt_D"):
        for group in state[key]["param_groups"]:
            group["capturable"] = True
        for st in state[key]["state"].values():
            st["step"] = st["step"].to(torch.float32)
    return state


def test_cuda_checkpoint_loads_into_cpu_trainer_and_trains_on(tmp_path):
    from trainables.gan.state import _resume_seed
    from trainables.gan.run_files import load_checkpoint

    cfg = tiny_cfg(num_epochs=1)
    tr = GanTrainer(cfg)
    train_gan(cfg, array_batches(fake_images(), cfg.batch_size, 0), lambda m: None, trainer=tr)
    path = tmp_path / "gpu.pt"
    torch.save(_cuda_shaped(tr.state_dict()), path)
    with pytest.raises(RuntimeError):  # what load_state_dict used to do with it
        torch.Generator().set_state(load_checkpoint(path)["rng"])
    for drop_tag in (False, True):  # checkpoints written before rng_device existed: told apart by state size
        state = load_checkpoint(path)
        if drop_tag:
            del state["rng_device"]
        cpu = GanTrainer(cfg)
        cpu.load_state_dict(state)
        assert cpu.rng_restored is False
        expect = torch.Generator().manual_seed(_resume_seed(cfg.seed, 0, tr.d_steps_total)).get_state()
        assert torch.equal(cpu.rng.get_state(), expect)  # a deterministic fresh stream, not the seed's own
        assert all(not g["capturable"] for o in (cpu.opt_G, cpu.opt_D) for g in o.param_groups)
        assert weights_equal(cpu.G_module.state_dict(), tr.G_module.state_dict())
        cpu.train_step(fake_images(4))  # a capturable CPU Adam would assert here
        assert torch.isfinite(cpu.acc).all() and cpu.d_steps_total == tr.d_steps_total + 1


@pytest.mark.parametrize("loss", sorted(GAN_LOSSES))
def test_copied_state_takes_the_same_next_step(loss):
    """Weights, buffers, Adam, EMA and the random stream all travel in state_dict: from a copy, the next step
    (with DiffAugment, and the gradient penalty's random mix for wgan-gp) has bit-identical gradients.
    On a GPU the same function compares a graph replay with an eager step (tests/test_gpu.py)."""
    from trainables.gan.step_checks import graph_vs_eager_step

    r = graph_vs_eager_step(tiny_cfg(loss=loss, diffaugment="color,translation,cutout"), "cpu")
    assert r["ok"] and r["rng_restored"] and not r["graphed"] and r["num_tensors"] > 10
    assert r["max_rel_grad_diff"] == 0.0 and r["loss_D"][0] == r["loss_D"][1] and r["loss_G"][0] == r["loss_G"][1]


def test_resume_on_another_rank_does_not_replay_rank0s_stream():
    cfg = tiny_cfg()
    state = GanTrainer(cfg).state_dict()  # rank 0 writes checkpoints for every rank
    same, other = GanTrainer(cfg, rank=0), GanTrainer(cfg, rank=1)
    same.load_state_dict(copy.deepcopy(state))
    other.load_state_dict(copy.deepcopy(state))
    assert same.rng_restored and not other.rng_restored
    assert torch.equal(same.rng.get_state(), state["rng"])
    assert not torch.equal(other.rng.get_state(), state["rng"])


def test_making_a_trainer_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    GanTrainer(tiny_cfg(loss="hinge"))  # builds (spectral-norm) networks from its own seed
    assert torch.equal(torch.rand(3), expect)
    a, b = GanTrainer(tiny_cfg(seed=5)), GanTrainer(tiny_cfg(seed=5))
    assert weights_equal(a.G_module.state_dict(), b.G_module.state_dict())


def test_spectral_norm_power_iteration_runs_in_fp32_outside_autocast():
    """Under bf16 autocast (CUDA casts torch.mv to bf16) the power iteration must still run in fp32: every
    mv/vdot of the spectral-norm parametrisation sees autocast off and fp32 operands."""
    from torch.overrides import TorchFunctionMode

    seen = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.mv, torch.vdot):
                seen.append((func.__name__, torch.is_autocast_enabled("cpu"), {a.dtype for a in args}))
            return func(*args, **(kwargs or {}))

    _, D = build_networks(tiny_cfg(loss="hinge"))
    x = fake_images(2)
    with torch.autocast("cpu", dtype=torch.bfloat16), Spy():
        D(x)
    assert len(seen) >= 3 * 4  # 4 convs + head: 2 mv per power iteration, 1 mv + 1 vdot for sigma
    assert all(not autocast and dtypes == {torch.float32} for _, autocast, dtypes in seen), seen
    sn = D.net[0].parametrizations.weight[0]
    assert sn._u.dtype == torch.float32 and D.net[0].weight.dtype == torch.float32
