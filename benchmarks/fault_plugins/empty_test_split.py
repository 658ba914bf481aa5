"""A plugin data set whose test split is empty (benchmarks/faults_round3.py): the data layer's
common checks must refuse it, as they refuse a built-in one."""

import torch

import lt_bench
from lt_bench.data import TensorData


def no_test(cfg, *, imbalance=None):
    images = torch.zeros(6, 3, 4, 4, dtype=torch.uint8)
    return TensorData("no_test", ["a", "b"], images, torch.tensor([0, 0, 0, 0, 1, 1]),
                      images[:0], torch.zeros(0, dtype=torch.long), mean=[0.5] * 3,
                      std=[0.25] * 3)


@lt_bench.hookimpl
def lt_bench_register_datasets(register):
    register("no_test", no_test)
