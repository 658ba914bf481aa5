"""Sweeps: a grid of training runs, run by local worker processes or as Ray tasks.

``expand`` turns the sweep's arguments into one list of ``key=value`` overrides per run:

* ``methods=[ce,dv]`` (sweep-only) → ``method=ce``, ``method=dv``; ``method=[ce,dv]`` too;
* ``seeds=3`` (sweep-only) → seeds 0, 1, 2; ``seeds=[0,5]`` → those seeds; ``seed=[0,5]`` too;
* any config key given a list (``imbalance=[100,200]``) is an axis of the grid; a key whose value
  is itself a list (``protocol.milestones``) is an axis only when given a list of lists.

Sweep-only options: ``jobs=N`` parallel local workers (processes, never threads; by default one
on a CPU and, on GPUs, four per GPU for ResNet-32, one per GPU otherwise), ``engine=local|
ray``, ``gpus_per_run=0.25`` and ``cpus_per_run=1`` (Ray resources), ``ray.address=auto|HOST:PORT``,
``baseline=ce`` and ``metric=final|best`` for the closing leaderboard.

A run whose (method, config hash, seed) is already FINISHED in the tracking store, or whose run
folder holds a finished ``results.json``, is skipped: an interrupted sweep resumes; the harness's
own checkpoint resumes the run that was half done.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lt_bench.errors import LtBenchError
from lt_bench.progress import SweepDisplay

SWEEP_ONLY = ("methods", "seeds", "jobs", "engine", "gpus_per_run", "cpus_per_run",
              "ray.address", "baseline", "metric", "train_fn")
DEFAULT_TRAIN_FN = "lt_bench.train:train"


@dataclass
class Job:
    overrides: list[str]
    cfg: Any = None  # the resolved DictConfig
    method: str = ""
    seed: int = 0
    cfg_hash: str = ""
    label: str = ""
    run_dir: Path | None = None


@dataclass
class Sweep:
    paths: list[str]
    jobs: list[Job]
    options: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)


def _format(value: Any) -> str:
    """A value back as an override's right-hand side (YAML flow style)."""
    return value if isinstance(value, str) else json.dumps(value)


def _is_list_key(default_cfg, key: str) -> bool:
    from omegaconf import ListConfig, OmegaConf

    try:
        return isinstance(OmegaConf.select(default_cfg, key), ListConfig)
    except Exception:
        return False


def expand(args: list[str]) -> Sweep:
    """The grid of runs described by the sweep's arguments (configs resolved, hashes computed)."""
    from lt_bench.config import config_hash, load_config, parse_override, split_args

    paths, pairs = split_args(args)
    options: dict[str, Any] = {"jobs": None, "engine": "local", "gpus_per_run": 0.0,
                               "cpus_per_run": 1.0, "ray.address": None, "baseline": "ce",
                               "metric": "final", "train_fn": DEFAULT_TRAIN_FN}
    base = load_config(paths, [])
    axes: list[tuple[str, list[Any]]] = []
    fixed: list[str] = []
    seeds: list[int] = [0]
    for item in pairs:
        key, value = parse_override(item)
        if key in ("seeds", "seed"):
            if isinstance(value, int) and not isinstance(value, bool) and key == "seeds":
                if value < 1:
                    raise LtBenchError(f"sweep: seeds={value}: give a count >= 1 or a list")
                seeds = list(range(value))
            elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
                seeds = list(value)
            elif key == "seed" and isinstance(value, int):
                seeds = [value]
            else:
                raise LtBenchError(f"sweep: {item!r}: seeds takes a count (seeds=3 → 0,1,2) "
                                   "or a list of integers (seeds=[0,1,2])")
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
    if options["jobs"] is not None and (not isinstance(options["jobs"], int)
                                        or options["jobs"] < 1):
        raise LtBenchError(f"sweep: jobs={options['jobs']!r}: give a number of workers >= 1")
    if options["engine"] not in ("local", "ray"):
        raise LtBenchError(f"sweep: engine={options['engine']!r}: choose local or ray")
    if options["metric"] not in ("final", "best"):
        raise LtBenchError(f"sweep: metric={options['metric']!r}: choose final or best")

    jobs = []
    names = [k for k, _ in axes]
    for combo in itertools.product(*(values for _, values in axes)):
        point = [f"{k}={_format(v)}" for k, v in zip(names, combo)]
        for seed in seeds:
            overrides = [*fixed, *point, f"seed={seed}"]
            cfg = load_config(paths, overrides)
            label = " ".join([f"{cfg.method.name}", *[p for p in point
                                                        if not p.startswith("method=")],
                              f"seed={seed}"])
            jobs.append(Job(overrides, cfg, str(cfg.method.name), int(seed), config_hash(cfg),
                            label, run_folder(cfg)))
    if options["jobs"] is None:
        from lt_bench.device_defaults import cuda_devices, default_jobs

        options["jobs"] = default_jobs(jobs, cuda_devices() if options["engine"] == "local"
                                       else 0)
    return Sweep(paths, jobs, options)


def run_folder(cfg) -> Path:
    """The harness's run folder (as ``lt_bench.train.run_folder``, without importing torch)."""
    from lt_bench.config import config_hash

    name = f"{cfg.dataset}-{cfg.method.name}-{config_hash(cfg)}-seed{cfg.seed}"
    return Path(cfg.workspace).expanduser() / "runs" / name


# -- what is done already ---------------------------------------------------------------------
def finished_in_store(jobs: list[Job]) -> set[tuple[str, str, int]]:
    """(method, cfg_hash, seed) of the jobs' FINISHED seed runs, read back through their
    trackers. A tracker that cannot be read back adds nothing (said once): its jobs are skipped
    by run folder only."""
    import logging

    from lt_bench.tracking import cannot_read_back, read_back, tracker_for

    done: set[tuple[str, str, int]] = set()
    seen: set[tuple[Any, ...]] = set()
    told: set[str] = set()
    for job in jobs:
        t = job.cfg.tracking
        key = (str(job.cfg.workspace), t.tracker, t.uri, t.experiment)
        if key in seen:
            continue
        seen.add(key)
        found = read_back(tracker_for(job.cfg), "finished_runs")
        if found is None and t.tracker not in told:
            told.add(t.tracker)
            logging.getLogger(__name__).warning("%s", cannot_read_back(t.tracker))
        done |= found or set()
    return done


def finished_in_folder(job: Job) -> dict | None:
    path = job.run_dir / "results.json" if job.run_dir else None
    if path is None or not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if results.get("status") == "FINISHED" else None


# -- running ------------------------------------------------------------------------------------
def worker_command(sweep: Sweep, job: Job) -> list[str]:
    return [sys.executable, "-c", WORKER_BOOTSTRAP, str(sweep.options["train_fn"]),
            *sweep.paths, *job.overrides, "quiet=true",
            "data.progress=false"]  # a worker's log: one line an epoch, no decoding bars


#: ``python -m`` would put the current folder first on sys.path, so an ``omegaconf.py`` (or any
#: module's name) in the folder a sweep was started from would run in every worker. ``-c`` puts
#: '' there instead, which this drops before anything but ``sys`` and ``runpy`` is imported.
WORKER_BOOTSTRAP = ("import sys, runpy; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
                    "runpy.run_module('lt_bench.sweep', run_name='__main__', alter_sys=True)")


def worker_env(sweep: Sweep) -> dict[str, str]:
    env = dict(os.environ)
    jobs = sweep.options["jobs"]
    if sweep.options["engine"] == "local" and jobs > 1 and "OMP_NUM_THREADS" not in env:
        # each worker would otherwise start one thread per core: N workers on N cores run
        # slower together than one at a time (measured: 2 one-thread workers beat one
        # two-thread run by 16 % on 2 cores, docs/BENCHMARKS.md)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    if sweep.plugins:  # plugins given with --plugin reach the workers
        from lt_bench.registry import ENV_VAR

        env[ENV_VAR] = ",".join([*filter(None, [env.get(ENV_VAR)]), *sweep.plugins])
    return env


def _log_path(job: Job) -> Path:
    folder = Path(job.cfg.workspace).expanduser() / "sweeps" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{job.run_dir.name}.log"


def run_local(sweep: Sweep, todo: list[Job], report, display=None) -> None:
    """``jobs`` worker processes at a time; ``report(job, results|None, seconds, note)``."""
    pending = list(todo)
    running: list[tuple[subprocess.Popen, Job, float, Any]] = []
    from lt_bench.device_defaults import cuda_devices, least_busy_gpu

    env = worker_env(sweep)
    # several GPUs and no CUDA_VISIBLE_DEVICES of the user's: spread the workers over them
    gpus = cuda_devices() if "CUDA_VISIBLE_DEVICES" not in env else 0
    try:
        while pending or running:
            while pending and len(running) < sweep.options["jobs"]:
                job = pending.pop(0)
                log = open(_log_path(job), "w")
                gpu = least_busy_gpu([r[4] for r in running], gpus)
                proc = subprocess.Popen(
                    worker_command(sweep, job), stdout=log, stderr=subprocess.STDOUT,
                    env=env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": str(gpu)})
                running.append((proc, job, time.perf_counter(), log, gpu))
            time.sleep(0.2)
            if display:
                display.update([(j.label, j.run_dir) for _, j, *_ in running])
            for entry in list(running):
                proc, job, started, log, _gpu = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                log.close()
                results = finished_in_folder(job) if proc.returncode == 0 else None
                note = "" if results else f"exit code {proc.returncode}, log {log.name}"
                report(job, results, time.perf_counter() - started, note)
    finally:
        if display:
            display.close()
        for proc, *_ in running:  # interrupted: stop our workers (they can resume)
            proc.terminate()
        for proc, *_ in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def run_ray(sweep: Sweep, todo: list[Job], report) -> None:
    """Each run as a Ray task (fractional GPUs), logging to the shared tracking store."""
    try:
        import ray
    except ImportError:
        raise LtBenchError("engine=ray needs Ray: pip install 'lt-bench[ray]' "
                           "(or pip install 'ray[default]')") from None
    address = sweep.options.get("ray.address")
    if not ray.is_initialized():
        ray.init(address=None if address in (None, "", "local") else str(address),
                 runtime_env={"env_vars": {k: v for k, v in worker_env(sweep).items()
                                           if k.startswith(("LT_BENCH", "MLFLOW"))}},
                 log_to_driver=False)

    @ray.remote(num_gpus=float(sweep.options["gpus_per_run"]),
                num_cpus=float(sweep.options["cpus_per_run"]), max_calls=1)
    def run_one(command: list[str]) -> tuple[int, str]:
        command = [sys.executable, *command[1:]]  # the worker node's Python
        done = subprocess.run(command, capture_output=True, text=True)
        return done.returncode, (done.stdout + done.stderr)[-4000:]

    started = time.perf_counter()
    futures = {run_one.remote(worker_command(sweep, job)): job for job in todo}
    while futures:
        ready, _ = ray.wait(list(futures), num_returns=1)
        job = futures.pop(ready[0])
        code, tail = ray.get(ready[0])
        results = finished_in_folder(job) if code == 0 else None
        if code == 0 and results is None:  # the run folder is on the worker node
            results = _results_from_output(tail)
        note = "" if results else f"exit code {code}: {tail.strip().splitlines()[-1:]}"
        report(job, results, time.perf_counter() - started, note)


def _results_from_output(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("LT_BENCH_RESULT "):
            return json.loads(line[len("LT_BENCH_RESULT "):])
    return None


def run_sweep(args: list[str], plugins: list[str] = (), out=print) -> dict:
    """Run the grid; print one line per finished run and the leaderboard; return a summary."""
    sweep = expand(args)
    sweep.plugins = list(plugins)
    from lt_bench.tracking import prepare_stores

    prepare_stores([j.cfg for j in sweep.jobs])  # the stores and experiments before any worker
    done = finished_in_store(sweep.jobs)
    todo, skipped = [], []
    for job in sweep.jobs:
        if (job.method, job.cfg_hash, job.seed) in done or finished_in_folder(job):
            skipped.append(job)
        else:
            todo.append(job)
    out(f"sweep: {len(sweep.jobs)} runs ({len(skipped)} already finished, {len(todo)} to run) "
        f"on {sweep.options['engine']}"
        + (f" with {sweep.options['jobs']} workers" if sweep.options["engine"] == "local" else ""))
    summary = {"total": len(sweep.jobs), "skipped": [j.label for j in skipped],
               "finished": [], "failed": []}
    count = [0]
    display = (SweepDisplay(len(todo)) if out is print and sweep.options["engine"] == "local"
               else None)
    out = display.message if display else out  # finished runs print above the live lines

    def report(job: Job, results: dict | None, seconds: float, note: str) -> None:
        count[0] += 1
        if display:
            display.finished()
        prefix = f"[{count[0]}/{len(todo)}] {job.label}"
        if results:
            acc = results.get(sweep.options["metric"], {}).get("acc")
            acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
            out(f"{prefix}: {sweep.options['metric']} acc {acc_text} ({seconds:.0f} s)")
            summary["finished"].append(job.label)
        else:
            out(f"{prefix}: FAILED ({note})")
            summary["failed"].append(job.label)

    if todo and sweep.options["engine"] == "ray":
        run_ray(sweep, todo, report)
    elif todo:
        run_local(sweep, todo, report, display)
    from lt_bench import leaderboard as lb

    rows = lb.sweep_rows([j.cfg for j in sweep.jobs], sweep.options["metric"],
                         str(sweep.options["baseline"]))
    if rows is not None:  # None: a tracker that cannot be read back, said by finished_in_store
        out("")
        out(lb.format_text(rows))
        summary["leaderboard"] = lb.as_dicts(rows)
    if summary["failed"]:
        out(f"sweep: {len(summary['failed'])} run(s) failed; run the same sweep again to retry "
            "them (finished runs are skipped)")
    return summary


def _worker(argv: list[str]) -> int:
    """``python -m lt_bench.sweep MODULE:FUNCTION [config.yaml] key=value ...``: load the config
    and call ``FUNCTION(cfg)`` (``lt_bench.train:train`` by default) in this process."""
    import importlib

    from lt_bench.config import load_config, split_args

    target, *args = argv
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    paths, overrides = split_args(args)
    results = fn(load_config(paths, overrides))
    slim = {k: results.get(k) for k in ("status", "method", "seed", "cfg_hash", "run_dir")}
    slim.update({w: {k: v for k, v in (results.get(w) or {}).items() if k != "per_class"}
                 for w in ("final", "best")})
    print("LT_BENCH_RESULT " + json.dumps(slim, default=str), flush=True)
    return 0


if __name__ == "__main__":
    from lt_bench.cli import LtBenchError as _Err

    try:
        raise SystemExit(_worker(sys.argv[1:]))
    except _Err as exc:
        print(f"lt-bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
