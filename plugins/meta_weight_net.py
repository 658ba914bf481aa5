"""Meta-Weight-Net (Shu et al., NeurIPS 2019), as its class-imbalance code
(xjtushujun/Meta-weight-net_class-imbalance) trains it.

A small MLP V (1 → 100 → 1, ReLU, sigmoid) maps a sample's loss to its weight. Each step:
1. v_i = V(ℓ_i), normalised to sum 1 over the batch (the loss is not detached, as in the code);
2. a virtual SGD step θ' = θ − η ∇θ Σ_i v_i ℓ_i at the model's current lr η, through
   ``torch.func.functional_call`` (``lt_bench.run.lookahead``);
3. the meta loss, the mean cross-entropy of a meta batch under θ', trains V (SGD lr 1e-5,
   Nesterov momentum 0.9, weight decay 5e-4);
4. the real step weighs the batch with the updated V: Σ_i w_i ℓ_i with w = V(ℓ) / Σ V(ℓ).

The meta set is 10 images per class held out of training (``data.meta_per_class``). The code
looks ahead from the first epoch; here from ``start_epoch`` like every re-weighting method
(``protocol.start_epoch=0`` gives the code's schedule).
"""

from __future__ import annotations

import torch
from torch import nn

import lt_bench
from lt_bench.errors import LtBenchError


class WeightNet(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layers(losses.float()[:, None])).squeeze(1)


def normalised(v: torch.Tensor) -> torch.Tensor:
    total = v.sum()  # no .item(): the step would wait for the device every batch
    # the code skips an all-zero batch; dividing by 1 there keeps 0/0 out of the backward pass
    return v / torch.where(total != 0, total, torch.ones_like(total))


class MetaWeightNet(lt_bench.Method):
    """Meta-Weight-Net (Shu et al. 2019): an MLP from loss to weight, trained by a one-step
    look-ahead on a balanced meta set"""

    meta_per_class = 10

    def __init__(self, class_counts, *, hidden: int = 100, meta_lr: float = 1e-5,
                 meta_momentum: float = 0.9, meta_weight_decay: float = 5e-4, **options):
        if int(hidden) != hidden or hidden < 1 or not meta_lr > 0:
            raise LtBenchError(f"meta_weight_net: hidden must be >= 1 and meta_lr > 0, got "
                               f"{hidden}, {meta_lr}")
        super().__init__(class_counts, **options)
        self.net = WeightNet(int(hidden))
        self.net_optimizer = torch.optim.SGD(self.net.parameters(), lr=meta_lr,
                                             momentum=meta_momentum, nesterov=meta_momentum > 0,
                                             weight_decay=meta_weight_decay)

    def wants_look_ahead(self) -> bool:
        return self.epoch >= self.start_epoch

    def look_ahead(self, step) -> torch.Tensor:
        losses = step.per_sample_losses()
        virtual = step.virtual_step((normalised(self.net(losses)) * losses).sum())
        self.net_optimizer.zero_grad(set_to_none=True)
        step.meta_loss(virtual).backward(inputs=list(self.net.parameters()))
        self.net_optimizer.step()
        with torch.no_grad():
            weights = normalised(self.net(losses.detach()))
        return weights * len(weights)  # the loss takes the batch mean: Σ w ℓ

    # the weight net's optimizer state is saved beside the buffers, so a resumed run is exact
    def get_extra_state(self) -> dict:
        return {**super().get_extra_state(), "net_optimizer": self.net_optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        if "net_optimizer" in state:
            self.net_optimizer.load_state_dict(state["net_optimizer"])


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("meta_weight_net", MetaWeightNet)
