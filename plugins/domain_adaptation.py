"""DA with cross-entropy (Jamal et al., CVPR 2020; official code abdullahjamal/Longtail_DA) and
its class-volume variant, the ``dadv`` model of Zheng & Ng's code.

A sample's weight is its class weight plus a per-sample ε learned by a one-step look-ahead on a
balanced meta set, from ``start_epoch`` (the code: epoch 160 of 200):
1. with ε = 0 (a leaf), a virtual SGD step θ' = θ − η ∇θ Σ_i (α_{y_i} + ε_i) ℓ_i (a sum, as in
   the code) at the model's current lr η;
2. g = ∂/∂ε of the mean cross-entropy of a meta batch under θ';
3. ε = −0.01 g (``eps_step``), and the real loss is the batch mean of (α_{y_i} + ε_i) ℓ_i,
   with neither a clamp nor a normalisation, as in the code.
α: the effective number (β = 0.9999, summing to C) for ``da``; the class-volume DV weights for
``da_dv``. The meta set is 10 images per class held out of training (``data.meta_per_class``).
"""

from __future__ import annotations

import torch
from lt_bench_plugins.class_volume import DiagonalVolume
from lt_bench_plugins.weighting import EffectiveNumber

import lt_bench
from lt_bench.errors import LtBenchError


class LooksAheadFromStart:
    """The look-ahead part of DA, for any class-weighting method."""

    meta_per_class = 10
    eps_step = 0.01

    def wants_look_ahead(self) -> bool:
        return self.epoch >= self.start_epoch

    def look_ahead(self, step) -> torch.Tensor:
        alpha = self.class_weights[step.targets].float()
        losses = step.per_sample_losses()
        eps = torch.zeros_like(losses, requires_grad=True)
        virtual = step.virtual_step(((alpha + eps) * losses).sum())
        (grad,) = torch.autograd.grad(step.meta_loss(virtual), eps)
        return alpha - self.eps_step * grad


def _check_eps_step(eps_step: float) -> float:
    if not eps_step >= 0:
        raise LtBenchError(f"eps_step must be >= 0, got {eps_step}")
    return float(eps_step)


class DomainAdaptation(LooksAheadFromStart, EffectiveNumber):
    """DA with CE (Jamal et al. 2020): effective-number class weights plus a per-sample eps
    learned by a one-step look-ahead on a balanced meta set"""

    def __init__(self, class_counts, *, eps_step: float = 0.01, **options):
        self.eps_step = _check_eps_step(eps_step)
        super().__init__(class_counts, **options)


class DomainAdaptationDV(LooksAheadFromStart, DiagonalVolume):
    """DA with class-volume (DV) class weights: the dadv model of Zheng & Ng's code"""

    def __init__(self, class_counts, *, eps_step: float = 0.01, **options):
        self.eps_step = _check_eps_step(eps_step)
        super().__init__(class_counts, **options)


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("da", DomainAdaptation)
    register("da_dv", DomainAdaptationDV)
