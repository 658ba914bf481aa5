"""The vector-scaling loss (Kini et al., NeurIPS 2021; official code orparask/VS-Loss).

Every logit is scaled and shifted by its class before softmax cross-entropy:
z'_j = Δ_j · z_j + ι_j with Δ_j = (n_j / n_max)^γ and ι_j = τ · log π_j (π the training
prior). γ = 0 is the logit-adjusted loss, τ = 0 CDT. The defaults are the official README's
CIFAR-10-LT (IF 100) example, γ = 0.2 and τ = 1.2, without DRW (the code's own argparse
defaults are γ = 0.3, τ = 1.0). Predictions use the raw logits. Combine it with a weighting
through ``loss=vs`` (``method=effective_number loss=vs``); that takes the batch mean of w·ℓ,
where the official VS+DRW takes Σ w ℓ / Σ w (``ldam_drw``'s reduction).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import lt_bench
from lt_bench.errors import LtBenchError


class _VectorScaled(nn.Module):
    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        # buffers: they move with the criterion to the device, checkpoints stay as they were
        self.register_buffer("scale", scale.float(), persistent=False)
        self.register_buffer("shift", shift.float(), persistent=False)

    def forward(self, logits, targets):
        return F.cross_entropy(logits.float() * self.scale + self.shift, targets,
                               reduction="none")


def vs_loss(class_counts, *, gamma: float = 0.2, tau: float = 1.2):
    """VS loss: cross-entropy of (n_j/n_max)^gamma · z_j + tau · log π_j (Kini et al. 2021)."""
    if not (math.isfinite(gamma) and math.isfinite(tau)) or gamma < 0:
        raise LtBenchError(f"vs loss: gamma must be >= 0 and tau finite, got {gamma}, {tau}")
    counts = class_counts.to(torch.float64)
    return _VectorScaled((counts / counts.max()) ** gamma, tau * (counts / counts.sum()).log())


class VectorScaling(lt_bench.Method):
    """Vector-scaling loss (Kini et al. 2021) with uniform weights"""

    default_loss = "vs"


@lt_bench.hookimpl
def lt_bench_register_losses(register):
    register("vs", vs_loss)


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("vs", VectorScaling)
