"""GAN losses as a table keyed by the config string, plus the WGAN-GP gradient penalty.

    loss = get_loss("hinge")            # unknown name -> ConfigError listing GAN_LOSSES
    loss_D = loss.d_loss(D(x), D(G(z).detach()), real_target)
    loss_G = loss.g_loss(D(G(z)))

Scores are raw D outputs (logits). `to_prob` maps them to what is reported as D(x) and D(G(z)):
a probability for bce, the raw mean score for hinge and wgan-gp (they have no probability).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from data_prep.errors import ConfigError


@dataclass(frozen=True)
class GanLoss:
    d_loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (real scores, fake scores, real target)
    g_loss: Callable[[torch.Tensor], torch.Tensor]  # fake scores -> G's loss
    d_norm: str  # discriminator normalisation the loss needs: batch | spectral | none
    gradient_penalty: bool  # add gp_weight * gradient_penalty(D, real, fake) to D's loss
    to_prob: Callable[[torch.Tensor], torch.Tensor]  # scores -> reported D(x) / D(G(z))
    collapse_check: bool  # a D loss near 0 means D won (bounded losses); the loop stops after collapse_patience
    multi_critic: bool  # several D (critic) steps per G step pay off: the sweep searches n_critic, else n_critic = 1
    signed_scores: bool  # a score's sign says real (> 0) or fake; a WGAN critic's level is arbitrary (ADA's r_t)


def _bce_d(real: torch.Tensor, fake: torch.Tensor, real_target: float) -> torch.Tensor:
    # One-sided label smoothing: only the real target moves (to e.g. 0.9), fakes stay at 0.
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_target))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def _bce_g(fake: torch.Tensor) -> torch.Tensor:  # non-saturating: maximise log D(G(z))
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def _hinge_d(real: torch.Tensor, fake: torch.Tensor, real_target: float) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _wgan_d(real: torch.Tensor, fake: torch.Tensor, real_target: float) -> torch.Tensor:
    return fake.mean() - real.mean()


def _neg_mean(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


GAN_LOSSES: dict[str, GanLoss] = {
    "bce": GanLoss(_bce_d, _bce_g, d_norm="batch", gradient_penalty=False, to_prob=torch.sigmoid,
                   collapse_check=True, multi_critic=False, signed_scores=True),
    "hinge": GanLoss(_hinge_d, _neg_mean, d_norm="spectral", gradient_penalty=False, to_prob=lambda s: s,
                     collapse_check=True, multi_critic=False, signed_scores=True),
    # the critic's loss is unbounded below: a small value is no collapse
    "wgan-gp": GanLoss(_wgan_d, _neg_mean, d_norm="none", gradient_penalty=True, to_prob=lambda s: s,
                       collapse_check=False, multi_critic=True, signed_scores=False),
}


def get_loss(name: str) -> GanLoss:
    try:
        return GAN_LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown GAN loss {name!r}; valid losses: {sorted(GAN_LOSSES)}") from None


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean over the batch of (||grad_x D(x_hat)||_2 - 1)^2,
    x_hat a random interpolation of real and fake. `alpha` (B,) can be given for tests."""
    b = real.shape[0]
    if alpha is None:
        alpha = torch.rand(b, device=real.device, generator=generator)
    alpha = alpha.reshape(b, *([1] * (real.dim() - 1))).to(real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = D(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.float().reshape(b, -1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Feature matching (Salimans et al. 2016): squared distance between the batch means of D's intermediate
    features on real and on fake images, averaged over feature dimensions. Zero when the two batches have
    the same mean features (e.g. identical batches); G's gradient flows through `fake_features` only."""
    real = real_features.detach().float().reshape(real_features.shape[0], -1).mean(0)
    fake = fake_features.float().reshape(fake_features.shape[0], -1).mean(0)
    return ((real - fake) ** 2).mean()


def divergence_reason(cfg, epoch: int, stats: dict, collapsed_epochs: int) -> str:
    """Why an epoch ends the run ("" = it does not): non-finite losses, an exploded loss, a collapsed D."""
    bad = stats["nonfinite_D"] + stats["nonfinite_G"]
    if cfg.stop_on_nonfinite and bad:
        return (f"non-finite loss (NaN/inf) at epoch {epoch}: loss_D in {stats['nonfinite_D']} of "
                f"{stats['d_steps']} D steps, loss_G in {stats['nonfinite_G']} of {stats['g_steps']} G steps")
    for key in ("loss_D", "loss_G"):
        v = stats[key]
        if cfg.max_abs_loss and v is not None and math.isfinite(v) and abs(v) > cfg.max_abs_loss:
            return f"{key} exploded at epoch {epoch}: |{v:.3g}| > max_abs_loss {cfg.max_abs_loss:g}"
    if collapsed_epochs and collapsed_epochs >= max(cfg.collapse_patience, 1):
        return (f"discriminator collapsed: epoch-mean loss_D < {cfg.collapse_loss_d:g} for {collapsed_epochs} "
                f"epochs up to epoch {epoch} (D(x)={stats['D_x']:.3f}, D(G(z))={stats['D_G_z']:.3f}); "
                f"G receives no useful gradient")
    return ""
