"""A classifier layer that stays in fp32 under bf16 autocast.

bf16 keeps 8 bits of mantissa, so nearby logits round to the same value; ``argmax`` then breaks
the tie toward the lowest class index, which in CIFAR-LT is the head class. Simulated, about 0.2 %
of test predictions flipped, all toward head classes: a bias against exactly the classes a
long-tailed benchmark measures. The classifier is a tiny share of the compute, so it runs in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Fp32Linear(nn.Linear):
    """``nn.Linear`` computed in fp32 whatever autocast says (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias)


def fp32_classifier(linear: nn.Linear) -> nn.Linear:
    """Make an existing ``nn.Linear`` (a torchvision model's head) compute in fp32, in place."""
    linear.__class__ = Fp32Linear
    return linear
