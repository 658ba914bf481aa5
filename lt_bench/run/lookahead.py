"""The one-step look-ahead that meta-learned re-weighting needs (Meta-Weight-Net, Jamal et al.'s
DA): what would the model's parameters be after one SGD step on a weighted training batch, and
how would the balanced meta set's loss change with the weights?

The virtual step is taken on the model's own parameters through ``torch.func.functional_call``,
never on a copy of the model, so a step costs one extra forward and backward (with the graph of
the gradient kept) and one forward on a meta batch. The model's buffers are cloned for the
look-ahead's forwards: BatchNorm's running statistics stay those of the real steps alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.func import functional_call

from lt_bench.errors import LtBenchError


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class LookAhead:
    """One training batch, as a method's ``look_ahead`` sees it.

    ``per_sample_losses()`` gives the method's per-sample losses at the current parameters, with
    their graph; ``virtual_step(loss, lr)`` the parameters after one SGD step on ``loss``, as a
    differentiable function of whatever ``loss`` depends on; ``meta_loss(params)`` the mean
    cross-entropy of the next meta batch under those parameters.
    """

    def __init__(self, model, images, targets, loss_fn, meta_batches: Iterator, lr: float):
        self.module = unwrapped(model)
        self.images, self.targets, self.loss_fn, self.lr = images, targets, loss_fn, lr
        self._meta = meta_batches
        self.params = {n: p for n, p in self.module.named_parameters() if p.requires_grad}

    def logits(self, images, params=None) -> torch.Tensor:
        buffers = {n: b.clone() for n, b in self.module.named_buffers()}
        out = functional_call(self.module, {**buffers, **(params or self.params)}, (images,))
        return out[0] if isinstance(out, tuple) else out

    def per_sample_losses(self) -> torch.Tensor:
        return self.loss_fn(self.logits(self.images), self.targets)

    def virtual_step(self, loss: torch.Tensor, lr: float | None = None) -> dict:
        """θ − lr·∇θ loss for every trained parameter, keeping the graph (``create_graph``)."""
        lr = self.lr if lr is None else lr
        names = list(self.params)
        grads = torch.autograd.grad(loss, [self.params[n] for n in names], create_graph=True,
                                    allow_unused=True)
        return {n: self.params[n] if g is None else self.params[n] - lr * g
                for n, g in zip(names, grads)}

    def meta_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return next(self._meta)

    def meta_loss(self, params: dict) -> torch.Tensor:
        images, targets = self.meta_batch()
        return torch.nn.functional.cross_entropy(self.logits(images, params).float(), targets)


def meta_batches(data, batch_size: int, *, device, seed: int, epoch: int) -> Iterator:
    """Endless batches of the data's meta set (``data.meta``), reshuffled each pass, seeded by
    (seed, epoch, pass) so that a resumed epoch draws the same ones."""
    meta = getattr(data, "meta", None)
    if meta is None or meta.num_train == 0:
        raise LtBenchError("this method looks ahead on a meta set, but the data have none: set "
                           "data.meta_per_class (images per class held out of training)")
    size = min(batch_size, meta.num_train)

    def endless():
        passes = 0
        while True:
            yield from meta.train_batches(epoch * 1000 + passes, size, device=device, seed=seed)
            passes += 1
    return endless()
