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

This module holds what a run needs to train a trunk or start from one (its config, folder and
mark, the branch itself); the trunk's entry point is ``lt_bench.run.train.train_trunk``, and which
runs share which trunk is the sweep's plan (``lt_bench.sweep.trunks``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from lt_bench.config import config_hash
from lt_bench.errors import LtBenchError
from lt_bench.tracking.base import Tracker
from lt_bench.workspace.files import write_file
from lt_bench.workspace.layout import TRUNK_MARK, checkpoint_file, trunk_mark_file, trunks_folder


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
    """The epochs of the finished trunk in ``folder``, or None when there is none.

    Its mark names them, and the checkpoint beside it must be the one the mark was written for:
    a truncated or replaced checkpoint is no finished trunk, whatever the mark says.
    """
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


def forget_mark(folder: Path, resume: bool) -> None:
    """Remove the mark of a trunk about to be trained again: it must not vouch for the new one.
    With ``resume``, the mark was there but its checkpoint is not the one marked: that goes too."""
    if not trunk_mark_file(folder).exists():
        return
    if resume:
        print(f"lt-bench: the trunk {folder.name} has a checkpoint that does not match its "
              f"{TRUNK_MARK} (truncated or replaced): training it again", flush=True)
        checkpoint_file(folder).unlink(missing_ok=True)
    trunk_mark_file(folder).unlink()


def mark_finished(folder: Path, epochs: int) -> None:
    """Write the trunk's mark: all its ``epochs`` are in the checkpoint beside it."""
    write_file(trunk_mark_file(folder), json.dumps(
        {"epochs": epochs, "sha256": checkpoint_digest(Path(folder))}))


def trunk_tracker():
    """A trunk is not a run of its own: only its branches are recorded."""
    return Tracker()


def branch(state, trunk: Path) -> None:
    """Put ``state`` (a ``checkpoint.RunState``) where the trunk stopped."""
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
