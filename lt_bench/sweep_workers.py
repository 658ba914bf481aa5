"""The worker side of a sweep: one process per run, started locally or as a Ray task.

A worker is ``python -c WORKER_BOOTSTRAP MODULE:FUNCTION [config.yaml] key=value ...``: it loads
the config and calls ``FUNCTION(cfg)`` (``lt_bench.train:train``). Local workers die with their
sweep (PDEATHSIG); a run that another live process owns is not trained twice (exit ``BUSY``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lt_bench.errors import LtBenchError
from lt_bench.ownership import owner_of
from lt_bench.results import RunResult, finished_or_skip, finished_result
from lt_bench.run_files import open_log
from lt_bench.run_folder import results_file, sweeps_folder

if TYPE_CHECKING:
    from lt_bench.sweep import Job, Sweep

#: a worker's exit code when another live process owns its run
BUSY = 3
#: how often Ray runs a task again whose worker died
RAY_RETRIES = 2


def finished_in_folder(job: Job) -> RunResult | None:
    return finished_result(results_file(job.run_dir)) if job.run_dir else None


def succeeded(job: Job) -> RunResult | bool | None:
    """A finished job's record (a trunk's: True), from its folder; None when it did not end."""
    if job.trunk_epochs:
        from lt_bench.fork import finished_trunk

        return finished_trunk(job.run_dir, job.trunk_epochs) or None
    return finished_in_folder(job)


def worker_command(sweep: Sweep, job: Job) -> list[str]:
    return [sys.executable, "-c", WORKER_BOOTSTRAP, job.train_fn or sweep.train_fn,
            json.dumps(job.kwargs), *sweep.paths, *job.overrides, "quiet=true",
            "data.progress=false"]  # a worker's log: one line an epoch, no decoding bars


#: how a worker hands its run's summary to the Ray driver, which may not see its run folder
RESULT_LINE = "LT_BENCH_RESULT "

#: ``python -m`` would put the current folder first on sys.path, so an ``omegaconf.py`` (or any
#: module's name) in the folder a sweep was started from would run in every worker. ``-c`` puts
#: '' there instead, which this drops before anything but ``sys`` and ``runpy`` is imported.
WORKER_BOOTSTRAP = ("import sys, runpy; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
                    "runpy.run_module('lt_bench.sweep_workers', run_name='__main__', alter_sys=True)")


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
    return sweeps_folder(job.cfg.workspace) / "logs" / f"{job.run_dir.name}.log"


def die_with(parent: int):
    """A worker's ``preexec_fn``: the kernel sends it SIGTERM when the sweep dies, even by
    ``kill -9``, so no orphan trains on beside a restarted sweep (Linux; elsewhere a no-op)."""
    def arm() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the sweep died before the line above
            os._exit(1)
    return arm


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def next_ready(pending: list[Job], done: dict[int, Any], report) -> Job | None:
    """The first pending job whose trunk (if any) has finished. A job whose trunk failed, or is
    being trained by another process, is reported so and dropped."""
    for job in list(pending):
        state = done.get(id(job.after)) if job.after is not None else True
        if state is True:
            return job
        if state in (False, BUSY):
            pending.remove(job)
            done[id(job)] = state
            report(job, None, 0.0, f"its trunk ({job.after.label}) "
                   + ("is being trained by another process" if state == BUSY else "failed"),
                   busy=state == BUSY)
    return None


def run_local(sweep: Sweep, todo: list[Job], report, display=None) -> None:
    """``jobs`` worker processes at a time; ``report(job, result|None, seconds, note, busy)``.
    A run that another live process owns (another sweep started on the same workspace) is not
    started, and said to be busy."""
    pending = list(todo)
    done: dict[int, Any] = {}  # id(job) -> True (succeeded), False (failed) or BUSY
    running: list[tuple[subprocess.Popen, Job, float, Any]] = []
    # trunks another live process trains (another sweep of the same group): their branches
    # wait for them, then start from them, instead of being dropped as busy
    waiting: list[Job] = []
    from lt_bench.device_defaults import cuda_devices, least_busy_gpu

    env = worker_env(sweep)
    # several GPUs and no CUDA_VISIBLE_DEVICES of the user's: spread the workers over them
    gpus = cuda_devices() if "CUDA_VISIBLE_DEVICES" not in env else 0
    try:
        while pending or running or waiting:
            for job in [j for j in waiting if not owner_of(j.run_dir)]:
                waiting.remove(job)  # its owner is gone: finished (the worker sees it), or
                pending.insert(0, job)  # died (the worker resumes it)
            while (job := next_ready(pending, done, report)) and \
                    len(running) < sweep.options["jobs"]:
                pending.remove(job)
                if owner := owner_of(job.run_dir):
                    if job.trunk_epochs:
                        waiting.append(job)
                        report.waiting(job, owner)
                        continue
                    done[id(job)] = BUSY
                    report(job, None, 0.0, f"being trained by {owner}", busy=True)
                    continue
                log = open_log(_log_path(job), root=Path(job.cfg.workspace).expanduser())
                gpu = least_busy_gpu([r[4] for r in running], gpus)
                proc = subprocess.Popen(
                    worker_command(sweep, job), stdout=log, stderr=subprocess.STDOUT,
                    env=env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": str(gpu)},
                    preexec_fn=die_with(os.getpid()))
                running.append((proc, job, time.perf_counter(), log, gpu))
            time.sleep(0.2)
            if display:
                display.update([(j.label, j.run_dir, j.first_epoch, j.epochs_to_train)
                                for _, j, *_ in running])
            for entry in list(running):
                proc, job, started, log, _gpu = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                log.close()
                if proc.returncode == BUSY and job.trunk_epochs:  # claimed by another first
                    waiting.append(job)
                    continue
                results = succeeded(job) if proc.returncode == 0 else None
                done[id(job)] = BUSY if proc.returncode == BUSY else results is not None
                note = "" if results else f"exit code {proc.returncode}, log {log.name}"
                report(job, results, time.perf_counter() - started, note,
                       busy=proc.returncode == BUSY)
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

    # max_retries: a task whose Ray worker dies (a node lost, a killed process) runs again, and
    # its run resumes from the checkpoint; the training process dies with the worker
    # (die_with), so the retry never trains beside an orphan of the first attempt.
    @ray.remote(num_gpus=float(sweep.options["gpus_per_run"]),
                num_cpus=float(sweep.options["cpus_per_run"]), max_calls=1,
                max_retries=RAY_RETRIES)
    def run_one(command: list[str]) -> tuple[int, str]:
        from lt_bench.sweep_workers import die_with

        command = [sys.executable, *command[1:]]  # the worker node's Python
        done = subprocess.run(command, capture_output=True, text=True,
                              preexec_fn=die_with(os.getpid()))
        return done.returncode, (done.stdout + done.stderr)[-4000:]

    started = time.perf_counter()
    futures = {run_one.remote(worker_command(sweep, job)): job for job in todo}
    while futures:
        ready, _ = ray.wait(list(futures), num_returns=1)
        job = futures.pop(ready[0])
        code, tail = ray.get(ready[0])
        results = finished_or_skip(results_file(job.run_dir)) \
            if code == 0 and job.run_dir else None
        if code == 0 and results is None:  # the run folder is on the worker node
            results = _results_from_output(tail)
        note = "" if results else f"exit code {code}: {tail.strip().splitlines()[-1:]}"
        report(job, results, time.perf_counter() - started, note, busy=code == BUSY)


def _results_from_output(text: str) -> RunResult | None:
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_LINE):
            return RunResult.from_dict(json.loads(line[len(RESULT_LINE):]))
    return None


def _worker(argv: list[str]) -> int:
    """``MODULE:FUNCTION [config.yaml] key=value ...``: load the config and call
    ``FUNCTION(cfg)`` (``lt_bench.train:train`` by default) in this process."""
    import importlib

    from lt_bench.config import load_config, split_args

    target, kwargs, *args = argv
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    paths, overrides = split_args(args)
    from lt_bench.ownership import RunOwned

    try:
        result = fn(load_config(paths, overrides), **json.loads(kwargs))
    except RunOwned as exc:  # another sweep trains this run: not a failure of this one
        print(f"lt-bench: {exc}", flush=True)
        return BUSY
    if result is not None:  # a trunk has no record of its own
        print(RESULT_LINE + json.dumps(result.summary(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    from lt_bench.cli import LtBenchError as _Err

    try:
        raise SystemExit(_worker(sys.argv[1:]))
    except _Err as exc:
        print(f"lt-bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from a dying sweep: the run is recorded KILLED
        print("lt-bench: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
