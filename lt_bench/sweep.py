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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lt_bench.errors import LtBenchError
from lt_bench.progress import SweepDisplay, read_progress
from lt_bench.results import RunResult
from lt_bench.run_files import RunFileError
from lt_bench.run_folder import checkpoint_file
from lt_bench.sweep_workers import finished_in_folder, run_local, run_ray

SWEEP_ONLY = ("methods", "seeds", "jobs", "engine", "gpus_per_run", "cpus_per_run",
              "ray.address", "baseline", "metric", "fork")
#: what a worker calls with the run's config; tests pass their own to ``run_sweep`` (a Python
#: argument, never a config key: a config file must not name code to run)
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
    train_fn: str | None = None  # None: the sweep's
    kwargs: dict = field(default_factory=dict)  # more arguments of train_fn (the fork's)
    after: Job | None = None  # a job that must finish first (a branch's trunk)
    trunk_epochs: int = 0  # > 0: this job trains a trunk of that many epochs (lt_bench.fork)
    first_epoch: int = 0  # where its training starts (a branch: its trunk's end; see plan_work)
    epochs_to_train: int = 0  # what this sweep trains of it (set by plan_work)


@dataclass
class Sweep:
    paths: list[str]
    jobs: list[Job]
    options: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    train_fn: str = DEFAULT_TRAIN_FN


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


def expand(args: list[str], out=None) -> Sweep:
    """The grid of runs described by the sweep's arguments (configs resolved, hashes computed).
    What the grid drops or never does (a duplicate run, a method option a method does not take,
    a milestone past the last epoch) is said once, one line each, through ``out`` (None: as
    warnings of the ``lt_bench`` logger)."""
    import logging

    from lt_bench.config import config_hash, load_config, parse_override, split_args
    from lt_bench.config_checks import schedule_warnings
    from lt_bench.run_folder import run_folder
    from lt_bench.sweep_grid import for_its_method, takers_lines, unique

    paths, pairs = split_args(args)
    options: dict[str, Any] = {"jobs": None, "engine": "local", "gpus_per_run": 0.0,
                               "cpus_per_run": 1.0, "ray.address": None, "baseline": "ce",
                               "metric": "final", "fork": True}
    notes: list[str] = []
    base = load_config(paths, [], notes)
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
    if options["jobs"] is not None and (not isinstance(options["jobs"], int)
                                        or options["jobs"] < 1):
        raise LtBenchError(f"sweep: jobs={options['jobs']!r}: give a number of workers >= 1")
    if options["engine"] not in ("local", "ray"):
        raise LtBenchError(f"sweep: engine={options['engine']!r}: choose local or ray")
    if not isinstance(options["fork"], bool):
        raise LtBenchError(f"sweep: fork={options['fork']!r}: choose true or false")
    if options["metric"] not in ("final", "best"):
        raise LtBenchError(f"sweep: metric={options['metric']!r}: choose final or best")

    jobs = []
    names = [k for k, _ in axes]
    takers: dict = {}
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
    lines = takers_lines(takers)
    jobs, dropped = unique(jobs)
    for line in dict.fromkeys([*lines, *notes, *dropped]):
        (out or logging.getLogger(__name__).warning)(f"sweep: {line}")
    if options["jobs"] is None:
        from lt_bench.device_defaults import cuda_devices, default_jobs

        options["jobs"] = default_jobs(jobs, cuda_devices() if options["engine"] == "local"
                                       else 0)
    return Sweep(paths, jobs, options)


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


def run_sweep(args: list[str], plugins: list[str] = (), out=print,
              train_fn: str = DEFAULT_TRAIN_FN) -> dict:
    """Run the grid; print one line per finished run and the leaderboard; return a summary.
    ``train_fn`` (``module:function``) is what each worker calls with its run's config."""
    sweep = expand(args, out)
    sweep.plugins = list(plugins)
    sweep.train_fn = train_fn
    return execute(sweep, out)


def execute(sweep: Sweep, out=print, closing: bool = True) -> dict:
    """Run ``sweep``'s jobs that are not finished yet (``lt-bench reproduce`` hands it the jobs
    of a whole study); ``closing``: then print the leaderboard and draw the comparison."""
    from lt_bench.tracking import prepare_stores

    prepare_stores([j.cfg for j in sweep.jobs])  # the stores and experiments before any worker
    done = finished_in_store(sweep.jobs)
    todo, skipped, corrupt = [], [], []
    for job in sweep.jobs:
        try:
            finished = (job.method, job.cfg_hash, job.seed) in done or finished_in_folder(job)
        except RunFileError as exc:  # one bad run folder must not stop the others
            out(f"sweep: {job.label}: skipped: {exc}")
            corrupt.append(job.label)
            continue
        (skipped if finished else todo).append(job)
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
    if not closing:
        return report.close()
    from lt_bench import leaderboard as lb

    rows = lb.sweep_rows([j.cfg for j in sweep.jobs], sweep.options["metric"],
                         str(sweep.options["baseline"]))
    if rows is not None:  # None: a tracker that cannot be read back, said by finished_in_store
        report.out("")
        report.out(lb.format_text(rows))
        report.summary["leaderboard"] = lb.as_dicts(rows)
    if rows:
        from lt_bench.tracking.comparison_plot import sweep_figures

        try:
            report.summary["plots"] = [str(p) for p in sweep_figures(
                [j.cfg for j in sweep.jobs], rows, report.out)]
        except Exception as exc:  # a picture must not fail a sweep whose runs are all done
            report.out(f"sweep: the comparison plot could not be drawn ({exc}); "
                       "lt-bench leaderboard --plot FILE.png draws it again")
    from lt_bench.tracking.mlflow_artifacts import sweep_links

    for line in sweep_links([j.cfg for j in sweep.jobs]):  # the runs and the picture, a click away
        report.out(f"sweep: {line}")
    return report.close()


def add_trunks(sweep: Sweep, todo: list[Job], out) -> list[Job]:
    """``todo`` with a trunk job before each group of runs that can share their first epochs
    (``lt_bench.fork``); the runs of a group wait for their trunk and start from it."""
    if not sweep.options["fork"] or sweep.train_fn != DEFAULT_TRAIN_FN or not todo:
        return todo
    if sweep.options["engine"] == "ray":  # a trunk's checkpoint would be on one node only
        out("sweep: fork: off with engine=ray (branches need their trunk's checkpoint)")
        return todo
    from lt_bench import fork

    trunks = fork.plan(todo)
    if not trunks:
        return todo
    jobs = []
    for t in trunks:
        trunk = Job(t.branches[0].overrides, t.cfg, "ce", t.branches[0].seed,
                    label=f"trunk seed={t.branches[0].seed}, epochs 1-{t.epochs}",
                    run_dir=t.folder, train_fn="lt_bench.fork:train_trunk",
                    kwargs={"epochs": t.epochs}, trunk_epochs=t.epochs)
        jobs.append(trunk)
        for branch in t.branches:
            branch.after, branch.kwargs = trunk, {"trunk": str(t.folder)}
    with_fork, alone = fork.saving(trunks, todo)
    out(f"sweep: fork: {len(trunks)} trunk(s) shared by {sum(len(t.branches) for t in trunks)} "
        f"runs: {with_fork} epochs to train instead of {alone} ({1 - with_fork / alone:.0%} "
        "fewer; fork=false turns it off)")
    return jobs + todo


def plan_work(todo: list[Job]) -> int:
    """Set each job's ``first_epoch`` and ``epochs_to_train``, and return the sweep's work in
    epochs: a trunk trains its epochs, a branch those after its trunk's, a run that resumes from
    its own checkpoint those after the epoch its ``progress.json`` reached (a finished trunk:
    none). The ETA comes from it: runs would count a trunk as nothing and a branch as a whole."""
    from lt_bench.fork import finished_trunk

    for job in todo:
        end = job.trunk_epochs or int(job.cfg.protocol.epochs)
        start = job.after.trunk_epochs if job.after is not None else 0
        own = job.run_dir and job.cfg.resume and checkpoint_file(job.run_dir).is_file()
        p = read_progress(job.run_dir) if own else None
        if p and p.get("epochs") == end and isinstance(p.get("epoch"), int):
            start = p["epoch"]  # its own checkpoint goes first (train.resume_or_start)
        if job.trunk_epochs and job.cfg.resume and finished_trunk(job.run_dir, end):
            start = end
        job.first_epoch = max(0, min(start, end))
        job.epochs_to_train = end - job.first_epoch
    return sum(job.epochs_to_train for job in todo)


class Report:
    """One line per run as it ends, and the sweep's summary: which runs finished, failed, were
    finished already (skipped) or are being trained by another live process (busy)."""

    def __init__(self, metric: str, total: int, skipped: list[Job], todo: int, out, display):
        self.metric, self.todo, self.out, self.display, self.count = metric, todo, out, display, 0
        self.summary = {"total": total, "skipped": [j.label for j in skipped], "finished": [],
                        "failed": [], "busy": []}

    def __call__(self, job: Job, result: RunResult | None, seconds: float, note: str,
                 busy: bool = False) -> None:
        if self.display:  # its epochs are behind us, trained or not
            self.display.finished(job.epochs_to_train, run=not job.trunk_epochs)
        if job.trunk_epochs:
            self.out(f"[trunk] {job.label}: " + ("done" if not note else f"FAILED ({note})")
                     + f" ({seconds:.0f} s)")
            return
        self.count += 1
        prefix = f"[{self.count}/{self.todo}] {job.label}"
        if result is not None:
            score = result.score(self.metric)
            acc = "n/a" if score is None else f"{100 * score.acc:.2f}%"
            self.out(f"{prefix}: {self.metric} acc {acc} ({seconds:.0f} s)")
            self.summary["finished"].append(job.label)
        elif busy:
            self.out(f"{prefix}: skipped, {note} (another sweep on this workspace)")
            self.summary["busy"].append(job.label)
        else:
            self.out(f"{prefix}: FAILED ({note})")
            self.summary["failed"].append(job.label)

    def waiting(self, trunk: Job, owner: str) -> None:
        if trunk.label in self.summary.setdefault("waited", []):
            return
        self.summary["waited"].append(trunk.label)
        self.out(f"[trunk] {trunk.label}: being trained by {owner} (another sweep); its "
                 "branches start from it once it is done")

    def close(self) -> dict:
        if self.summary["failed"]:
            self.out(f"sweep: {len(self.summary['failed'])} run(s) failed; run the same sweep "
                     "again to retry them (finished runs are skipped)")
        if self.summary["busy"]:
            self.out(f"sweep: {len(self.summary['busy'])} run(s) are being trained by another "
                     "process; run the same sweep again once it is done to see them here")
        return self.summary
