"""The influence-balanced loss (Park et al., ICCV 2021; official code pseulki/IB-Loss).

A sample's cross-entropy is divided by its influence, the product of the L1 norms of the logit
gradient and of the penultimate features: ib_i = α / (‖softmax(z_i) − onehot(y_i)‖₁ · ‖h_i‖₁ + ε),
and weighted by the inverse class frequency (summing to C). The batch loss is the plain mean
(1/B) Σ_i w_{y_i} · ℓ_i · ib_i; as in the official code the influence is not detached, so the
gradient flows through it too. Before the IB start the loss is plain cross-entropy.

The official CIFAR runs start IB at epoch 100 of 200, where their lr also drops 100-fold; here
the start is ``ib_start`` (default: the protocol's ``start_epoch``, so IB shares the trunk of a
comparison with the other methods).
"""

from __future__ import annotations

import torch.nn.functional as F

import lt_bench
from lt_bench.errors import LtBenchError
from lt_bench.method import cross_entropy_per_sample


class InfluenceBalanced(lt_bench.Method):
    """Influence-balanced loss (Park et al. 2021): per-sample 1/influence from the logits and
    the penultimate features, inverse-frequency class weights, from ib_start"""

    needs_features = True

    def __init__(self, class_counts, *, alpha: float = 1000.0, epsilon: float = 1e-3,
                 ib_start: int | None = None, **options):
        if not alpha > 0 or not epsilon > 0:
            raise LtBenchError(f"ib: alpha and epsilon must be > 0, got {alpha}, {epsilon}")
        if ib_start is not None:
            options["start_epoch"] = ib_start
        self.alpha, self.epsilon = float(alpha), float(epsilon)
        super().__init__(class_counts, **options)

    def raw_weights(self):
        return 1.0 / self.class_counts

    def loss(self, logits, targets, features=None, sample_weights=None):
        per_sample = self.loss_fn(logits, targets)
        if self.epoch < self.start_epoch:
            return per_sample.mean()
        logits = logits.float()
        onehot = F.one_hot(targets, logits.shape[1]).float()
        grad_norm = (logits.softmax(dim=1) - onehot).abs().sum(dim=1)
        influence = grad_norm * features.float().abs().sum(dim=1)
        weights = self.class_weights[targets] * self.alpha / (influence + self.epsilon)
        return (weights * per_sample).mean()

    @property
    def plain_epochs(self) -> int:
        plain = self.loss_name == "ce" and self.loss_fn is cross_entropy_per_sample
        return self.start_epoch if plain else 0


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("ib", InfluenceBalanced)
