"""Per-sample losses that any weighting can be combined with (``loss=`` option).

Each factory takes the training class counts (float64) and its options and returns a function
``(logits, targets) -> [B]`` in float32: under bf16 autocast the logits are upcast first, since
log-softmax in bf16 loses the small probabilities of tail classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import lt_bench
from lt_bench.errors import LtBenchError
from lt_bench.method import cross_entropy_per_sample


def cross_entropy(class_counts):
    """Softmax cross-entropy."""
    return cross_entropy_per_sample


def focal(class_counts, *, gamma: float = 2.0):
    """Softmax focal loss -(1 - p_t)^gamma · log p_t (Lin et al. 2017)."""
    if gamma < 0:
        raise LtBenchError(f"focal loss: gamma must be >= 0, got {gamma}")

    def loss(logits, targets):
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        return -((1.0 - log_p.exp()).clamp_min(0.0) ** gamma) * log_p
    return loss


class _ConstantLoss(nn.Module):
    """A loss with per-class constants held as a (non-persistent) buffer: it moves with the
    criterion's ``.to(device)``, so no step copies it from the host (a blocking copy that also
    rules out CUDA graphs), and checkpoints stay as they were."""

    def __init__(self, constants: torch.Tensor):
        super().__init__()
        self.register_buffer("constants", constants.float(), persistent=False)


class _Ldam(_ConstantLoss):
    def __init__(self, margins: torch.Tensor, scale: float):
        super().__init__(margins)
        self.scale = scale

    def forward(self, logits, targets):
        logits = logits.float()
        shift = torch.zeros_like(logits).scatter_(1, targets[:, None],
                                                  self.constants[targets][:, None])
        return F.cross_entropy(self.scale * (logits - shift), targets, reduction="none")


class _LogitAdjusted(_ConstantLoss):
    def forward(self, logits, targets):
        return F.cross_entropy(logits.float() + self.constants, targets, reduction="none")


def ldam(class_counts, *, max_margin: float = 0.5, scale: float = 30.0):
    """LDAM: margin ∝ n^(-1/4) subtracted from the true logit, largest margin max_margin, scaled."""
    if max_margin <= 0 or scale <= 0:
        raise LtBenchError("ldam loss: max_margin and scale must be > 0")
    margins = class_counts.to(torch.float64) ** -0.25
    return _Ldam(margins * (max_margin / margins.max()), float(scale))


def logit_adjusted(class_counts, *, tau: float = 1.0):
    """Logit-adjusted cross-entropy: logits + tau · log(prior) (Menon et al. 2021)."""
    if not math.isfinite(tau):
        raise LtBenchError(f"logit_adjusted loss: tau must be a finite number, got {tau}")
    return _LogitAdjusted(tau * (class_counts / class_counts.sum()).log())


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
