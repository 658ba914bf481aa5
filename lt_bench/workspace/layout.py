"""The layout of the workspace: where a run's folder is, and the names of the files in it.

A run is ``<workspace>/runs/<dataset>-<method>-<config hash>-seed<seed>/`` holding
``config.yaml``, ``checkpoint.pt``, ``progress.json`` and, once finished, ``results.json``. A
trunk (``lt_bench.run.fork``) is ``<workspace>/trunks/<name>/`` with its ``checkpoint.pt`` and, once
finished, ``trunk.json``. A sweep's logs and pictures go to ``<workspace>/sweeps/``. Every other
module asks here for these names; how the files are written is ``lt_bench.workspace.files``'s job.
"""

from __future__ import annotations

from pathlib import Path

from lt_bench.config import config_hash

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
PROGRESS = "progress.json"
RESULTS = "results.json"
TRUNK_MARK = "trunk.json"  # written when a trunk has all its epochs

RUNS, TRUNKS, SWEEPS = "runs", "trunks", "sweeps"


def folder_name(dataset: str, method: str, cfg_hash: str, seed: int) -> str:
    return f"{dataset}-{method}-{cfg_hash}-seed{seed}"


def run_folder(cfg) -> Path:
    """The run's folder: config, checkpoint, progress and results of one seed."""
    return runs_folder(cfg.workspace) / folder_name(cfg.dataset, cfg.method.name,
                                                    config_hash(cfg), cfg.seed)


def runs_folder(workspace) -> Path:
    return Path(workspace).expanduser() / RUNS


def trunks_folder(workspace) -> Path:
    return Path(workspace).expanduser() / TRUNKS


def sweeps_folder(workspace) -> Path:
    return Path(workspace).expanduser() / SWEEPS


def config_file(folder) -> Path:
    return Path(folder) / CONFIG


def checkpoint_file(folder) -> Path:
    return Path(folder) / CHECKPOINT


def progress_file(folder) -> Path:
    return Path(folder) / PROGRESS


def results_file(folder) -> Path:
    return Path(folder) / RESULTS


def trunk_mark_file(folder) -> Path:
    return Path(folder) / TRUNK_MARK
