"""Finished seed runs as a tracker's read side returns them, the shape ``lt_bench.compare.leaderboard``
consumes::

    {"run_id": str, "end_time": int (ms), "experiment_id": str,
     "tags": {"lt.method": "dv", "lt.seed": "0", "lt.imbalance": "100", ...},
     "metrics": {"final/acc": 0.61, "best/acc_few": 0.3, "final/ece": 0.04, ...},
     "params": {"method.convention": "authors", "protocol.lr": "0.1", ...}}

Tags and metrics are those the MLflow tracker logs (``TAG_KEYS``, ``METRIC_KEYS``), so a run read
from MLflow and the same run read from its folder's ``results.json`` (the "local" tracker, and any
``Tracker`` subclass without a read side of its own) give the same record. ``params`` is the
run's flattened config as MLflow stores params (strings; from the folder's ``config.yaml`` for
the local tracker; empty when neither is there): it names a row (``labels``).
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lt_bench.config import config_hash
from lt_bench.config.identity import HASHED_WHEN_SET, NOT_HASHED
from lt_bench.tracking.store import TAG, get, imbalance_tag, setting_experiment
from lt_bench.workspace.layout import RESULTS, config_file, results_file, runs_folder
from lt_bench.workspace.provenance import DATA_KEYS, SCALAR_KEYS
from lt_bench.workspace.record import SHIFTED, RunResult, finished_or_skip

SETTING = ("dataset", "imbalance", "backbone", "protocol")
SUMMARY_KEYS = ("acc", "acc_many", "acc_medium", "acc_few", "ece", "ece_many", "ece_medium",
                "ece_few")
SHIFTED_KEYS = tuple(f"shifted_{name}" for name in SHIFTED)
# the data fingerprint and its parts: the leaderboard never pools runs on different data
TAG_KEYS = tuple(f"{TAG}{k}" for k in (*SETTING, "method", "cfg_hash", "seed", "role",
                                       *DATA_KEYS))
METRIC_KEYS = tuple(f"{w}/{k}" for w in ("final", "best") for k in (*SUMMARY_KEYS, *SHIFTED_KEYS))


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
        shifted = getattr(score, "shifted", None) or {}
        for key in (*SUMMARY_KEYS, *SHIFTED_KEYS, "epoch"):
            value = number(shifted.get(key.removeprefix("shifted_"))
                           if key.startswith("shifted_") else getattr(score, key, None))
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
    saved = saved_config(folder)
    return {"run_id": folder.name, "end_time": int(results_file(folder).stat().st_mtime * 1000),
            "experiment_id": folder_experiment(folder, result, saved), "tags": tags,
            "metrics": metrics, "params": {k: param_text(v) for k, v in _flat(saved).items()}}


def saved_config(folder: Path) -> dict:
    """The folder's config.yaml as a mapping; empty when missing or unreadable."""
    try:
        saved = yaml.load(config_file(folder).read_text(), Loader=_LOADER)
    except (OSError, yaml.YAMLError):
        return {}
    return saved if isinstance(saved, dict) else {}


def param_text(value: Any) -> str:
    """A config value as MLflow keeps it as a param (``lt_bench.tracking.mlflow_tracker``); a
    default that is no JSON value (a method's "the convention's own") as it prints."""
    if isinstance(value, str) or not isinstance(value, (int, float, list, dict, type(None))):
        return str(value)
    return json.dumps(value, default=str)


def _flat(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def folder_experiment(folder: Path, result: RunResult, saved: dict | None = None) -> str:
    """The experiment the MLflow tracker would have put the run in: its ``tracking.experiment``
    (from the folder's config.yaml), else its setting's (``cifar10_lt-IF100-resnet32``)."""
    saved = saved_config(folder) if saved is None else saved
    tracking = saved.get("tracking")
    return setting_experiment({"dataset": result.dataset, "imbalance": result.imbalance,
                               "backbone": {"name": result.backbone},
                               "tracking": tracking if isinstance(tracking, dict) else {}})


# thousands of run folders are read per leaderboard: the C loader when PyYAML has it
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_run_folders(workspace: Path, experiment: str | None = None) -> Iterator[dict]:
    """The records of the FINISHED runs under ``<workspace>/runs``, of one experiment or all."""
    for path in sorted(runs_folder(workspace).glob(f"*/{RESULTS}")):
        result = finished_or_skip(path)  # None: not finished, or corrupt (said, left out)
        if result is None:
            continue
        record = from_results(result, path.parent)
        if experiment is None or record["experiment_id"] == experiment:
            yield record


# -- tags: how the trackers carry it ----------------------------------------------------------
def tags_of(provenance: Mapping[str, Any]) -> dict[str, str]:
    """``provenance`` as MLflow tags ``lt.<key>``; keys without a value are left out."""
    tags = {f"{TAG}{k}": str(provenance[k]) for k in SCALAR_KEYS
            if provenance.get(k) is not None}
    selection = provenance.get("selection")
    if isinstance(selection, Mapping):
        tags.update({f"{TAG}selection.{k}": str(v) for k, v in selection.items()})
    return tags


def from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The data keys of a provenance from a run's tags (empty for a run that has none)."""
    return {k: tags[f"{TAG}{k}"] for k in DATA_KEYS if tags.get(f"{TAG}{k}")}


# -- labels: a row named by what sets it apart ---------------------------------------------------
def labels(rows: Sequence[tuple[str, str, str, Mapping[str, str]]]) -> list[str]:
    """A readable name for each (method, cfg_hash, data fingerprint, params) of one setting: the
    method alone when it has one configuration; else the method options that differ
    (``dv (convention=authors)``), then, where those do not tell the configurations apart, the
    shortest other differing ``key=value``; ``method@hash`` when the params say nothing. A
    configuration on two data sets adds the fingerprint (``dv [data 1a2b3c4d5e6f]``)."""
    by_method: dict[str, list[int]] = defaultdict(list)
    for i, (method, *_) in enumerate(rows):
        by_method[method].append(i)
    out = [""] * len(rows)
    for method, members in by_method.items():
        configs: dict[str, Mapping[str, str]] = {}
        for i in members:
            configs.setdefault(rows[i][1], rows[i][3])
        names = config_labels(method, configs)
        datasets: dict[str, set[str]] = defaultdict(set)
        for i in members:
            datasets[names[rows[i][1]]].add(rows[i][2])
        for i in members:
            name = names[rows[i][1]]
            out[i] = f"{name} [data {rows[i][2]}]" if len(datasets[name]) > 1 else name
    return out


def config_labels(method: str, configs: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """cfg_hash → label for the configurations of one method (``labels``)."""
    if len(configs) == 1:
        return {h: method for h in configs}
    if not all(configs.values()):  # a run without its config: nothing to compare
        return {h: f"{method}@{h}" for h in configs}
    values = {h: hashed_params(p) for h, p in configs.items()}
    keys = sorted({k for v in values.values() for k in v})
    for v in values.values():  # a key left out is at its default (or unknown: None)
        for k in keys:
            v.setdefault(k, default_param(method, k))
    differ = [k for k in keys if len({values[h][k] for h in values}) > 1]

    def part(h: str, k: str) -> str:
        shown = "?" if values[h][k] is None else values[h][k]
        return f"{k.removeprefix('method.') if k.startswith('method.') else k}={shown}"

    chosen = [k for k in differ if k.startswith("method.")]
    others = sorted((k for k in differ if not k.startswith("method.")),
                    key=lambda k: (any(values[h][k] is None for h in values),
                                   max(len(part(h, k)) for h in values), k))

    def named(keys_: list[str]) -> dict[str, str]:
        return {h: f"{method} ({', '.join(part(h, k) for k in keys_)})" if keys_ else method
                for h in values}

    for k in others:
        if len(set(named(chosen).values())) == len(values):
            break
        chosen.append(k)
    out = named(chosen)
    if len(set(out.values())) < len(values):  # nothing known tells them apart: the hash
        out = {h: f"{name}@{h}" for h, name in out.items()}
    return out


def hashed_params(params: Mapping[str, str]) -> dict[str, str | None]:
    """The params that make a run's config hash: bookkeeping keys (``NOT_HASHED``: seed,
    workspace, tracking, …, and how the data arrive) are left out."""
    skip, data_skip = _bookkeeping()
    return {k: v for k, v in params.items()
            if k.split(".", 1)[0] not in skip and k not in data_skip}


@functools.cache
def _bookkeeping() -> tuple[tuple[str, ...], tuple[str, ...]]:
    return NOT_HASHED, ("data.download", "data.progress", "data.cache_dir")


@functools.cache
def default_param(method: str, key: str) -> str | None:
    """The value a key left out of a config stands for, as a param: a method option's default
    (a method's config keeps only the options typed away from it), a key hashed only when set
    at its default; None when not known."""
    section, _, leaf = key.partition(".")
    if leaf in HASHED_WHEN_SET.get(section, {}):
        return param_text(HASHED_WHEN_SET[section][leaf])
    if section != "method":
        return None
    try:
        from lt_bench.api import method_options  # here, not at the top: it imports torch

        value = method_options(method).get(leaf)
    except Exception:  # a plugin's method that is not loaded here: unknown, not an error
        return None
    return None if value is None else param_text(value)


def setting_tags(cfg: dict) -> dict[str, str]:
    """The tags that place a run in its setting (and its method's configuration) in the store."""
    return {
        f"{TAG}method": str(get(cfg, "method.name", "")),
        f"{TAG}dataset": str(cfg.get("dataset", "")),
        f"{TAG}imbalance": imbalance_tag(cfg.get("imbalance")),
        f"{TAG}backbone": str(get(cfg, "backbone.name", "")),
        f"{TAG}protocol": str(get(cfg, "protocol.name", "")),
        f"{TAG}cfg_hash": config_hash(cfg),
    }
