"""The sweep's workers: one process per run, started locally or as a Ray task.

A worker is ``python -c WORKER_BOOTSTRAP MODULE:FUNCTION [config.yaml] key=value ...``, which runs
``lt_bench.sweep.worker``. Local workers die with their sweep (PDEATHSIG); a run that another live
process owns is not trained twice (exit ``BUSY``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lt_bench.device.defaults import cuda_devices, least_busy_gpu
from lt_bench.errors import LtBenchError
from lt_bench.registry import ENV_VAR
from lt_bench.run.fork import finished_trunk
from lt_bench.sweep import worker
from lt_bench.sweep.jobs import Job, Sweep, entry_point
from lt_bench.sweep.worker import BUSY, RESULT_LINE
from lt_bench.workspace.files import open_log
from lt_bench.workspace.layout import results_file, sweeps_folder
from lt_bench.workspace.ownership import owner_of
from lt_bench.workspace.record import RunResult, finished_or_skip, finished_result

#: how often Ray runs a task again whose worker died
RAY_RETRIES = 2


def finished_in_folder(job: Job) -> RunResult | None:
    return finished_result(results_file(job.run_dir)) if job.run_dir else None


def succeeded(job: Job) -> RunResult | bool | None:
    """A finished job's record (a trunk's: True), from its folder; None when it did not end."""
    if job.trunk_epochs:
        return finished_trunk(job.run_dir, job.trunk_epochs) or None
    return finished_in_folder(job)


def worker_command(sweep: Sweep, job: Job) -> list[str]:
    return [sys.executable, "-c", WORKER_BOOTSTRAP, entry_point(job.train_fn or sweep.train_fn),
            json.dumps(job.kwargs), *sweep.paths, *job.overrides, "quiet=true",
            "data.progress=false"]  # a worker's log: one line an epoch, no decoding bars


#: ``python -m`` would put the current folder first on sys.path, so an ``omegaconf.py`` (or any
#: module's name) in the folder a sweep was started from would run in every worker. ``-c`` puts
#: '' there instead, which this drops before anything but ``sys`` and ``runpy`` is imported.
WORKER_BOOTSTRAP = ("import sys, runpy; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
                    f"runpy.run_module({worker.__name__!r}, run_name='__main__', alter_sys=True)")


def worker_env(sweep: Sweep) -> dict[str, str]:
    env = dict(os.environ)
    jobs = sweep.options["jobs"]
    if sweep.options["engine"] == "local" and jobs > 1 and "OMP_NUM_THREADS" not in env:
        # each worker would otherwise start one thread per core: N workers on N cores run
        # slower together than one at a time (measured: 2 one-thread workers beat one
        # two-thread run by 16 % on 2 cores, docs/BENCHMARKS.md)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    if sweep.plugins:  # plugins given with --plugin reach the workers

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
    started, and said to be busy.
    """
    pool = LocalPool(sweep, report, list(todo))
    try:
        while pool.pending or pool.running or pool.waiting:
            pool.start_ready()
            time.sleep(0.2)
            if display:
                display.update([(j.label, j.run_dir, j.first_epoch, j.epochs_to_train)
                                for _, j, *_ in pool.running])
            pool.collect_ended()
    finally:
        if display:
            display.close()
        pool.stop()  # interrupted: stop our workers (they can resume)


@dataclass
class LocalPool:
    """The local workers of a sweep, and the jobs still pending or waiting."""

    sweep: Sweep
    report: Any
    pending: list[Job]
    done: dict[int, Any] = field(default_factory=dict)  # id(job) -> True, False or BUSY
    running: list[tuple] = field(default_factory=list)  # (process, job, start, log, gpu)
    # trunks another live process trains (another sweep of the same group): their branches
    # wait for them, then start from them, instead of being dropped as busy
    waiting: list[Job] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = worker_env(self.sweep)
        # several GPUs and no CUDA_VISIBLE_DEVICES of the user's: spread the workers over them
        self.gpus = cuda_devices() if "CUDA_VISIBLE_DEVICES" not in self.env else 0

    def start_ready(self) -> None:
        """Start the jobs that are ready, up to ``jobs`` workers at a time."""
        for job in [j for j in self.waiting if not owner_of(j.run_dir)]:
            self.waiting.remove(job)  # its owner is gone: finished (the worker sees it), or
            self.pending.insert(0, job)  # died (the worker resumes it)
        while (job := next_ready(self.pending, self.done, self.report)) and \
                len(self.running) < self.sweep.options["jobs"]:
            self.pending.remove(job)
            if owner := owner_of(job.run_dir):
                if job.trunk_epochs:
                    self.waiting.append(job)
                    self.report.waiting(job, owner)
                    continue
                self.done[id(job)] = BUSY
                self.report(job, None, 0.0, f"being trained by {owner}", busy=True)
                continue
            self.start(job)

    def start(self, job: Job) -> None:
        log = open_log(_log_path(job), root=Path(job.cfg.workspace).expanduser())
        gpu = least_busy_gpu([r[4] for r in self.running], self.gpus)
        env = self.env if gpu is None else {**self.env, "CUDA_VISIBLE_DEVICES": str(gpu)}
        proc = subprocess.Popen(worker_command(self.sweep, job), stdout=log,
                                stderr=subprocess.STDOUT, env=env,
                                preexec_fn=die_with(os.getpid()))
        self.running.append((proc, job, time.perf_counter(), log, gpu))

    def collect_ended(self) -> None:
        """Report the workers that have ended."""
        for entry in list(self.running):
            proc, job, started, log, _gpu = entry
            if proc.poll() is None:
                continue
            self.running.remove(entry)
            log.close()
            if proc.returncode == BUSY and job.trunk_epochs:  # claimed by another first
                self.waiting.append(job)
                continue
            results = succeeded(job) if proc.returncode == 0 else None
            self.done[id(job)] = BUSY if proc.returncode == BUSY else results is not None
            note = "" if results else f"exit code {proc.returncode}, log {log.name}"
            self.report(job, results, time.perf_counter() - started, note,
                        busy=proc.returncode == BUSY)

    def stop(self) -> None:
        for proc, *_ in self.running:
            proc.terminate()
        for proc, _job, _started, log, _gpu in self.running:
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
