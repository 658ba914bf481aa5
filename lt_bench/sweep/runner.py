"""Running a sweep: which of its runs are finished already, and the workers for the others.
What a sweep prints at its close (the leaderboard, the picture, the links) sits above it, in
``lt_bench.commands.sweep``: comparing is a layer above running."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lt_bench.run.train import train
from lt_bench.sweep.display import SweepDisplay
from lt_bench.sweep.grid import expand
from lt_bench.sweep.jobs import Job, Sweep, TrainFn
from lt_bench.sweep.report import Report
from lt_bench.sweep.trunks import add_trunks, plan_work
from lt_bench.sweep.workers import finished_in_folder, run_local, run_ray
from lt_bench.tracking import cannot_read_back, prepare_stores, read_back, tracker_for
from lt_bench.workspace.files import RunFileError


def finished_in_store(jobs: list[Job]) -> set[tuple[str, str, int]]:
    """(method, cfg_hash, seed) of the jobs' FINISHED seed runs, read back through their
    trackers. A tracker that cannot be read back adds nothing (said once): its jobs are skipped
    by run folder only."""
    import logging

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


def split_finished(jobs: list[Job], out) -> tuple[list[Job], list[Job], list[str]]:
    """(jobs to run, jobs finished already, labels of jobs skipped for a corrupt run folder)."""
    done = finished_in_store(jobs)
    todo, skipped, corrupt = [], [], []
    for job in jobs:
        try:
            finished = (job.method, job.cfg_hash, job.seed) in done or finished_in_folder(job)
        except RunFileError as exc:  # one bad run folder must not stop the others
            out(f"sweep: {job.label}: skipped: {exc}")
            corrupt.append(job.label)
            continue
        (skipped if finished else todo).append(job)
    return todo, skipped, corrupt


def run_grid(args: list[str], plugins: list[str] = (), out=print, train_fn: TrainFn | None = None,
             close: Callable[[Sweep, Report], None] | None = None) -> dict:
    """Run the grid; print one line per finished run, then ``close`` (``lt-bench sweep``'s:
    the leaderboard); return a summary. ``train_fn`` (a function, or ``module:function``) is
    what each worker calls with its run's config (None: ``lt_bench.run.train.train``)."""
    sweep = expand(args, out)
    sweep.plugins = list(plugins)
    sweep.train_fn = train_fn or train
    return execute(sweep, out, close)


def execute(sweep: Sweep, out=print, close: Callable[[Sweep, Report], None] | None = None) -> dict:
    """Run ``sweep``'s jobs that are not finished yet (``lt-bench reproduce`` hands it the jobs
    of a whole study), then ``close(sweep, report)`` if given."""
    prepare_stores([j.cfg for j in sweep.jobs])  # the stores and experiments before any worker
    todo, skipped, corrupt = split_finished(sweep.jobs, out)
    out(f"sweep: {len(sweep.jobs)} runs ({len(skipped)} already finished, {len(todo)} to run) "
        f"on {sweep.options['engine']}"
        + (f" with {sweep.options['jobs']} workers" if sweep.options["engine"] == "local" else ""))
    todo = add_trunks(sweep, todo, out)
    runs, epochs = sum(not job.trunk_epochs for job in todo), plan_work(todo)
    display = (SweepDisplay(runs, epochs) if out is print and sweep.options["engine"] == "local"
               else None)
    report = Report(sweep.options["metric"], len(sweep.jobs), skipped, runs,
                    display.message if display else out, display)  # above the live lines
    report.summary["corrupt"] = corrupt
    if todo and sweep.options["engine"] == "ray":
        run_ray(sweep, todo, report)
    elif todo:
        run_local(sweep, todo, report, display)
    if close is not None:
        close(sweep, report)
    return report.close()
