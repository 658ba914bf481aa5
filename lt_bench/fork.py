"""The fork at the re-weighting start: a comparison trains its common part once.

In a protocol like the paper's, every method trains as plain cross-entropy with uniform weights
for its first ``start_epoch`` epochs (one fewer for class volume, which gathers statistics in
the epoch before). Runs that share everything but the method (data, backbone, seed, protocol)
are then the same run up to that point. A sweep trains that **trunk** once, as ``ce`` stopped
after ``k`` epochs (``k`` = the least ``Method.plain_epochs`` of the group), checkpoints it in
``<workspace>/trunks/``, and starts every method's run (a **branch**) from the checkpoint. The
branch is the same computation as the run trained alone: the same model, optimizer, schedule and
random states at epoch ``k``, and a criterion in the state ``end_epoch`` leaves after ``k``
epochs of nothing observed. On the CPU with ``deterministic=true`` it is bit-identical.

A branch's run is an ordinary run (same folder, config hash and tracker record, the trunk's
epochs logged into it); ``fork.trunk`` among its params names the trunk. An interrupted trunk or
branch resumes from its own checkpoint. ``lt-bench sweep ... fork=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lt_bench.config import config_hash
from lt_bench.run_folder import TRUNK_MARK, checkpoint_file, trunk_mark_file, trunks_folder


def trunk_config(cfg):
    """The config the trunk trains: the run's, with plain cross-entropy as its method."""
    trunk = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    trunk.method = {"name": "ce"}
    return trunk


def trunk_folder(cfg, epochs: int) -> Path:
    trunk = trunk_config(cfg)
    name = f"{trunk.dataset}-{config_hash(trunk)}-seed{trunk.seed}-epochs{epochs}"
    return trunks_folder(trunk.workspace) / name


def finished_trunk(folder: Path, epochs: int) -> bool:
    return trunk_epochs(folder) == epochs


def trunk_epochs(folder: Path) -> int | None:
    """The epochs of the finished trunk in ``folder``: its mark names them, and the checkpoint
    beside it is the one the mark was written for (a truncated or replaced checkpoint is no
    finished trunk, whatever the mark says). None when there is no such trunk."""
    try:
        mark = json.loads(trunk_mark_file(folder).read_text())
        epochs = mark["epochs"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        return None
    digest = mark.get("sha256")  # absent from the marks of older lt_bench: trusted as before
    if digest is not None and checkpoint_digest(Path(folder)) != digest:
        return None
    return epochs


def checkpoint_digest(folder: Path) -> str | None:
    path = checkpoint_file(folder)
    try:
        seen = path.stat()
        key = (str(path), seen.st_size, seen.st_mtime_ns)
        if key not in _digests:  # a sweep's plan asks for every group, a large trunk is GBs
            _digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        return _digests[key]
    except OSError:
        return None


_digests: dict[tuple, str] = {}


def train_trunk(cfg, epochs: int) -> None:
    """Train the trunk of ``cfg``'s group: ``epochs`` epochs of plain cross-entropy."""
    from lt_bench.train import train_in

    folder = trunk_folder(cfg, epochs)
    if cfg.resume and finished_trunk(folder, epochs):
        return None
    if trunk_mark_file(folder).exists():  # trained again: the old mark must not vouch for it
        if cfg.resume:  # marked done, but its checkpoint is not the one marked
            print(f"lt-bench: the trunk {folder.name} has a checkpoint that does not match its "
                  f"{TRUNK_MARK} (truncated or replaced): training it again", flush=True)
            checkpoint_file(folder).unlink(missing_ok=True)
        trunk_mark_file(folder).unlink()
    return train_in(trunk_config(cfg), lambda c: trunk_folder(c, epochs), stop_after=epochs)


def trunk_done(folder: Path, epochs: int, is_main: bool) -> None:
    if is_main:
        from lt_bench.run_files import write_file

        write_file(trunk_mark_file(folder), json.dumps(
            {"epochs": epochs, "sha256": checkpoint_digest(Path(folder))}))


def trunk_tracker():
    """A trunk is not a run of its own: only its branches are recorded."""
    from lt_bench.tracking.base import Tracker

    return Tracker()


def branch(state, trunk: Path) -> None:
    """Put ``state`` (a ``checkpoint.RunState``) where the trunk stopped."""
    from lt_bench.errors import LtBenchError

    checkpoint = checkpoint_file(trunk)
    if trunk_epochs(trunk) is None:
        raise LtBenchError(f"trunk {str(trunk)!r} is not finished (no {TRUNK_MARK} that matches a "
                           "checkpoint.pt beside it): run the sweep again, which trains it, or "
                           "start the run without it")
    state.restore(checkpoint, criterion=False)
    state.criterion.start_at(state.next_epoch)
    state.trunk, state.tracker_run_id = trunk.name, None


def trunk_params(state) -> dict:
    return {"fork": {"trunk": state.trunk}} if state.trunk else {}


def replay_history(tracker, history: list[dict]) -> None:
    """Log the trunk's epochs into a branch's tracker run, so that it reads like any other."""
    for record in history:
        metrics = {k: v for k, v in record.items() if k != "epoch"
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracker.log_metrics(metrics, step=record["epoch"])


# -- the sweep's side -------------------------------------------------------------------------
@dataclass
class Trunk:
    folder: Path
    epochs: int
    cfg: Any  # a branch's config (train_trunk makes it plain)
    branches: list = field(default_factory=list)  # the sweep's Jobs


def plain_epochs(cfg) -> int:
    """``Method.plain_epochs`` of ``cfg``'s method (0 when it cannot be built here)."""
    from lt_bench.assemble import trial_method

    try:
        return trial_method(cfg).plain_epochs
    except Exception:  # noqa: BLE001  (a method that needs the real data: no fork for it)
        return 0


def plan(jobs: list) -> list[Trunk]:
    """The trunks for ``jobs`` (runs still to do): one per group of runs that differ only in the
    method and share at least one plain epoch, when the group has two runs or more, or when its
    trunk is finished already (a method added to a finished comparison branches from it, from
    the longest finished trunk it can use when none has its own length)."""
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


def saving(trunks: list[Trunk], jobs: list) -> tuple[int, int]:
    """(epochs trained with the fork, epochs trained without it) for ``jobs``."""
    alone = sum(j.cfg.protocol.epochs for j in jobs)
    shared = sum(t.epochs * (len(t.branches) - (not finished_trunk(t.folder, t.epochs)))
                 for t in trunks)
    return alone - shared, alone
