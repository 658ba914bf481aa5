"""Checkpoints written atomically, so a run killed mid-write never leaves a broken one, and the
``RunState`` they hold. They are written as every run file is (``lt_bench.workspace.files``): into a
fresh temporary beside the checkpoint, never through a link."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lt_bench.errors import LtBenchError
from lt_bench.workspace.files import atomic_writer


def save_checkpoint(path: Path, state: dict) -> None:
    path = Path(path)
    try:
        with atomic_writer(path) as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as exc:  # a full disk surfaces as either
        free = shutil.disk_usage(path.parent).free / 2**20 if path.parent.is_dir() else 0
        raise LtBenchError(f"cannot write the checkpoint in {str(path.parent)!r} ({free:.0f} MiB "
                           f"free): {str(exc).splitlines()[0]}; free some space and start the "
                           "same command again to resume from the last checkpoint") from None


def remove_stale_temporaries(folder: Path) -> None:
    """Half-written files of killed processes (``.checkpoint.pt.PID.RANDOM.tmp``, the same for
    ``results.json``, ``progress.json``, ...): only the run's owner writes in its folder."""
    for tmp in Path(folder).glob(".*.*.tmp"):
        if not tmp.is_dir():
            tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location=None) -> dict:
    try:
        # weights_only: a checkpoint is tensors and plain containers; unpickling arbitrary
        # objects would run code planted in a run folder.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]  # torch's are paragraphs
        raise LtBenchError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: {first}); it is "
            "not one lt-bench wrote (only tensors and plain values are loaded, never code): "
            "delete it or pass resume=false to start the run again"
        ) from None


@dataclass
class RunState:
    """Everything a run needs to go on where it stopped: the trained parts (model, optimizer,
    schedule, criterion with its statistics), the random states (CPU and CUDA), and the run's
    own bookkeeping (next epoch, history, the tracker's run id, the time spent so far)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: torch.nn.Module
    device: torch.device
    next_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    tracker_run_id: str | None = None
    elapsed: float = 0.0
    trunk: str | None = None  # the trunk this run branched from (lt_bench.run.fork), if any
    variant: dict | None = None  # how the backbone runs (lt_bench.device.cpu_variant.Choice.to_dict)
    #: the data fingerprint of the images it trained on (lt_bench.workspace.provenance): a checkpoint or
    #: trunk is never continued on other data; None in checkpoints from before it was kept
    data_fingerprint: str | None = None

    def save(self, path: Path) -> None:
        cuda = self.device.type == "cuda"
        save_checkpoint(path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "criterion": self.criterion.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "epoch": self.next_epoch - 1, "history": self.history,
            "tracker_run_id": self.tracker_run_id, "elapsed": self.elapsed, "trunk": self.trunk,
            "variant": self.variant, "data_fingerprint": self.data_fingerprint,
        })

    def restore(self, path: Path, criterion: bool = True) -> None:
        """Everything saved in ``path``; the criterion's state too unless ``criterion=False``
        (a branch continuing a trunk trained with another criterion)."""
        # Read onto the CPU: load_state_dict copies each tensor to its owner's device, and the
        # RNG states must stay CPU byte tensors whatever device the run trains on.
        state = load_checkpoint(path, map_location="cpu")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if criterion:
                self.criterion.load_state_dict(state["criterion"])
            torch.set_rng_state(state["rng"])
            if self.device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            self.next_epoch, self.history = state["epoch"] + 1, state["history"]
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise LtBenchError(
                f"checkpoint {str(path)!r} is not one of this run's ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); delete it or pass resume=false to start "
                "the run again") from None
        self.tracker_run_id = state.get("tracker_run_id")
        self.elapsed = state.get("elapsed", 0.0)
        self.trunk = state.get("trunk")
        self.variant = state.get("variant")
        self.data_fingerprint = state.get("data_fingerprint")
