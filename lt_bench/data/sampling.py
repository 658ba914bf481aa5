"""Epoch orders: seeded shuffles, class-aware sampling, and sharding across ranks."""

from __future__ import annotations

import torch
from torch import Tensor

from lt_bench.errors import LtBenchError


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a few integers (e.g. seed, epoch, rank), no collisions."""
    value = 0
    for k in keys:
        value = (value * 1_000_003 + (int(k) & 0xFFFFFFFF)) % (2**63)
    return torch.Generator().manual_seed(value)


def class_weights(counts: Tensor, sampler: str) -> Tensor:
    """Probability of drawing each class: ∝ n (none), ∝ √n (sqrt), uniform (balanced)."""
    counts = counts.double()
    if sampler == "none":
        w = counts
    elif sampler == "sqrt":
        w = counts.sqrt()
    elif sampler == "balanced":
        w = (counts > 0).double()
    else:
        raise LtBenchError(f"data.sampler={sampler!r} is not valid; choose none, sqrt or balanced")
    return w / w.sum()


def epoch_order(labels: Tensor, num_classes: int, sampler: str, seed: int, epoch: int) -> Tensor:
    """The epoch's sample order, the same on every rank for the same (seed, epoch).

    ``none``: a permutation of all samples. ``sqrt`` / ``balanced``: as many draws, with
    replacement, each picking a class with probability ∝ √n / uniform, then a sample of it.
    """
    g = generator(seed, epoch)
    n = len(labels)
    if sampler == "none":
        return torch.randperm(n, generator=g)
    counts = torch.bincount(labels, minlength=num_classes)
    per_sample = (class_weights(counts, sampler) / counts.clamp(min=1).double())[labels]
    return torch.multinomial(per_sample, n, replacement=True, generator=g)


def shard_train(order: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s strided shard; the tail is cut to a multiple of ``world_size``.

    Shards are disjoint positions of the epoch order and all the same length (as
    DistributedSampler(drop_last=True) with set_epoch); at most world_size−1 samples are left
    out per epoch, different ones each epoch.
    """
    if not 0 <= rank < world_size:
        raise LtBenchError(f"rank {rank} is outside 0…{world_size - 1}")
    usable = len(order) // world_size * world_size
    return order[rank:usable:world_size]
