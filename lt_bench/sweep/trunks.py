"""The sweep's side of the fork (``lt_bench.run.fork``): which runs share a trunk, the trunk jobs
they wait for, and the sweep's work in epochs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lt_bench.config import config_hash
from lt_bench.run.assemble import trial_method
from lt_bench.run.fork import finished_trunk, trunk_config, trunk_folder
from lt_bench.run.progress import read_progress
from lt_bench.run.train import train, train_trunk
from lt_bench.sweep.jobs import Job, Sweep
from lt_bench.workspace.layout import checkpoint_file


@dataclass
class Trunk:
    folder: Path
    epochs: int
    cfg: Any  # a branch's config (train_trunk makes it plain)
    branches: list[Job] = field(default_factory=list)


def plain_epochs(cfg) -> int:
    """``Method.plain_epochs`` of ``cfg``'s method (0 when it cannot be built here)."""
    try:
        return trial_method(cfg).plain_epochs
    except Exception:  # noqa: BLE001  (a method that needs the real data: no fork for it)
        return 0


def plan(jobs: list[Job]) -> list[Trunk]:
    """The trunks for ``jobs`` (runs still to do), one per group of runs that can share one.

    A group is the runs that differ only in the method and share at least one plain epoch; it
    gets a trunk when it has two runs or more, or when a trunk of it is finished already: a
    method added to a finished comparison branches from the longest finished trunk it can use.
    """
    groups: dict[tuple, list] = defaultdict(list)
    for job in jobs:
        groups[(config_hash(trunk_config(job.cfg)), job.seed, str(job.cfg.workspace))].append(job)
    trunks = []
    for members in groups.values():
        first = members[0].cfg
        epochs = min(first.protocol.epochs, *(plain_epochs(j.cfg) for j in members))
        if not finished_trunk(trunk_folder(first, epochs), epochs):
            shorter = longest_finished_trunk(first, epochs)
            if shorter or len(members) < 2:
                epochs = shorter
        if epochs >= 1:
            trunks.append(Trunk(trunk_folder(first, epochs), epochs, first, members))
    return trunks


def longest_finished_trunk(cfg, epochs: int) -> int:
    """The most epochs, at most ``epochs``, of a finished trunk of ``cfg``'s group (0: none)."""
    prefix = trunk_folder(cfg, 0).name[:-1]  # "...-epochs"
    found = [int(f.name[len(prefix):]) for f in trunk_folder(cfg, 0).parent.glob(prefix + "*")
             if f.name[len(prefix):].isdigit()]
    return max((k for k in found if k <= epochs and finished_trunk(trunk_folder(cfg, k), k)),
               default=0)


def epochs_with_and_without(trunks: list[Trunk], jobs: list[Job]) -> tuple[int, int]:
    """(epochs trained with the fork, epochs trained without it) for ``jobs``."""
    alone = sum(j.cfg.protocol.epochs for j in jobs)
    shared = sum(t.epochs * (len(t.branches) - (not finished_trunk(t.folder, t.epochs)))
                 for t in trunks)
    return alone - shared, alone


def add_trunks(sweep: Sweep, todo: list[Job], out) -> list[Job]:
    """``todo`` with a trunk job before each group of runs that can share their first epochs
    (``lt_bench.run.fork``); the runs of a group wait for their trunk and start from it."""
    if not sweep.options["fork"] or sweep.train_fn is not train or not todo:
        return todo
    if sweep.options["engine"] == "ray":  # a trunk's checkpoint would be on one node only
        out("sweep: fork: off with engine=ray (branches need their trunk's checkpoint)")
        return todo
    trunks = plan(todo)
    if not trunks:
        return todo
    jobs = []
    for t in trunks:
        trunk = Job(t.branches[0].overrides, t.cfg, "ce", t.branches[0].seed,
                    label=f"trunk seed={t.branches[0].seed}, epochs 1-{t.epochs}",
                    run_dir=t.folder, train_fn=train_trunk,
                    kwargs={"epochs": t.epochs}, trunk_epochs=t.epochs)
        jobs.append(trunk)
        for branch in t.branches:
            branch.after, branch.kwargs = trunk, {"trunk": str(t.folder)}
    with_fork, alone = epochs_with_and_without(trunks, todo)
    out(f"sweep: fork: {len(trunks)} trunk(s) shared by {sum(len(t.branches) for t in trunks)} "
        f"runs: {with_fork} epochs to train instead of {alone} ({1 - with_fork / alone:.0%} "
        "fewer; fork=false turns it off)")
    return jobs + todo


def plan_work(todo: list[Job]) -> int:
    """Set each job's ``first_epoch`` and ``epochs_to_train``; return the sweep's work in epochs.

    A trunk trains its epochs (a finished one none), a branch those after its trunk's, and a run
    that resumes from its own checkpoint those after the epoch its ``progress.json`` reached.
    The ETA comes from it: counting runs would take a trunk as nothing and a branch as whole.
    """
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

