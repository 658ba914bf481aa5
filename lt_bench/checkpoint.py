"""Checkpoints written atomically, so a run killed mid-write never leaves a broken one."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lt_bench.errors import LtBenchError


def save_checkpoint(path: Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
