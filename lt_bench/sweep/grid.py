"""The sweep's grid: its arguments turned into one job per run, cleaned before it runs.

``expand`` turns the arguments into one list of ``key=value`` overrides per run (see
``lt_bench.sweep``). Cleaning: a method option goes to the methods that take it, and a run that
repeats another's folder is dropped; each is said in one line.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from lt_bench.config import config_hash, load_config, parse_override, split_args
from lt_bench.config.checks import schedule_warnings
from lt_bench.config.method_args import options_taken
from lt_bench.device.defaults import cuda_devices, default_jobs
from lt_bench.errors import LtBenchError, closest
from lt_bench.sweep.jobs import Job, Sweep
from lt_bench.workspace.layout import run_folder

SWEEP_ONLY = ("methods", "seeds", "jobs", "engine", "gpus_per_run", "cpus_per_run",
              "ray.address", "baseline", "metric", "fork")
DEFAULT_OPTIONS = {"jobs": None, "engine": "local", "gpus_per_run": 0.0, "cpus_per_run": 1.0,
                   "ray.address": None, "baseline": "ce", "metric": "final", "fork": True}


def expand(args: list[str], out=None) -> Sweep:
    """The grid of runs described by the sweep's arguments (configs resolved, hashes computed).

    What the grid drops or never does (a duplicate run, a method option a method does not take,
    a milestone past the last epoch) is said once, one line each, through ``out`` (None: as
    warnings of the ``lt_bench`` logger).
    """
    paths, pairs = split_args(args)
    notes: list[str] = []
    axes, fixed, seeds, options = read_arguments(pairs, load_config(paths, [], notes))
    check_options(options)
    takers: dict = {}
    jobs = grid_jobs(paths, axes, fixed, seeds, takers, notes)
    jobs, dropped = unique(jobs)
    for line in dict.fromkeys([*takers_lines(takers), *notes, *dropped]):
        (out or logging.getLogger(__name__).warning)(f"sweep: {line}")
    if options["jobs"] is None:
        options["jobs"] = default_jobs(jobs, cuda_devices() if options["engine"] == "local"
                                       else 0)
    return Sweep(paths, jobs, options)


def read_arguments(pairs: list[str], base) -> tuple[list, list[str], list[int], dict]:
    """The grid's axes, the overrides every run shares, the seeds and the sweep-only options
    from the ``key=value`` arguments (``base``: the config without them)."""
    options: dict[str, Any] = dict(DEFAULT_OPTIONS)
    axes: list[tuple[str, list[Any]]] = []
    fixed: list[str] = []
    seeds: list[int] = [0]
    for item in pairs:
        key, value = parse_override(item)
        if key in ("seeds", "seed"):
            seeds = _seeds(key, value, item)
        elif key == "methods" or (key == "method" and isinstance(value, list)):
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) and v for v in values):
                raise LtBenchError(f"sweep: {item!r}: give method names, e.g. methods=[ce,dv]")
            axes.append(("method", values))
        elif key in SWEEP_ONLY:
            options[key] = value
        elif isinstance(value, list) and (not _is_list_key(base, key)
                                          or (value and all(isinstance(v, list) for v in value))):
            if not value:
                raise LtBenchError(f"sweep: {item!r} is an empty list: give at least one value")
            axes.append((key, value))
        else:
            fixed.append(item)
    return axes, fixed, seeds, options


def check_options(options: dict) -> None:
    if options["jobs"] is not None and (not isinstance(options["jobs"], int)
                                        or options["jobs"] < 1):
        raise LtBenchError(f"sweep: jobs={options['jobs']!r}: give a number of workers >= 1")
    if options["engine"] not in ("local", "ray"):
        raise LtBenchError(f"sweep: engine={options['engine']!r}: choose local or ray")
    if not isinstance(options["fork"], bool):
        raise LtBenchError(f"sweep: fork={options['fork']!r}: choose true or false")
    if options["metric"] not in ("final", "best"):
        raise LtBenchError(f"sweep: metric={options['metric']!r}: choose final or best")


def grid_jobs(paths: list[str], axes: list, fixed: list[str], seeds: list[int], takers: dict,
              notes: list[str]) -> list[Job]:
    """One job per point of the grid and seed, its config resolved (``notes``: what loading
    the configs said; ``takers``: see ``for_its_method``)."""
    jobs = []
    names = [k for k, _ in axes]
    for combo in itertools.product(*(values for _, values in axes)):
        point = [f"{k}={_format(v)}" for k, v in zip(names, combo)]
        kept = for_its_method(paths, [*fixed, *point], takers)
        for seed in seeds:
            overrides = [*kept, f"seed={seed}"]
            cfg = load_config(paths, overrides, notes)
            notes.extend(schedule_warnings(cfg))
            label = " ".join([f"{cfg.method.name}", *[p for p in point
                                                        if not p.startswith("method=")
                                                        and p in kept],
                              f"seed={seed}"])
            jobs.append(Job(overrides, cfg, str(cfg.method.name), int(seed), config_hash(cfg),
                            label, run_folder(cfg)))
    return jobs


def _format(value: Any) -> str:
    """A value back as an override's right-hand side (YAML flow style)."""
    return value if isinstance(value, str) else json.dumps(value)


def _is_list_key(default_cfg, key: str) -> bool:
    from omegaconf import ListConfig, OmegaConf

    try:
        return isinstance(OmegaConf.select(default_cfg, key), ListConfig)
    except Exception:
        return False


def _seeds(key: str, value: Any, item: str) -> list[int]:
    """``seeds=3`` → 0, 1, 2; ``seeds=[0,5]`` or ``seed=[0,5]`` → those; ``seed=4`` → 4."""
    if isinstance(value, int) and not isinstance(value, bool) and key == "seeds":
        if value < 1:
            raise LtBenchError(f"sweep: seeds={value}: give a count >= 1 or a list")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return list(value)
    if key == "seed" and isinstance(value, int):
        return [value]
    raise LtBenchError(f"sweep: {item!r}: seeds takes a count (seeds=3 → 0,1,2) or a list of "
                       "integers (seeds=[0,1,2])")


def _method_option(item: str) -> str | None:
    """The option a ``method.X=V`` argument sets (X); None for any other argument."""
    key = item.partition("=")[0].strip()
    if key.startswith("method.") and key != "method.name":
        return key[len("method."):].split(".")[0]
    return None


def for_its_method(paths: list[str], overrides: list[str], takers: dict) -> list[str]:
    """``overrides`` less the method options that the method they select does not take (a
    sweep's ``method.beta=0.5`` is for the methods of the grid that have a beta); ``takers``
    records, per option, its arguments, the methods that take it and those that do not."""
    if not any(_method_option(o) for o in overrides):
        return overrides
    cfg = load_config(paths, overrides, [])  # which method; what it drops is said per job
    name = str(cfg.method.name)
    taken = options_taken(name, cfg.method.get("loss"), cfg.get("plugins"))
    kept = []
    for item in overrides:
        option = _method_option(item)
        takes = option is None or taken is None or option in taken
        if option is not None:
            record = takers.setdefault(option, {"items": {}, "yes": {}, "no": {},
                                                "known": set()})
            record["items"][item] = None
            record["yes" if takes else "no"][name] = None
            record["known"] |= taken or set()
        if takes:
            kept.append(item)
    return kept


def takers_lines(takers: dict) -> list[str]:
    """A line for each method option that some methods of the grid run without; refused when
    no method of the grid takes it."""
    lines = []
    for option, record in takers.items():
        items, no = [i.partition("=") for i in record["items"]], ", ".join(record["no"])
        typed = (f"{items[0][0]}={items[0][2]}" if len(items) == 1
                 else f"{items[0][0]}=[{','.join(i[2] for i in items)}]")
        if not record["no"]:
            continue
        if not record["yes"]:
            raise LtBenchError(f"sweep: {typed}: no method of the sweep ({no}) has option "
                               f"{option!r}{closest(option, record['known'])}")
        lines.append(f"{typed} applies to {', '.join(record['yes'])}; {no} "
                     f"{'has' if len(record['no']) == 1 else 'have'} no option {option!r}")
    return lines


def unique(jobs: list[Job]) -> tuple[list[Job], list[str]]:
    """The jobs less those that repeat an earlier one's run folder (same method, config hash and
    seed: ``seeds=[0,0]``, ``methods=[ce,ce]``), which would wait on each other; a line on them."""
    seen: set[Path] = set()
    kept, dropped = [], []
    for job in jobs:
        (dropped if job.run_dir in seen else kept).append(job)
        seen.add(job.run_dir)
    if not dropped:
        return kept, []
    times = Counter(j.label for j in dropped)  # in order of first appearance
    shown = ", ".join(label + (f" (x{n})" if n > 1 else "") for label, n in list(times.items())[:5])
    shown += ", …" if len(times) > 5 else ""
    return kept, [f"dropped {len(dropped)} duplicate run(s): {shown} (the same method, config "
                  "and seed as a run before)"]
