"""GANs for a few images (issue 22): the residual architecture, ADA, the best-KID checkpoint, old checkpoints.
CPU, tiny widths; the DDP test starts Ray Train (~40 s)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from data_prep.errors import ConfigError
from trainables.gan.ada import ada_adjust, ada_augment, ada_ops, _affine
from trainables.gan.batching import array_batches
from trainables.gan.config import GanConfig, resolve_config
from trainables.gan.loop import GanTrainer, train_gan
from trainables.gan.losses import GAN_LOSSES
from trainables.gan.networks import build_networks
from trainables.gan.resnet import SelfAttention, attention_side


def res_cfg(**kw) -> GanConfig:
    base = dict(arch="resnet", image_size=32, channels=3, ngf=8, ndf=8, batch_size=4, device="cpu")
    return resolve_config(GanConfig(**{**base, **kw}))


def images(n, size=32, channels=3, seed=0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- the residual architecture ----------------------------------------------------------------------------
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("size,channels", [(32, 3), (64, 1), (128, 3), (256, 1)])
def test_resnet_shapes_and_one_step(size, channels, attention, conditional, one_thread):
    loss = sorted(GAN_LOSSES)[(size // 32 + attention + 2 * conditional) % 3]  # every loss across the grid
    kw = dict(conditional=True, classes=(0, 1)) if conditional else {}
    cfg = res_cfg(image_size=size, channels=channels, ngf=4, ndf=4, batch_size=2, attention=attention, loss=loss,
                  feature_matching=1.0, **kw)
    G, D = build_networks(cfg)
    y = torch.tensor([0, 1]) if conditional else None
    cond = (y,) if conditional else ()
    x = G(torch.randn(2, cfg.latent_dim), *cond)
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    score, feats = D(x, *cond, return_features=True)
    assert score.shape == (2,) and feats.shape == (2, D.feature_dim)
    n_attn = sum(isinstance(m, SelfAttention) for m in (*G.modules(), *D.modules()))
    assert n_attn == (2 if attention else 0)
    # every D layer spectrally normalised whatever the loss
    assert all(hasattr(m, "parametrizations") for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    tr = GanTrainer(cfg)
    before = {k: v.clone() for k, v in tr.G_module.state_dict().items()}
    tr.train_step(images(2, size, channels), y)
    stats = tr.epoch_stats()
    assert math.isfinite(stats["loss_D"]) and math.isfinite(stats["loss_G"]) and stats["g_steps"] == 1
    assert any(not torch.equal(before[k], v) for k, v in tr.G_module.state_dict().items())


def test_attention_sits_at_half_the_side_at_most_32_px():
    assert [attention_side(s) for s in (32, 64, 128, 256)] == [16, 32, 32, 32]
    cfg = res_cfg(attention=True)
    G, _ = build_networks(cfg)
    seen = []
    G.blocks[2].register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))  # block 2 is the attention block
    G(torch.randn(1, cfg.latent_dim))
    assert isinstance(G.blocks[2], SelfAttention) and seen == [16]


def test_arch_and_ada_config_errors_name_the_culprit():
    with pytest.raises(ConfigError, match=r"unknown GAN arch 'stylegan'.*dcgan.*resnet"):
        GanConfig(arch="stylegan")
    with pytest.raises(ConfigError, match="attention=True is part of the resnet arch"):
        GanConfig(attention=True)
    with pytest.raises(ConfigError, match="choose one"):
        GanConfig(ada=True, diffaugment="color")
    with pytest.raises(ConfigError, match=r"unknown ada_policy 'mri'.*xray"):
        GanConfig(ada=True, ada_policy="mri")


def test_resnet_with_ada_resumes_bit_identical(tmp_path, one_thread):
    cfg = res_cfg(loss="hinge", ada=True, ada_ramp=2.0, num_epochs=4, attention=True, checkpoint_every=1)
    data = images(12)
    straight = GanTrainer(cfg)
    straight.ada_p_value = 0.5  # p starts mid-way (steps of 1/8 per epoch): augmentations are drawn from epoch 1
    straight.ada_p.fill_(0.5)
    train_gan(cfg, array_batches(data, 4, 0), lambda m: None, trainer=straight,
              checkpoint=lambda s, e: torch.save(s, tmp_path / f"{e}.pt"))
    resumed = GanTrainer(cfg)
    state = torch.load(tmp_path / "2.pt", weights_only=True)
    resumed.load_state_dict(state)
    assert resumed.ada_p_value == state["ada_p"] > 0  # p came back with the checkpoint
    train_gan(cfg, array_batches(data, 4, 0), lambda m: None, trainer=resumed)
    for a, b in ((straight.G_module, resumed.G_module), (straight.D_module, resumed.D_module),
                 (straight.G_ema, resumed.G_ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert straight.ada_p_value == resumed.ada_p_value


def test_copied_resnet_ada_state_takes_the_same_next_step_on_cpu():
    """What the GPU check compares graphed against eager: on the CPU both are eager, so from copied state (ADA's p
    included) the next step's gradients must agree exactly."""
    from trainables.gan.step_checks import graph_vs_eager_step

    r = graph_vs_eager_step(res_cfg(loss="hinge", ada=True, attention=True, batch_size=4), "cpu", ada_p=0.5)
    assert r["ok"] and r["max_rel_grad_diff"] == 0.0 and r["num_tensors"] > 20, r


# ---- ADA --------------------------------------------------------------------------------------------------
def test_ada_is_the_identity_at_p0_and_keeps_gradients():
    x = images(6).requires_grad_(True)
    out = ada_augment(x, torch.tensor(0.0), ada_ops("standard"), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)
    out = ada_augment(x, torch.tensor(1.0), ada_ops("standard"), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x, atol=1e-2)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ada_never_flips_an_xray_and_keeps_its_rotation_small():
    x = images(256, channels=1)
    g = torch.Generator().manual_seed(1)
    for policy, flips, max_deg in (("xray", False, 10), ("standard", True, 15), ("dermoscopy", True, 180)):
        theta = _affine(x, torch.tensor(1.0), ada_ops(policy), g)
        det = torch.linalg.det(theta[:, :, :2])  # < 0: the map mirrors the image
        assert bool((det < 0).any()) == flips, policy
        angle = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).abs())
        if not flips:
            assert angle.max() <= max_deg + 1e-3, (policy, float(angle.max()))
    assert ada_ops("dermoscopy").quarter_turns and not ada_ops("xray").quarter_turns


def test_ada_adjust_moves_p_by_its_step_within_0_and_1():
    assert ada_adjust(0.0, 0.9, 0.6, 0.25) == 0.25
    assert ada_adjust(0.1, 0.2, 0.6, 0.25) == 0.0
    assert ada_adjust(0.9, 1.0, 0.6, 0.25) == 1.0
    assert ada_adjust(0.5, float("nan"), 0.6, 0.25) == 0.5


class HeldOutGenerator(torch.nn.Module):
    """A "perfect" generator: it hands out held-out real images (chosen by z), so D can only tell its real
    training images from fakes by having memorised them - the overfitting ADA's r_t is meant to see."""

    def __init__(self, pool: torch.Tensor, latent_dim: int):
        super().__init__()
        self.pool, self.latent_dim = pool, latent_dim
        self.w = torch.nn.Parameter(torch.zeros(()))  # something for G's optimiser and EMA to hold

    def forward(self, z, y=None):
        idx = (z.reshape(len(z), -1)[:, 0].abs() * 1e6).long() % len(self.pool)
        return self.pool[idx] + self.w


def test_ada_p_rises_where_d_overfits_a_tiny_set_and_stays_near_0_on_a_large_one(one_thread):
    """Same steps, same fakes (held-out real images), 20 epochs of 16 batches: 4 distinct real images (tiled to 256)
    vs 256 distinct ones. D memorises the 4 (r_t = 1 without augmentation) and p climbs until augmentation stops
    it; on the 256 it cannot, r_t stays under the target and p stays at 0 bar at most one epoch's step."""
    from data_prep.arrays import normalize_batch
    from data_prep.demo import make_demo_arrays

    imgs, _ = make_demo_arrays(0, 512, size=32, seed=5)
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
    train, held_out = x[:256], normalize_batch(x[256:])
    runs = {}
    for distinct in (4, 256):
        cfg = resolve_config(GanConfig(image_size=32, channels=3, ngf=8, ndf=16, batch_size=16, loss="hinge",
                                       ada=True, ada_ramp=0.2, num_epochs=20, device="cpu"))
        tr = GanTrainer(cfg)
        tr.G = tr.G_module = HeldOutGenerator(held_out, cfg.latent_dim)
        tr.G_ema = HeldOutGenerator(held_out, cfg.latent_dim)
        tr.opt_G = torch.optim.Adam(tr.G_module.parameters())
        hist: list[dict] = []
        train_gan(cfg, array_batches(train[:distinct].repeat(256 // distinct, 1, 1, 1), 16, 0), hist.append,
                  trainer=tr)
        runs[distinct] = hist
    tiny, large = runs[4], runs[256]
    assert all(h["ada_rt"] == 1.0 for h in tiny[1:] if h["ada_p"] == 0)  # unaugmented, D knows all 4 by heart
    assert max(h["ada_p"] for h in tiny) >= 0.25 and np.mean([h["ada_p"] for h in tiny[5:]]) >= 0.1
    assert max(h["ada_p"] for h in large) <= 0.25 and large[-1]["ada_p"] == 0.0
    assert np.mean([h["ada_p"] for h in tiny[5:]]) > 4 * np.mean([h["ada_p"] for h in large[5:]])
    assert np.mean([h["ada_rt"] for h in large[5:]]) < 0.6


# ---- the best-KID checkpoint --------------------------------------------------------------------------------
def test_the_synthetic_set_comes_from_the_best_kid_checkpoint(tmp_path, one_thread):
    from demo_data import make_demo
    from trainables.gan.run import run_gan_local
    from trainables.gan.run_files import RunFiles
    from trainables.gan.sample import generate_images, load_generator

    manifest = make_demo(tmp_path / "demo", 30, 12)
    # epoch 2 is the best of the run's second half (best_after 0.5: epoch 1's lower KID cannot win); the run ends at 4
    kids = {1: 0.5, 2: 1.0, 3: 2.0, 4: 5.0}
    cfg = dict(image_size=32, ngf=8, ndf=8, batch_size=4, num_epochs=4, eval_every=1, checkpoint_every=1,
               keep_checkpoints=1, device="cpu")
    out = run_gan_local(manifest, tmp_path / "run", cfg, report=lambda m: None,
                        evaluate=lambda sample, epoch: {"kid": kids[epoch]})
    files = RunFiles(tmp_path / "run")
    assert out["best_epoch"] == 2 and out["best_kid"] == 1.0
    assert [p.name for p in files.checkpoint_paths()] == ["checkpoint_000004.pt"]  # best.pt is never pruned
    assert files.sampling_checkpoint() == files.best_checkpoint()
    assert load_generator(files.best_checkpoint())[2]["epoch"] == 2
    assert not np.array_equal(generate_images(files.best_checkpoint(), 4, seed=1),
                              generate_images(files.latest_checkpoint(), 4, seed=1))
    # a resumed finished run still knows which checkpoint is best
    again = run_gan_local(manifest, tmp_path / "run", cfg, report=lambda m: None,
                          evaluate=lambda sample, epoch: {"kid": kids[epoch]})
    assert again["best_epoch"] == 2


# ---- old checkpoints --------------------------------------------------------------------------------------
def test_a_checkpoint_from_before_arch_and_ada_loads_and_samples(tmp_path):
    from trainables.gan.sample import generate_images

    cfg = resolve_config(GanConfig(image_size=32, channels=3, ngf=8, ndf=8, batch_size=4, device="cpu"))
    tr = GanTrainer(cfg, meta={"label": 1, "label_name": "malignant"})
    tr.train_step(images(4))
    state = tr.state_dict()
    for k in ("arch", "attention", "ada", "ada_target", "ada_ramp", "ada_policy"):
        state["config"].pop(k)
    for k in ("ada_p", "best_kid", "best_epoch"):
        state.pop(k)
    torch.save(state, tmp_path / "old.pt")
    back = GanTrainer(cfg)
    back.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True))  # DCGAN by default: same arch
    assert back.ada_p_value == 0.0 and back.best_epoch == 0
    assert generate_images(tmp_path / "old.pt", 3).shape == (3, 32, 32, 3)
    with pytest.raises(ConfigError, match="arch: checkpoint has 'dcgan', config asks for 'resnet'"):
        GanTrainer(dataclasses.replace(cfg, arch="resnet")).load_state_dict(state)


# ---- DDP ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray2():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_resnet_with_ada_trains_on_two_ddp_workers_with_identical_replicas(tmp_path, ray2):
    from demo_data import make_demo
    from train_hooks import save_rank_weights, ship_by_value
    from trainables.gan.ray_train import run_gan_ray

    ship_by_value()
    manifest = make_demo(tmp_path / "demo", 30, 40)
    run = tmp_path / "run"
    out = run_gan_ray(manifest, run, dict(arch="resnet", attention=True, ada=True, ada_ramp=0.5, loss="hinge",
                                          image_size=32, ngf=8, ndf=8, batch_size=4, num_epochs=2, checkpoint_every=1),
                      num_workers=2, after_training=save_rank_weights)
    assert out["status"] == "finished" and out["epochs"] == 2
    r0, r1 = (torch.load(run / "rank_weights" / f"rank_{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("G", "D"):  # batch-norm running statistics are per rank (DDP syncs parameters, not those)
        keys = [k for k in r0[net] if "running" not in k and "num_batches" not in k]
        assert all(torch.equal(r0[net][k], r1[net][k]) for k in keys), net
    assert r0["ada_p"] == r1["ada_p"]  # p follows the all-reduced r_t: every rank the same
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and all("ada_p" in h and "ada_rt" in h for h in history)
