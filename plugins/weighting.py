"""Weightings from the class counts alone, and the plain losses as methods of uniform weight."""

from __future__ import annotations

import torch

import lt_bench
from lt_bench.errors import LtBenchError


class InverseFrequency(lt_bench.Method):
    """Inverse class frequency: α ∝ 1/n."""

    def raw_weights(self):
        return 1.0 / self.class_counts


class SqrtInverseFrequency(lt_bench.Method):
    """Square-root inverse class frequency: α ∝ 1/√n."""

    def raw_weights(self):
        return self.class_counts.rsqrt()


class EffectiveNumber(lt_bench.Method):
    """Effective number of samples (Cui et al. 2019): α ∝ (1 − β)/(1 − β^n)."""

    def __init__(self, class_counts, *, beta: float = 0.9999, **options):
        if not 0.0 <= beta < 1.0:
            raise LtBenchError(f"effective_number: beta must be in [0, 1), got {beta}")
        self.beta = float(beta)
        super().__init__(class_counts, **options)

    def raw_weights(self):
        counts = self.class_counts
        return (1.0 - self.beta) / (1.0 - torch.full_like(counts, self.beta) ** counts)


class Focal(lt_bench.Method):
    """Focal loss with uniform weights (combine focal with a weighting via loss=focal)."""

    default_loss = "focal"


class LDAM(lt_bench.Method):
    """LDAM loss (Cao et al. 2019), uniform weights; for LDAM-DRW give a weighting loss=ldam."""

    default_loss = "ldam"


class LogitAdjusted(lt_bench.Method):
    """Logit-adjusted cross-entropy (Menon et al. 2021) with uniform weights."""

    default_loss = "logit_adjusted"


class BalancedSoftmax(lt_bench.Method):
    """Balanced softmax (Ren et al. 2020) with uniform weights."""

    default_loss = "balanced_softmax"


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("ce", lt_bench.Method, "Cross-entropy with uniform weights (the baseline)")
    register("inverse_frequency", InverseFrequency)
    register("sqrt_inverse_frequency", SqrtInverseFrequency)
    register("effective_number", EffectiveNumber)
    register("focal", Focal)
    register("ldam", LDAM)
    register("logit_adjusted", LogitAdjusted)
    register("balanced_softmax", BalancedSoftmax)
