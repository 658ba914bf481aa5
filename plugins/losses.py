"""Per-sample losses that any weighting can be combined with (``loss=`` option).

Each factory takes the training class counts (float64) and its options and returns a function
``(logits, targets) -> [B]`` in float32: under bf16 autocast the logits are upcast first, since
log-softmax in bf16 loses the small probabilities of tail classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import lt_bench
from lt_bench.errors import LtBenchError


def cross_entropy(class_counts):
    """Softmax cross-entropy."""
    def loss(logits, targets):
        return F.cross_entropy(logits.float(), targets, reduction="none")
    return loss


def focal(class_counts, *, gamma: float = 2.0):
    """Softmax focal loss -(1 - p_t)^gamma · log p_t (Lin et al. 2017)."""
    if gamma < 0:
        raise LtBenchError(f"focal loss: gamma must be >= 0, got {gamma}")

    def loss(logits, targets):
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        return -((1.0 - log_p.exp()).clamp_min(0.0) ** gamma) * log_p
    return loss


def ldam(class_counts, *, max_margin: float = 0.5, scale: float = 30.0):
    """LDAM: margin ∝ n^(-1/4) subtracted from the true logit, largest margin max_margin, scaled."""
    if max_margin <= 0 or scale <= 0:
        raise LtBenchError("ldam loss: max_margin and scale must be > 0")
    margins = class_counts.to(torch.float64) ** -0.25
    margins = (margins * (max_margin / margins.max())).float()

    def loss(logits, targets):
        logits = logits.float()
        shift = torch.zeros_like(logits).scatter_(1, targets[:, None],
                                                  margins.to(logits.device)[targets][:, None])
        return F.cross_entropy(scale * (logits - shift), targets, reduction="none")
    return loss


def logit_adjusted(class_counts, *, tau: float = 1.0):
    """Logit-adjusted cross-entropy: logits + tau · log(prior) (Menon et al. 2021)."""
    log_prior = (class_counts / class_counts.sum()).log().float()

    def loss(logits, targets):
        return F.cross_entropy(logits.float() + tau * log_prior.to(logits.device), targets,
                               reduction="none")
    return loss


def balanced_softmax(class_counts):
    """Balanced softmax: cross-entropy on logits + log n (Ren et al. 2020)."""
    return logit_adjusted(class_counts, tau=1.0)


@lt_bench.hookimpl
def lt_bench_register_losses(register):
    register("ce", cross_entropy)
    register("focal", focal)
    register("ldam", ldam)
    register("logit_adjusted", logit_adjusted)
    register("balanced_softmax", balanced_softmax)
