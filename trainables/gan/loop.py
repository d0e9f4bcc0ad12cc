"""The GAN training loop, free of Ray: `train_gan(cfg, batches, report)`.

    trainer = GanTrainer(cfg, device="cpu")
    result = train_gan(cfg, batches=array_batches(images, cfg.batch_size, cfg.seed), report=history.append,
                       trainer=trainer)

`batches(epoch)` yields (B, C, S, S) batches, uint8 (made float in [-1, 1] on the trainer's device, batch by batch)
or float in [-1, 1] (a class-conditional GAN: (images, class indices) pairs, see `array_batches(..., labels=)`);
`report(metrics)` gets one dict per epoch (loss_D, loss_G, D_x, D_G_z, images_per_s, epoch_time_s, status, ...).
Optional hooks: `checkpoint(state, epoch)` every cfg.checkpoint_every epochs (called just before that epoch's
report, so a Ray worker can attach it to the report), `samples(epoch, uint8 images)` with the fixed-noise samples
every cfg.sample_every epochs, and `evaluate(sample_fn, epoch) -> dict` every cfg.eval_every epochs (and at the last
epoch), merged into that epoch's report; `best_checkpoint(state, epoch)` whenever that evaluation's "kid" is the
lowest so far (the checkpoint the sweep samples its synthetic set from). A Ray Train worker passes
`wrap_model=prepare_model` and its rank / world size; per-epoch statistics and stop decisions are then all-reduced
so every rank stops at the same epoch.

One step = one D update; every n_critic-th D update is followed by one G update and one EMA update
of G_ema. On CUDA the step can run as a captured CUDA graph (cfg.cuda_graphs), with bf16 autocast and
channels_last; on CPU the loop is plain eager fp32 and bit-reproducible for a fixed seed.

Augmenting D's inputs: DiffAugment (cfg.diffaugment) or ADA (cfg.ada; p adjusted once per epoch from the epoch's
overfitting r_t, reported as ada_p and ada_rt; trainables.gan.ada). Random stream: one generator per trainer
(`GanTrainer.rng`); how checkpoints keep it: trainables.gan.state.

Extra G terms, added to any base loss: cfg.feature_matching * ||mean D_feat(real) - mean D_feat(fake)||^2
(D's last hidden features, trainables.gan.losses.feature_matching_loss) and cfg.perceptual * the VGG16
feature-statistics loss (trainables.gan.perceptual). Their epoch means are reported as loss_G_fm and
loss_G_perceptual when their weight is > 0. A conditional GAN pairs every fake with the class of the real
image it is trained against (so G sees the classes in their data proportions).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch

from data_prep.arrays import denormalize, normalize_batch
from data_prep.errors import DataError
from trainables.gan.batching import array_batches, generate_uint8, iter_generated  # noqa: F401  (their old home)
from trainables.gan.ada import ada_adjust, ada_augment, ada_ops, overfitting_signs
from trainables.gan.config import GanConfig, gpu_switches
from trainables.gan.diffaugment import diff_augment, parse_policy
from trainables.gan.losses import divergence_reason, feature_matching_loss, get_loss, gradient_penalty
from trainables.gan.networks import build_networks, num_classes_of
from trainables.gan.state import (CHECKPOINT_FORMAT, _resume_seed, _rng_seed,  # noqa: F401  (also their old home)
                                   check_checkpoint_format, match_optimizer_to_trainer, restore_trainer, rng_device_of,
                                   trainer_state)

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before a CUDA graph is captured (cuDNN/allocator warm-up)
NUM_FIXED_NOISE = 64  # the 8x8 sample grid
_ACC = ("loss_D", "loss_G", "D_x", "D_G_z", "nonfinite_D", "nonfinite_G", "d_steps", "g_steps", "loss_G_fm",
        "loss_G_perceptual", "ada_rt")


class GanTrainer:
    """G, D, G_ema, both Adam optimizers and the step; `state_dict()` is the checkpoint payload."""

    def __init__(self, cfg: GanConfig, device: str | torch.device = "cpu", wrap_model: Callable | None = None,
                 rank: int = 0, world_size: int = 1, meta: dict | None = None,
                 vgg: torch.nn.Module | None = None):
        """vgg: a VGG16-layout feature net for the perceptual term (tests pass a small random one);
        default: loaded from cfg.vgg_weights when cfg.perceptual > 0."""
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = torch.device(device)
        self.meta = dict(meta or {})
        self.loss = get_loss(cfg.loss)
        self.switches = gpu_switches(cfg, self.device.type, world_size)
        self.aug = parse_policy(cfg.diffaugment)
        self.ada = ada_ops(cfg.ada_policy) if cfg.ada else None  # the flips/rotations the modality allows
        self.ada_p_value = 0.0  # ADA's augmentation probability (host copy of self.ada_p)
        self.ada_p = torch.zeros((), device=self.device)
        self.best_kid, self.best_epoch = math.inf, 0  # the best validation KID so far and its epoch (evaluate hook)
        self._build_networks(cfg, wrap_model, vgg)
        graphs = self.switches["cuda_graphs"]
        betas = tuple(cfg.betas)
        self.opt_G = torch.optim.Adam(self.G_module.parameters(), lr=cfg.lr_g, betas=betas, capturable=graphs)
        self.opt_D = torch.optim.Adam(self.D_module.parameters(), lr=cfg.lr_d, betas=betas, capturable=graphs)
        self._init_rng(cfg, rank, graphs)
        self.ema_step = torch.zeros((), device=self.device)
        self.acc = torch.zeros(len(_ACC), device=self.device, dtype=torch.float32)
        self.d_steps_total = 0
        self.epoch = 0  # epochs completed
        self.fixed_noise = torch.randn(NUM_FIXED_NOISE, cfg.latent_dim,
                                       generator=torch.Generator().manual_seed(cfg.seed + 12345))
        # conditional sample grids: row r of the 8x8 grid shows class r mod K
        self.fixed_labels = (torch.arange(NUM_FIXED_NOISE) // 8) % self.num_classes if self.num_classes else None
        self._graphs: dict[bool, Any] = {}
        self._graph_eager_steps = {True: 0, False: 0}
        self._static_real: torch.Tensor | None = None
        self._static_y: torch.Tensor | None = None
        self._side_stream = None

    def _build_networks(self, cfg: GanConfig, wrap_model: Callable | None, vgg: torch.nn.Module | None) -> None:
        """G, D (wrapped for DDP when asked), G_ema and the perceptual net, on this trainer's device and layout."""
        # Same init on every rank (DDP would broadcast rank 0's anyway), from the CPU generator only, restored
        # afterwards: making a trainer must not reseed another (graphed) trainer's default CUDA generator.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(cfg.seed)
            G, D = build_networks(cfg)
        self.num_classes = num_classes_of(cfg)
        # the class sampled for evaluation: the GAN's main (minority) label when it learnt it
        label = self.meta.get("label")
        self.primary_class = (list(cfg.classes).index(label) if self.num_classes and label in cfg.classes else 0)
        self.perceptual = None
        if cfg.perceptual > 0:
            from trainables.gan.perceptual import PerceptualLoss, load_vgg16_features

            self.perceptual = PerceptualLoss(vgg if vgg is not None else load_vgg16_features(cfg.vgg_weights))
        self.memory_format = torch.channels_last if self.switches["channels_last"] else torch.contiguous_format
        G.to(self.device, memory_format=self.memory_format)
        D.to(self.device, memory_format=self.memory_format)
        if self.perceptual is not None:
            self.perceptual.to(self.device, memory_format=self.memory_format)
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        self.G_module, self.D_module = G, D  # unwrapped: what is saved, and what the G step runs D through
        self.G = wrap_model(G) if wrap_model else G
        self.D = wrap_model(D) if wrap_model else D

    def _init_rng(self, cfg: GanConfig, rank: int, graphs: bool) -> None:
        # Eager steps draw noise/augmentation from this trainer's generator. Graphed steps draw from the device's
        # default CUDA generator (generator=None), the one graph replay advances. Both are seeded alike, so the
        # two modes draw the same stream; `self.rng` is whichever the step uses, and what checkpoints save.
        self.gen = torch.Generator(device=self.device)
        self._step_gen = None if graphs else self.gen
        if graphs:
            torch.cuda.init()  # fills torch.cuda.default_generators
            self.rng = torch.cuda.default_generators[
                self.device.index if self.device.index is not None else torch.cuda.current_device()]
        else:
            self.rng = self.gen
        self.rng.manual_seed(_rng_seed(cfg.seed, rank))
        self.rng_restored: bool | None = None  # after load_state_dict: was the saved random stream restored?

    # ---- the step -------------------------------------------------------------------------------------
    def _autocast(self):
        if not self.switches["bf16"]:
            return contextlib.nullcontext()
        # cache off: cached casts would be baked into a captured graph and go stale
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, device=self.device, generator=self._step_gen)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.ada is not None:
            return ada_augment(x, self.ada_p, self.ada, self._step_gen)
        return diff_augment(x, self.aug, self._step_gen) if self.aug else x

    def _step(self, real: torch.Tensor, do_g: bool, y: torch.Tensor | None = None) -> None:
        """One D update (+ one G update and EMA update when do_g). Only tensor ops: capturable.
        y: class indices of `real` (conditional GAN; the fakes get the same classes)."""
        cfg, acc = self.cfg, self.acc
        b = real.shape[0]
        cond = (y,) if self.num_classes else ()  # the label argument of G and D, when conditional
        with self._autocast():
            z = self._noise(b)
            if do_g:
                fake = self.G(z, *cond)  # one G forward feeds both the D step (detached) and the G step
            else:
                with torch.no_grad():
                    fake = self.G_module(z, *cond)
            self.opt_D.zero_grad(set_to_none=True)
            real_aug, fake_aug = self._augment(real), self._augment(fake.detach())
            s_real, s_fake = self.D(real_aug, *cond), self.D(fake_aug, *cond)
            loss_D = self.loss.d_loss(s_real.float(), s_fake.float(), cfg.label_smoothing)
            if self.loss.gradient_penalty:
                D_gp = (lambda x: self.D_module(x, y)) if self.num_classes else self.D_module
                loss_D = loss_D + cfg.gp_weight * gradient_penalty(D_gp, real_aug, fake_aug, self._step_gen)
        loss_D.backward()
        self.opt_D.step()
        with torch.no_grad():
            acc[0] += loss_D.detach().float()
            acc[2] += self.loss.to_prob(s_real.detach().float()).mean()
            acc[3] += self.loss.to_prob(s_fake.detach().float()).mean()
            acc[4] += (~torch.isfinite(loss_D.detach())).float()
            acc[6] += 1
            if self.ada is not None:  # the critic of wgan-gp has no sign of its own: relative to the batch's fakes
                acc[10] += overfitting_signs(s_real, s_fake, relative=not self.loss.signed_scores)
        if not do_g:
            return
        self.D_module.requires_grad_(False)  # G step: no D gradients, and D's DDP wrapper is bypassed
        with self._autocast():
            self.opt_G.zero_grad(set_to_none=True)
            s_g, feat_fake = self.D_module(self._augment(fake), *cond, return_features=True)
            loss_G = self.loss.g_loss(s_g.float())
            if cfg.feature_matching > 0:
                with torch.no_grad():
                    feat_real = self.D_module(self._augment(real), *cond, return_features=True)[1]
                loss_fm = feature_matching_loss(feat_real, feat_fake)
                loss_G = loss_G + cfg.feature_matching * loss_fm
                acc[8] += loss_fm.detach().float()
            if self.perceptual is not None:
                loss_perc = self.perceptual(real, fake)
                loss_G = loss_G + cfg.perceptual * loss_perc
                acc[9] += loss_perc.detach().float()
        loss_G.backward()
        self.opt_G.step()
        self.D_module.requires_grad_(True)
        with torch.no_grad():
            acc[1] += loss_G.detach().float()
            acc[5] += (~torch.isfinite(loss_G.detach())).float()
            acc[7] += 1
            self._ema_update()

    def _ema_update(self) -> None:
        # Decay ramps up as (1+t)/(10+t) so G_ema is useful in short runs, capped at cfg.ema_decay.
        self.ema_step += 1
        decay = torch.clamp((1 + self.ema_step) / (10 + self.ema_step), max=self.cfg.ema_decay)
        for p_ema, p in zip(self.G_ema.parameters(), self.G_module.parameters()):
            p_ema.lerp_(p.detach(), 1 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G_module.buffers()):
            b_ema.copy_(b)

    def train_step(self, real: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Run one D step on `real` (and the G step when it is due); graphed when enabled and full-sized.
        real: uint8 (0..255) or float ([-1, 1]) (B, C, S, S); y: class indices (B,), required by a conditional GAN."""
        if not real.is_floating_point():  # uint8: to float on the device, on this stream, before any static copy
            real = normalize_batch(real.to(self.device, non_blocking=True))
        if self.num_classes:
            if y is None:
                raise DataError("a class-conditional GAN needs (images, class indices) batches")
            y = y.to(self.device, non_blocking=True).long()
        self.d_steps_total += 1
        do_g = self.d_steps_total % self.cfg.n_critic == 0
        graph = self._graphs.get(do_g) if self.switches["cuda_graphs"] else None
        if graph is not None and real.shape[0] == self.cfg.batch_size:
            # Replay: the batch (a device tensor, or a pinned host float tensor) is copied into the
            # static input on the stream that launches the replay, so the copy is ordered before the graph
            # reads it (a copy made elsewhere, e.g. in a loader's prefetch thread, would not be).
            self._static_real.copy_(real, non_blocking=True)
            if y is not None:
                self._static_y.copy_(y, non_blocking=True)
            graph.replay()
            return
        real = real.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        if not (self.switches["cuda_graphs"] and real.shape[0] == self.cfg.batch_size):
            self._step(real, do_g, y)
            return
        if graph is None:
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream()
            if self._graph_eager_steps[do_g] < GRAPH_WARMUP_STEPS:  # warm-up steps are real training steps
                self._graph_eager_steps[do_g] += 1
                self._side_stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(self._side_stream):
                    self._step(real, do_g, y)
                torch.cuda.current_stream().wait_stream(self._side_stream)
                return
            graph = self._capture(real, do_g, y)
        self._static_real.copy_(real)
        if y is not None:
            self._static_y.copy_(y)
        graph.replay()

    def _capture(self, real: torch.Tensor, do_g: bool, y: torch.Tensor | None = None):
        if self._static_real is None:
            self._static_real = torch.empty_like(real)
            self._static_y = torch.empty_like(y) if y is not None else None
        if y is not None:
            self._static_y.copy_(y)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records only; the caller replays it for this batch
            self._step(self._static_real, do_g, self._static_y)
        self._graphs[do_g] = graph
        return graph

    # ---- epoch statistics -----------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.acc.zero_()

    def epoch_stats(self) -> dict[str, float]:
        """Sums accumulated on the device -> one sync -> (all-reduced) epoch means."""
        acc = self.acc.detach().clone()
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(acc)
        v = dict(zip(_ACC, acc.double().cpu().tolist()))
        d, g = max(v["d_steps"], 1.0), v["g_steps"]
        return {"loss_D": v["loss_D"] / d, "loss_G": (v["loss_G"] / g) if g else None,
                "D_x": v["D_x"] / d, "D_G_z": v["D_G_z"] / d, "nonfinite_D": int(v["nonfinite_D"]),
                "nonfinite_G": int(v["nonfinite_G"]), "d_steps": int(v["d_steps"]), "g_steps": int(g),
                "loss_G_fm": (v["loss_G_fm"] / g) if g else None,
                "loss_G_perceptual": (v["loss_G_perceptual"] / g) if g else None, "ada_rt": v["ada_rt"] / d}

    # ---- sampling and checkpoints ---------------------------------------------------------------------
    def sample_uint8(self, n: int, seed: int | None = None, class_index: int | None = None) -> np.ndarray:
        """n images from G_ema as uint8 (n, S, S, C); noise from `seed` (default: a fixed evaluation seed).
        Conditional: of class `class_index` (default: the main label's class)."""
        if self.num_classes and class_index is None:
            class_index = self.primary_class
        return generate_uint8(self.G_ema, n, self.cfg.latent_dim, self.cfg.seed + 777 if seed is None else seed,
                              self.device, class_index=class_index)

    def fixed_samples(self) -> np.ndarray:
        with torch.no_grad():
            cond = (self.fixed_labels.to(self.device),) if self.num_classes else ()
            x = self.G_ema(self.fixed_noise.to(self.device), *cond).float().cpu().numpy()
        return denormalize(x)

    def state_dict(self) -> dict[str, Any]:
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any], where: str = "checkpoint") -> None:
        restore_trainer(self, state, where)

    # ---- ADA ------------------------------------------------------------------------------------------
    def adapt(self, stats: dict) -> dict[str, float]:
        """End of an epoch: ADA's p moves by the epoch's overfitting r_t (trainables.gan.ada); -> the values to log
        (p as used in this epoch, r_t). Every rank sees the same all-reduced r_t, so p stays equal across ranks."""
        if self.ada is None:
            return {}
        used = self.ada_p_value
        step = 1.0 / max(1.0, self.cfg.ada_ramp * self.cfg.num_epochs)
        self.ada_p_value = ada_adjust(used, stats["ada_rt"], self.cfg.ada_target, step)
        self.ada_p.fill_(self.ada_p_value)  # in place: a captured graph reads this tensor
        return {"ada_p": used, "ada_rt": stats["ada_rt"]}


def train_gan(cfg: GanConfig, batches: Callable[[int], Iterable[torch.Tensor]], report: Callable[[dict], Any], *,
              trainer: GanTrainer | None = None, device: str | torch.device = "cpu",
              checkpoint: Callable[[dict, int], Any] | None = None,
              samples: Callable[[int, np.ndarray], Any] | None = None,
              evaluate: Callable[[Callable[[int], np.ndarray], int], dict] | None = None,
              best_checkpoint: Callable[[dict, int], Any] | None = None) -> dict[str, Any]:
    """Train from trainer.epoch + 1 to cfg.num_epochs. Returns {status, reason, epochs, loss_D, ..., time_s};
    status is "finished" or "diverged" (divergence is reported, never raised). best_checkpoint(state, epoch): called
    when an evaluation's "kid" is the lowest so far among epochs >= cfg.best_after x num_epochs (the checkpoint a GAN
    is sampled from; best_epoch/best_kid are then in every later report and the result)."""
    trainer = trainer or GanTrainer(cfg, device)
    t_start = time.perf_counter()
    status, reason, last, collapsed = "finished", "", {}, 0
    start_epoch = trainer.epoch
    for epoch in range(start_epoch + 1, cfg.num_epochs + 1):
        t0 = time.perf_counter()
        trainer.reset_stats()
        n_images = 0
        for real in batches(epoch):
            real, y = real if isinstance(real, (tuple, list)) else (real, None)
            trainer.train_step(real, y)
            n_images += int(real.shape[0])
        stats = trainer.epoch_stats()  # the epoch's only host sync (all-reduced under DDP)
        if stats["d_steps"] == 0:
            raise DataError(f"epoch {epoch}: no training images reached the GAN (empty minority-class shard)")
        dt = time.perf_counter() - t0
        if trainer.loss.collapse_check and cfg.collapse_loss_d and math.isfinite(stats["loss_D"]) \
                and stats["loss_D"] < cfg.collapse_loss_d:
            collapsed += 1
        else:
            collapsed = 0
        reason = divergence_reason(cfg, epoch, stats, collapsed)
        metrics = {"epoch": epoch, "loss_D": stats["loss_D"], "loss_G": stats["loss_G"], "D_x": stats["D_x"],
                   "D_G_z": stats["D_G_z"], "images_per_s": n_images * trainer.world_size / max(dt, 1e-9),
                   "epoch_time_s": dt, "status": "diverged" if reason else "running", "reason": reason}
        if cfg.feature_matching > 0:
            metrics["loss_G_fm"] = stats["loss_G_fm"]
        if cfg.perceptual > 0:
            metrics["loss_G_perceptual"] = stats["loss_G_perceptual"]
        metrics.update(trainer.adapt(stats))  # ADA: p of this epoch and r_t; p moves for the next epoch
        metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        if reason:  # no checkpoint of broken weights; the last good one stays the latest
            status, last = "diverged", metrics
            report(metrics)
            break
        trainer.epoch = epoch
        final = epoch == cfg.num_epochs
        if evaluate is not None and trainer.rank == 0 and cfg.eval_every and (epoch % cfg.eval_every == 0 or final):
            metrics.update(evaluate(trainer.sample_uint8, epoch))
            kid = metrics.get("kid")
            # an early G (noise) can score well against a few dozen reference images: only the later part competes
            late = epoch >= cfg.best_after * cfg.num_epochs
            if late and isinstance(kid, (int, float)) and math.isfinite(kid) and kid < trainer.best_kid:
                trainer.best_kid, trainer.best_epoch = float(kid), epoch
                if best_checkpoint is not None:
                    best_checkpoint(trainer.state_dict(), epoch)
        if trainer.best_epoch:
            metrics.update(best_epoch=trainer.best_epoch, best_kid=trainer.best_kid)
        if samples is not None and cfg.sample_every and (epoch % cfg.sample_every == 0 or final):
            samples(epoch, trainer.fixed_samples())
        if checkpoint is not None and (epoch % cfg.checkpoint_every == 0 or final):
            checkpoint(trainer.state_dict(), epoch)
        if final:
            metrics["status"] = "finished"
        last = metrics
        report(metrics)
    out = {k: last.get(k) for k in ("loss_D", "loss_G", "D_x", "D_G_z", "images_per_s")}
    out.update(status=status, reason=reason, epochs=trainer.epoch, time_s=time.perf_counter() - t_start)
    out.update({k: v for k, v in last.items() if k not in out and k not in ("epoch", "epoch_time_s")})
    return out
