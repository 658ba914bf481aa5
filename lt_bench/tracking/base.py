"""What the training loop tells a tracker, and how the sweep and the leaderboard read runs back.
Trackers are plugins (``lt_bench_register_trackers``).

The loop itself always writes the run folder ``<workspace>/runs/<dataset>-<method>-<cfg_hash>-
seed<seed>/`` (``config.yaml``, ``checkpoint.pt``, ``progress.json``, ``results.json``); a
tracker records the same run elsewhere (MLflow). Only rank 0 tracks.

The read side (``prepare``, ``finished_runs``, ``runs_for_leaderboard``) lets a sweep skip runs
that are done and ``lt-bench leaderboard`` compare methods, whatever the tracker. This base class
reads the run folders, so the "local" tracker and any subclass without a read side of its own
have one; an object that is not a ``Tracker`` and lacks these methods cannot be read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lt_bench import registry
from lt_bench.config import TrackingConfig
from lt_bench.tracking.records import finished_keys, read_run_folders
from lt_bench.tracking.store import get, workspace
from lt_bench.workspace.record import RunResult


class Tracker:
    """The tracker interface; this base records nothing beyond the run folder ("local")."""

    #: the resolved config the tracker was built for (its workspace holds the run folders)
    cfg: Any = None

    def __init__(self, cfg: Any = None):
        self.cfg = cfg

    def start(self, cfg: dict, run_dir: Path, data_info: dict,
              resume_id: str | None = None) -> str | None:
        """Begin (or, given the id saved in the checkpoint, continue) a run; return its id."""
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Per-epoch metrics, ``step`` = the epoch (0-based)."""

    def finish(self, result: RunResult | None, status: str = "FINISHED") -> None:
        """The run's record (``lt_bench.workspace.record.RunResult``: final and best metrics, per-class
        accuracy, weight trajectory) with status FINISHED; None with FAILED or KILLED."""

    # -- the read side ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the store (and experiment) before sweep workers start; run folders need
        nothing."""

    def finished_runs(self) -> set[tuple[str, str, int]] | None:
        """(method, cfg_hash, seed) of the FINISHED seed runs in the store this tracker writes
        to; None when it cannot be read back."""
        runs = self.runs_for_leaderboard()
        return None if runs is None else finished_keys(runs)

    def runs_for_leaderboard(self, experiment: str | None = None) -> list[dict] | None:
        """The finished seed runs (``lt_bench.tracking.records``) of one experiment (by name;
        default ``tracking.experiment``) or of all; None when they cannot be read back."""
        experiment = experiment or get(self.cfg, "tracking.experiment")
        return list(read_run_folders(workspace(self.cfg), experiment))


def local_tracker(cfg) -> Tracker:
    """Only the run folder under the workspace (no external store)."""
    return Tracker(cfg)


def tracker_name(cfg: Any) -> str:
    """``tracking.tracker``, or the config schema's default for a bare dict."""
    return str(get(cfg, "tracking.tracker") or TrackingConfig.tracker)


#: the trackers lt-bench's own plugins register (plugins/trackers.py, mlflow_tracking.py), by
#: module and factory: no other plugin can take these names (the registry refuses a name twice)
BUILT_IN = {"local": ("lt_bench.tracking.base", "local_tracker"),
            "mlflow": ("lt_bench.tracking.mlflow_tracker", "mlflow_tracker")}


def tracker_for(cfg: Any) -> Any:
    """The tracker ``tracking.tracker`` names, built by its plugin for ``cfg``. A built-in one is
    built directly while no plugin has been loaded: loading them all imports torch and
    torchvision, seconds for a command that only reads runs back (the leaderboard)."""
    import importlib

    name, plugins = tracker_name(cfg), get(cfg, "plugins") or ()
    if name in BUILT_IN and registry._default is None and not plugins and not \
            registry.env_plugins():
        module, factory = BUILT_IN[name]
        return getattr(importlib.import_module(module), factory)(cfg)
    tracker = registry.get_registry(plugins).build("trackers", name, cfg)
    if isinstance(tracker, Tracker) and tracker.cfg is None:
        tracker.cfg = cfg  # a subclass whose __init__ skips Tracker's reads this config's folders
    return tracker


def prepare_stores(cfgs: list) -> None:
    """Each tracker's store and experiment, once per (tracker, setting), before workers start."""
    settings = {(tracker_name(c), get(c, "dataset"), get(c, "imbalance"), get(c, "backbone.name"),
                 get(c, "tracking.experiment")): c for c in cfgs}
    for cfg in settings.values():
        read_back(tracker_for(cfg), "prepare")


def read_back(tracker: Any, method: str, *args: Any) -> Any:
    """``tracker.<method>(*args)`` for a read-side method, or None for a tracker without it (an
    object built on no ``Tracker``)."""
    fn = getattr(tracker, method, None)
    return fn(*args) if callable(fn) else None


def cannot_read_back(name: str) -> str:
    return (f"tracker {name!r} cannot be read back (no finished_runs/runs_for_leaderboard): the "
            "sweep cannot skip finished runs by the store; the leaderboard needs a tracker with "
            "a read side, such as mlflow or local")
