"""LDAM-DRW (Cao et al., NeurIPS 2019) as its official code (kaidic/LDAM-DRW) trains CIFAR-LT.

Three things differ from ``ldam`` (the LDAM loss on the backbone's own linear classifier, with
uniform weights):

- the classifier is a normalised (cosine) linear layer, so the logits are cosines in [-1, 1];
- the loss subtracts the margin m_j = max_margin · (n_min / n_j)^(1/4) from the target cosine
  and multiplies every logit by s = 30 (``scale``);
- from ``start_epoch`` (the code: epoch 160 of 200) each sample is weighted by its class's
  effective-number weight (β = 0.9999, summing to C), and the batch loss is the weighted mean
  Σ w ℓ / Σ w, as ``F.cross_entropy(weight=...)`` computes it. Before that, all weights are 1.
"""

from __future__ import annotations

from lt_bench_plugins.weighting import EffectiveNumber

import lt_bench


class LdamDrw(EffectiveNumber):
    """LDAM-DRW: cosine classifier, LDAM margins scaled by s = 30, deferred effective-number
    weights from start_epoch"""

    default_loss = "ldam"
    head = "cosine"

    def loss(self, logits, targets, features=None, sample_weights=None):
        per_sample = self.loss_fn(logits, targets)
        weights = self.class_weights[targets].to(per_sample.dtype)
        return (weights * per_sample).sum() / weights.sum()


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("ldam_drw", LdamDrw)
