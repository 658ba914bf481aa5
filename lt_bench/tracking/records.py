"""Finished seed runs as a tracker's read side returns them, the shape ``lt_bench.leaderboard``
consumes::

    {"run_id": str, "end_time": int (ms), "experiment_id": str,
     "tags": {"lt.method": "dv", "lt.seed": "0", "lt.imbalance": "100", ...},
     "metrics": {"final/acc": 0.61, "best/acc_few": 0.3, ...}}

Tags and metrics are those the MLflow tracker logs (``TAG_KEYS``, ``METRIC_KEYS``), so a run read
from MLflow and the same run read from its folder's ``results.json`` (the "local" tracker, and any
``Tracker`` subclass without a read side of its own) give the same record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from lt_bench.provenance import DATA_KEYS, tags_of
from lt_bench.results import RunResult, finished_or_skip
from lt_bench.tracking.store import TAG, imbalance_tag, setting_experiment

SETTING = ("dataset", "imbalance", "backbone", "protocol")
SUMMARY_KEYS = ("acc", "acc_many", "acc_medium", "acc_few")
# the data fingerprint and its parts: the leaderboard never pools runs on different data
TAG_KEYS = tuple(f"{TAG}{k}" for k in (*SETTING, "method", "cfg_hash", "seed", "role",
                                       *DATA_KEYS))
METRIC_KEYS = tuple(f"{w}/{k}" for w in ("final", "best") for k in SUMMARY_KEYS)
RESULTS = "results.json"


def number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool, not None), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sample_std(values: list[float]) -> float | None:
    """The sample standard deviation (ddof=1); None under two values."""
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summary_metrics(result: RunResult) -> dict[str, float]:
    """``final/acc``, ``best/acc_few``, ``final/epoch``, … and ``wall_time_s`` of a run record;
    groups without a class (None) are left out."""
    out: dict[str, float] = {}
    for which in ("final", "best"):
        score = result.score(which)
        for key in (*SUMMARY_KEYS, "epoch"):
            value = number(getattr(score, key, None))
            if value is not None:
                out[f"{which}/{key}"] = value
    wall = number(result.wall_time_s)
    if wall is not None:
        out["wall_time_s"] = wall
    return out


def run_key(record: dict) -> tuple[str, str, int] | None:
    """(method, cfg_hash, seed) of a record; None when its seed tag is not an integer."""
    tags = record["tags"]
    try:
        seed = int(tags.get(f"{TAG}seed", ""))
    except ValueError:
        return None
    return tags.get(f"{TAG}method", ""), tags.get(f"{TAG}cfg_hash", ""), seed


def finished_keys(records: Iterable[dict]) -> set[tuple[str, str, int]]:
    return {key for key in map(run_key, records) if key is not None}


def from_results(result: RunResult, folder: Path) -> dict:
    """The record of a finished run from its folder's ``results.json``."""
    tags = {f"{TAG}{k}": str(getattr(result, k)) for k in ("method", "dataset", "backbone",
                                                          "protocol", "cfg_hash", "seed")}
    tags[f"{TAG}imbalance"] = imbalance_tag(result.imbalance)
    tags[f"{TAG}role"] = "seed"
    tags.update({k: v for k, v in tags_of(result.provenance).items() if k in TAG_KEYS})
    metrics = {k: v for k, v in summary_metrics(result).items() if k in METRIC_KEYS}
    return {"run_id": folder.name, "end_time": int((folder / RESULTS).stat().st_mtime * 1000),
            "experiment_id": folder_experiment(folder, result), "tags": tags,
            "metrics": metrics}


def folder_experiment(folder: Path, result: RunResult) -> str:
    """The experiment the MLflow tracker would have put the run in: its ``tracking.experiment``
    (from the folder's config.yaml), else its setting's (``cifar10_lt-IF100-resnet32``)."""
    try:
        saved = yaml.load((folder / "config.yaml").read_text(), Loader=_LOADER)
    except (OSError, yaml.YAMLError):
        saved = None
    tracking = saved.get("tracking") if isinstance(saved, dict) else None
    return setting_experiment({"dataset": result.dataset, "imbalance": result.imbalance,
                               "backbone": {"name": result.backbone},
                               "tracking": tracking if isinstance(tracking, dict) else {}})


# thousands of run folders are read per leaderboard: the C loader when PyYAML has it
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_run_folders(workspace: Path, experiment: str | None = None) -> Iterator[dict]:
    """The records of the FINISHED runs under ``<workspace>/runs``, of one experiment or all."""
    for path in sorted((Path(workspace) / "runs").glob(f"*/{RESULTS}")):
        result = finished_or_skip(path)  # None: not finished, or corrupt (said, left out)
        if result is None:
            continue
        record = from_results(result, path.parent)
        if experiment is None or record["experiment_id"] == experiment:
            yield record
