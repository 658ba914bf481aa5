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

from lt_bench.errors import LtBenchError


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


class CosineLinear(nn.Module):
    """A normalised linear classifier: logit j is the cosine between the features and class j's
    weight vector, in [-1, 1], no bias (LDAM-DRW's ``NormedLinear``); a loss scales it (s = 30).
    Computed in fp32 for the reason above."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        weight = torch.empty(out_features, in_features).uniform_(-1.0, 1.0)
        self.weight = nn.Parameter(F.normalize(weight, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


HEADS = {"cosine": CosineLinear}


def swap_head(model: nn.Module, kind: str, backbone: str) -> nn.Module:
    """Replace ``model.fc`` (a linear classifier) by a head of ``kind``, in place."""
    if kind not in HEADS:
        raise LtBenchError(f"head {kind!r} is not one of {', '.join(HEADS)}")
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise LtBenchError(f"this method needs a {kind} classifier, but backbone {backbone!r} "
                           "has no linear classifier 'fc' to swap; use backbone=resnet32 or "
                           "resnet50")
    model.fc = HEADS[kind](fc.in_features, fc.out_features).to(fc.weight.device)
    return model
