"""Progress a person can follow: a run writes where it is (``lt_bench.sweep.display`` shows it).

A run (rank 0) keeps ``progress.json`` in its folder up to date: epoch, step, the last test
accuracy. It writes at most every ``WRITE_EVERY_S`` seconds, so the cost is one clock read a
step. The helpers below read such a file and draw one run's line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lt_bench.workspace.files import (
    RunFileError,
    check_fields,
    json_object,
    read_record,
    write_file,
)
from lt_bench.workspace.layout import progress_file

WRITE_EVERY_S = 2.0


class RunProgress:
    """The run's side: ``step()`` every training step, ``epoch_done()`` after each epoch."""

    def __init__(self, run_dir: Path, epochs: int, steps_per_epoch: int, enabled: bool = True):
        self.path = progress_file(run_dir)
        self.state = {"epoch": 0, "epochs": epochs, "step": 0, "steps": steps_per_epoch,
                      "acc": None}
        self.enabled = enabled
        self.next_write = 0.0

    def step(self, epoch: int, step: int) -> None:
        if self.enabled and time.monotonic() >= self.next_write:
            self.state.update(epoch=epoch, step=step)
            self._write()

    def epoch_done(self, epoch: int, acc: float | None) -> None:
        if self.enabled:
            self.state.update(epoch=epoch + 1, step=0)
            if acc is not None:
                self.state["acc"] = acc
            self._write()

    def _write(self) -> None:
        self.next_write = time.monotonic() + WRITE_EVERY_S
        try:  # atomically, never through a link (a link is refused: RunFileError)
            write_file(self.path, json.dumps(self.state))
        except OSError:
            pass  # progress is a courtesy: a full disk shows up at the checkpoint instead


#: what a reader of ``progress.json`` may rely on
FIELDS = {"epoch": int, "epochs": int, "step": int, "steps": int, "acc": float | None}


def _progress(data) -> dict:
    check_fields(json_object(data), FIELDS, required=("epoch", "epochs", "step", "steps"))
    return {"acc": None, **{k: data[k] for k in FIELDS if k in data}}


def read_progress(run_dir: Path) -> dict | None:
    """The run's progress, its fields of the types in ``FIELDS``; None when there is none or it
    cannot be used (a courtesy: a sweep shows the run as starting)."""
    try:
        return read_record(progress_file(run_dir), _progress)
    except RunFileError:
        return None


def fraction(p: dict | None) -> float:
    """How much of a run is done, from its progress (0 before its first write)."""
    if not p or not p.get("epochs"):
        return 0.0
    steps = max(1, p.get("steps") or 1)
    return min(1.0, (p["epoch"] + min(p.get("step", 0), steps) / steps) / p["epochs"])


def bar(f: float, width: int = 20) -> str:
    full = int(round(f * width))
    return "█" * full + "·" * (width - full)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def run_line(label: str, p: dict | None) -> str:
    if not p:
        return f"{label}: starting"
    acc = "" if p.get("acc") is None else f"  test acc {100 * p['acc']:.2f} %"
    return (f"{label}: epoch {min(p['epoch'] + 1, p['epochs'])}/{p['epochs']} "
            f"{bar(fraction(p))} {100 * fraction(p):3.0f} %{acc}")


def epochs_done(p: dict | None, first_epoch: int = 0, most: float | None = None) -> float:
    """Epochs a running job has trained since it started at ``first_epoch`` (a branch starts
    where its trunk stopped, a resumed run where it was), at most ``most``."""
    if not p or not p.get("epochs"):
        return 0.0
    steps = max(1, p.get("steps") or 1)
    where = min(float(p["epochs"]), p["epoch"] + min(p.get("step", 0), steps) / steps)
    done = max(0.0, where - first_epoch)
    return done if most is None else min(done, most)
