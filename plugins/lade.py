"""LADE (Hong et al., CVPR 2021; official code hyperconnect/LADE): the prior-adjusted
cross-entropy (LADE-CE, the balanced softmax: cross-entropy of z + log π) plus α times the LADER
regulariser, which fits each class's logit to the log-likelihood ratio of the balanced target
distribution against the training one.

LADER on a batch of N samples, for every class c (absent ones included):
  T1_c = (Σ_{i: y_i = c} z_ic) / (N_c + 1e-8), the mean own logit of the class's samples;
  T2_c = log (1/N) Σ_i exp(z_ic − log π_c + log(1/C)), a log-mean-exp over the whole batch;
  L_LADER = −Σ_c π_c (T1_c − T2_c − λ T2_c²)
with π the training prior and λ the ReMINE weight. Defaults: α = 0.1 and λ = 0.1, the official
config's (its README's CIFAR-100 command uses λ = 0.01). Predictions use the raw logits, as the
official code does for a balanced test set.
"""

from __future__ import annotations

import math

import torch

import lt_bench
from lt_bench.errors import LtBenchError


def lader(logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor,
          remine_lambda: float) -> torch.Tensor:
    n, c = logits.shape
    onehot = torch.nn.functional.one_hot(targets, c).to(logits.dtype)
    own_mean = (onehot * logits).sum(dim=0) / (onehot.sum(dim=0) + 1e-8)
    shifted = logits - log_prior + math.log(1.0 / c)
    log_mean_exp = torch.logsumexp(shifted, dim=0) - math.log(n)
    estimate = own_mean - log_mean_exp - remine_lambda * log_mean_exp ** 2
    return -(log_prior.exp() * estimate).sum()


class Lade(lt_bench.Method):
    """LADE (Hong et al. 2021): prior-adjusted cross-entropy plus alpha times the LADER
    regulariser"""

    default_loss = "balanced_softmax"

    def __init__(self, class_counts, *, alpha: float = 0.1, remine_lambda: float = 0.1,
                 **options):
        if not (math.isfinite(alpha) and alpha >= 0 and math.isfinite(remine_lambda)
                and remine_lambda >= 0):
            raise LtBenchError(f"lade: alpha and remine_lambda must be finite and >= 0, got "
                               f"{alpha}, {remine_lambda}")
        self.alpha, self.remine_lambda = float(alpha), float(remine_lambda)
        super().__init__(class_counts, **options)
        prior = self.class_counts / self.class_counts.sum()
        self.register_buffer("log_prior", prior.log().float(), persistent=False)

    def loss(self, logits, targets, features=None, sample_weights=None):
        base = super().loss(logits, targets, features, sample_weights)
        return base + self.alpha * lader(logits.float(), targets, self.log_prior,
                                         self.remine_lambda)


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("lade", Lade)
