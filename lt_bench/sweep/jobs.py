"""The sweep's records: one ``Job`` per run (or trunk) to train, and the ``Sweep`` holding them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lt_bench.run.train import train

#: what a worker calls with its run's config: a function, or ``module:function`` for one the
#: workers import by name (the tests' stand-ins); a Python argument, never a config key (a
#: config file must not name code to run)
TrainFn = Callable[..., Any] | str


@dataclass
class Job:
    overrides: list[str]
    cfg: Any = None  # the resolved DictConfig
    method: str = ""
    seed: int = 0
    cfg_hash: str = ""
    label: str = ""
    run_dir: Path | None = None
    train_fn: TrainFn | None = None  # None: the sweep's
    kwargs: dict = field(default_factory=dict)  # more arguments of train_fn (the fork's)
    after: Job | None = None  # a job that must finish first (a branch's trunk)
    trunk_epochs: int = 0  # > 0: this job trains a trunk of that many epochs (lt_bench.run.fork)
    first_epoch: int = 0  # where its training starts (a branch: its trunk's end; see plan_work)
    epochs_to_train: int = 0  # what this sweep trains of it (set by plan_work)


@dataclass
class Sweep:
    paths: list[str]
    jobs: list[Job]
    options: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    train_fn: TrainFn = train


def entry_point(fn: TrainFn) -> str:
    """``fn`` as the ``module:function`` a worker process imports."""
    return fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__qualname__}"
