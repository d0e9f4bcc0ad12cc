"""GPU tests (marker `gpu`): the CUDA paths of the GAN step, checkpoints, Ray Train, the sweep and FID/KID.

Every test here skips on a machine without CUDA, saying so (pytest -ra lists the reason); the Ray tests also
skip where Ray is not importable (the GPU host of this project's development sessions has no Ray until
bench/gpu_check.sh installs the staged wheels). Run them alone with

    python -m pytest -q -m gpu tests/test_gpu.py            # or: bash bench/gpu_check.sh (README "GPU check")

What they cover: each loss x {eager, graphed} x {fp32, bf16} with channels_last (finite; the graph replay's
gradients equal the eager step's from copied state, DiffAugment on, so the random stream is shared too), the same
for the residual GAN with self-attention and ADA (p held at 0.5, so its augmentations run inside the graph);
bf16 losses track fp32 over the first steps; a graphed GPU run resumed from its checkpoint continues the same
random stream, and checkpoints move between CPU and GPU both ways; a Ray Train GAN run on the GPU(s) to the
end (the CPU preview of CUDA workers' checkpoint used to crash it); a --smoke-test sweep with
--gpus-per-trial 0.5; FID/KID with the domain feature network on CUDA vs CPU (TF32 off) within 1e-3 relative.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.gan.config import GanConfig, resolve_config
from trainables.gan.losses import GAN_LOSSES

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA device: torch.cuda.is_available() is False here "
                                                  "(run on a GPU host: bash bench/gpu_check.sh, README 'GPU check')")]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="needs Ray, which is not importable here (on the GPU host bench/gpu_check.sh "
                                      "installs the staged wheels into /tmp/site and puts it on PYTHONPATH)")
AUG = "color,translation,cutout"
TOL = {"fp32": 1e-3, "bf16": 2e-2}  # max |grad diff| / max |grad| per tensor, graph replay vs eager step


def gpu_cfg(**kw) -> GanConfig:
    base = dict(image_size=64, channels=3, ngf=32, ndf=32, batch_size=32, device="cuda", diffaugment=AUG)
    return resolve_config(GanConfig(**{**base, **kw}))


def rel_max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max() / b[k].float().abs().max().clamp_min(1e-12))
               for k in b if b[k].is_floating_point())


# ---- the step -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("loss", sorted(GAN_LOSSES))
def test_graphed_step_equals_eager_step(loss, precision):
    from trainables.gan.step_checks import graph_vs_eager_step, strict_numerics

    cfg = gpu_cfg(loss=loss, bf16="on" if precision == "bf16" else "off", channels_last="on", cuda_graphs="on")
    with strict_numerics():
        r = graph_vs_eager_step(cfg, "cuda", tolerance=TOL[precision])
    assert r["graphed"] and r["switches"] == {"bf16": precision == "bf16", "channels_last": True, "cuda_graphs": True}
    assert r["finite"], r
    assert r["rng_restored"] and r["same_tensors"] and r["num_tensors"] > 10
    assert r["max_rel_grad_diff"] <= TOL[precision], r
    assert r["max_rel_loss_diff"] <= TOL[precision], r


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("loss", sorted(GAN_LOSSES))
def test_resnet_with_attention_and_ada_graphed_step_equals_eager_step(loss, precision):
    """The residual GAN's fast path: its graph replay (ADA at p = 0.5: every augmentation drawn inside the graph)
    takes the eager step's gradients from copied state."""
    from trainables.gan.step_checks import graph_vs_eager_step, strict_numerics

    cfg = gpu_cfg(arch="resnet", attention=True, ada=True, diffaugment="", loss=loss, ngf=16, ndf=16,
                  bf16="on" if precision == "bf16" else "off", channels_last="on", cuda_graphs="on")
    with strict_numerics():
        r = graph_vs_eager_step(cfg, "cuda", tolerance=TOL[precision], ada_p=0.5)
    assert r["graphed"] and r["finite"] and r["rng_restored"] and r["same_tensors"], r
    assert r["max_rel_grad_diff"] <= TOL[precision] and r["max_rel_loss_diff"] <= TOL[precision], r


@pytest.mark.parametrize("loss", sorted(GAN_LOSSES))
def test_bf16_losses_track_fp32_over_the_first_steps(loss):
    from trainables.gan.step_checks import bf16_vs_fp32_losses, strict_numerics

    with strict_numerics():
        r = bf16_vs_fp32_losses(gpu_cfg(loss=loss, channels_last="on"), "cuda", steps=10, tolerance=0.05)
    assert r["bf16_active"] and r["finite"], r
    assert r["max_rel_diff"] <= r["tolerance"], r


@pytest.mark.parametrize("graphs", ["on", "off"])
def test_a_few_epochs_train_finite_with_every_switch(graphs):
    from trainables.gan.loop import GanTrainer, array_batches, train_gan

    data = torch.rand(160, 3, 64, 64, device="cuda") * 2 - 1
    resnet = dict(arch="resnet", attention=True, ada=True, ada_ramp=0.3, diffaugment="", ngf=16, ndf=16)
    for loss, variant in [(loss, {}) for loss in sorted(GAN_LOSSES)] + [("hinge", resnet)]:
        cfg = gpu_cfg(loss=loss, num_epochs=3, cuda_graphs=graphs, n_critic=2 if loss == "wgan-gp" else 1, **variant)
        tr, hist = GanTrainer(cfg, "cuda"), []
        out = train_gan(cfg, array_batches(data, cfg.batch_size, 0), hist.append, trainer=tr)
        assert out["status"] == "finished", (loss, out)
        assert tr.switches == {"bf16": True, "channels_last": True, "cuda_graphs": graphs == "on"}
        assert bool(tr._graphs) == (graphs == "on"), loss  # 15 full batches: captured after 3 warm-up steps
        assert all(h["loss_D"] is not None and h["loss_G"] is not None for h in hist), (loss, hist)


# ---- checkpoints: the random stream, CPU <-> GPU -------------------------------------------------------------
def test_graphed_gpu_resume_continues_the_same_random_stream(tmp_path):
    from trainables.gan.loop import GanTrainer, array_batches, train_gan
    from trainables.gan.run_files import load_checkpoint
    from trainables.gan.step_checks import strict_numerics

    data = torch.rand(128, 3, 64, 64, generator=torch.Generator().manual_seed(3)).cuda() * 2 - 1
    cfg = gpu_cfg(bf16="off", cuda_graphs="on", num_epochs=2, checkpoint_every=1)
    saved = {}
    with strict_numerics():
        straight = GanTrainer(cfg, "cuda")

        def keep(state, epoch):
            if epoch == 1:
                torch.save(state, tmp_path / "e1.pt")
                saved["rng"] = state["rng"].clone()

        train_gan(cfg, array_batches(data, cfg.batch_size, 0), lambda m: None, trainer=straight, checkpoint=keep)
        resumed = GanTrainer(cfg, "cuda")
        resumed.load_state_dict(load_checkpoint(tmp_path / "e1.pt", "cuda"))
        assert resumed.rng_restored and torch.equal(resumed.rng.get_state(), saved["rng"])
        train_gan(cfg, array_batches(data, cfg.batch_size, 0), lambda m: None, trainer=resumed)
    assert resumed.epoch == straight.epoch == 2
    # same stream: only graph-vs-eager float noise (the resumed run re-warms up eagerly before capturing)
    assert rel_max_diff(resumed.G_module.state_dict(), straight.G_module.state_dict()) < 1e-3
    assert rel_max_diff(resumed.D_module.state_dict(), straight.D_module.state_dict()) < 1e-3


def test_checkpoints_move_between_cpu_and_graphed_gpu_both_ways(tmp_path):
    from trainables.gan.loop import GanTrainer
    from trainables.gan.run_files import load_checkpoint

    cfg = gpu_cfg(cuda_graphs="on", batch_size=16)
    real = torch.rand(16, 3, 64, 64) * 2 - 1
    gpu = GanTrainer(cfg, "cuda")
    for _ in range(5):  # 3 warm-up steps, capture, replay
        gpu.train_step(real)
    assert gpu._graphs
    torch.save(gpu.state_dict(), tmp_path / "gpu.pt")
    cpu = GanTrainer(dataclasses.replace(cfg, device="cpu"), "cpu")
    cpu.load_state_dict(load_checkpoint(tmp_path / "gpu.pt", "cpu"))  # used to raise on the CUDA RNG state
    assert cpu.rng_restored is False
    cpu.train_step(real)  # a capturable Adam on CPU tensors would assert
    assert torch.isfinite(cpu.acc).all()
    torch.save(cpu.state_dict(), tmp_path / "cpu.pt")
    back = GanTrainer(cfg, "cuda")
    back.load_state_dict(load_checkpoint(tmp_path / "cpu.pt", "cuda"))
    assert back.rng_restored is False and all(g["capturable"] for g in back.opt_G.param_groups)
    for _ in range(5):  # capture must not meet a non-capturable Adam (.item() during capture)
        back.train_step(real)
    torch.cuda.synchronize()
    assert back._graphs and torch.isfinite(back.acc).all()


def test_spectral_norm_keeps_fp32_power_iteration_under_cuda_bf16_autocast():
    from trainables.gan.networks import build_networks

    _, D = build_networks(gpu_cfg(loss="hinge"))
    D = D.cuda()
    ref = copy.deepcopy(D)
    x = torch.rand(8, 3, 64, 64, device="cuda") * 2 - 1
    with torch.autocast("cuda", dtype=torch.bfloat16):
        D(x)
    ref(x)  # fp32 reference from the same u, v
    for (name, a), b in zip(D.named_buffers(), ref.buffers()):
        if name.endswith("_u") or name.endswith("_v"):
            assert a.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-5, atol=1e-6), name


# ---- Ray ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_gpu():
    import ray

    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=min(8, os.cpu_count() or 2), num_gpus=torch.cuda.device_count(), include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    yield ray
    ray.shutdown()


@needs_ray
@pytest.mark.ray
def test_ray_train_gan_runs_to_the_end_on_gpu(tmp_path, ray_gpu):
    from demo_data import make_demo
    from trainables.gan.run_files import load_checkpoint
    from trainables.gan.train import run_gan_ray

    workers = 2 if torch.cuda.device_count() >= 2 else 1  # 1 worker: the graphed path fed from a Ray shard
    manifest = make_demo(tmp_path / "demo", 40, 80)  # ~48 minority training images: 3 full batches an epoch
    run = tmp_path / "run"
    out = run_gan_ray(manifest, run, dict(ngf=16, ndf=16, batch_size=16, num_epochs=3, checkpoint_every=1,
                                          sample_every=1, diffaugment=AUG),
                      num_workers=workers, use_gpu=True)
    assert out["status"] == "finished" and out["epochs"] == 3, out
    assert (run / "preview.png").is_file()  # the CPU preview from the CUDA workers' checkpoint
    state = load_checkpoint(run / "checkpoints" / "checkpoint_000003.pt")
    assert state["rng_device"] == "cuda"
    assert all(g["capturable"] for g in state["opt_G"]["param_groups"]) == (workers == 1)  # graphed iff 1 worker


@needs_ray
@pytest.mark.ray
@pytest.mark.slow
def test_smoke_sweep_with_half_a_gpu_per_trial(tmp_path):
    import json

    import pandas as pd

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "augment_ratio.py"), "--smoke-test",
                           "--gpus-per-trial", "0.5", "--storage-path", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    df = pd.read_parquet(tmp_path / "smoke_test" / "results.parquet")
    clf = df[df["stage"] == "classifier"]
    assert len(clf) and clf["val_f1"].notna().all()
    gan_dirs = [d for d in df["gan_run_dir"].dropna().unique() if d]
    assert gan_dirs, "no GAN was trained"
    assert {json.loads((Path(d) / "config.json").read_text())["device"] for d in gan_dirs} == {"cuda"}


# ---- FID / KID ----------------------------------------------------------------------------------------------
def test_fid_kid_domain_features_cuda_equals_cpu():
    from data_prep.demo import make_demo_arrays
    from trainables.gan.step_checks import strict_numerics
    from trainables.metrics.features import DomainCNN, DomainFeatures, extract_features
    from trainables.metrics.generative import frechet_distance, gaussian_stats, kernel_inception_distance

    imgs, labels = make_demo_arrays(num_majority=600, num_minority=600, size=64)
    real, fake = imgs[labels == 1], imgs[labels == 0]
    torch.manual_seed(0)
    net_cpu = DomainFeatures(DomainCNN(3, 2, 64), name="gpu-test")
    net_gpu = copy.deepcopy(net_cpu).cuda()
    with strict_numerics():  # TF32 off: fp32 convs on both sides
        feats = {dev: (extract_features(net, real), extract_features(net, fake))
                 for dev, net in (("cpu", net_cpu), ("cuda", net_gpu))}
    fr, ff = feats["cpu"]
    assert np.abs(feats["cuda"][0] - fr).max() <= 1e-3 * np.abs(fr).max()
    fid = {d: frechet_distance(gaussian_stats(r), gaussian_stats(f)) for d, (r, f) in feats.items()}
    kid = {d: kernel_inception_distance(r, f, subsets=50, subset_size=200, seed=0)[0] for d, (r, f) in feats.items()}
    assert fid["cpu"] > 0 and kid["cpu"] > 0  # different classes: a distance to agree on
    assert abs(fid["cuda"] - fid["cpu"]) <= 1e-3 * abs(fid["cpu"]), fid
    assert abs(kid["cuda"] - kid["cpu"]) <= 1e-3 * abs(kid["cpu"]), kid
