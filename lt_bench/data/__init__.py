"""Long-tailed data: sources, LT subsets, and an input pipeline that keeps the device busy.

Public contract (the training harness codes against these)::

    cfg = DataConfig(root="./data")                 # the `data:` config section
    data = load_data("cifar10_lt", 100, cfg)        # a LongTailedData, via the registry
    for x, y in data.train_batches(epoch, 128, device="cuda", seed=0): ...
    for x, y in data.test_batches(512, device="cuda"): ...
    groups(data.train_counts)                       # 'many' | 'medium' | 'few' per class

Dataset factories registered through ``lt_bench_register_datasets`` have the signature
``factory(cfg: DataConfig, *, imbalance: float | None) -> LongTailedData``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lt_bench.data.config import DataConfig, as_data_config, cache_dir
from lt_bench.data.groups import group_sizes, groups
from lt_bench.errors import LtBenchError
from lt_bench.registry import get_registry

if TYPE_CHECKING:  # the lazy names below: importing them loads torch
    from lt_bench.data.base import LongTailedData

_LAZY = {"LongTailedData": "lt_bench.data.base", "lt_counts": "lt_bench.data.longtail",
         "make_long_tailed": "lt_bench.data.longtail", "select_subset": "lt_bench.data.longtail",
         "LoaderData": "lt_bench.data.pipeline", "TensorData": "lt_bench.data.pipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lt_bench.data' has no attribute {name!r}")


def load_data(name: str, imbalance: float | None, cfg=None) -> LongTailedData:
    """The registered data set ``name`` made long-tailed with factor ``imbalance``."""
    from lt_bench.data.base import LongTailedData  # here, not at the top: it imports torch

    registry = get_registry()
    data = registry.build("datasets", name, as_data_config(cfg), imbalance=imbalance)
    if not isinstance(data, LongTailedData):
        raise LtBenchError(
            f"dataset {name!r} (plugin {registry.get('datasets', name).plugin!r}) returned "
            f"{type(data).__name__}, "
            "not an lt_bench.data.LongTailedData"
        )
    from lt_bench.data.longtail import check_splits  # here, not at the top: it imports torch

    check_splits(data, name)
    return data


__all__ = ["DataConfig", "LoaderData", "LongTailedData", "TensorData", "as_data_config",
           "cache_dir", "group_sizes", "groups", "load_data", "lt_counts", "make_long_tailed",
           "select_subset"]
