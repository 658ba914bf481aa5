"""Checkpoints written atomically, so a run killed mid-write never leaves a broken one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from lt_bench.errors import LtBenchError


def save_checkpoint(path: Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # a full disk surfaces as either
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free / 2**20
        raise LtBenchError(f"cannot write the checkpoint in {str(path.parent)!r} ({free:.0f} MiB "
                           f"free): {str(exc).splitlines()[0]}; free some space and start the "
                           "same command again to resume from the last checkpoint") from None


def remove_stale_temporaries(folder: Path) -> None:
    """Half-written checkpoints of killed processes (``.checkpoint.pt.PID.tmp``)."""
    for tmp in Path(folder).glob(".checkpoint.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location=None) -> dict:
    try:
        # weights_only: a checkpoint is tensors and plain containers; unpickling arbitrary
        # objects would run code planted in a run folder.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise LtBenchError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
            "delete it or pass resume=false to start the run again"
        ) from exc
