"""Progress a person can follow: a run writes where it is, a sweep shows every run's place.

A run (rank 0) keeps ``progress.json`` in its folder up to date: epoch, step, the last test
accuracy. It writes at most every ``WRITE_EVERY_S`` seconds, so the cost is one clock read a
step. The sweep reads those files while it waits for its workers. In a terminal it redraws one
line per running worker and a total line with an ETA, counted in the epochs the sweep trains
(not in runs: a fork's trunk is no run, its branches train a few epochs each); otherwise (CI,
nohup, a log file) it prints a plain line per run at most every ``PLAIN_EVERY_S`` seconds, never
a carriage return.
"""

from __future__ import annotations

import json
import sys
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
PLAIN_EVERY_S = 30.0
# The sweep's loop updates its display every fraction of a second; a longer silence means the
# sweep was stopped (SIGSTOP, a suspended laptop), and that time is no work for the ETA.
STOPPED_AFTER_S = 30.0


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


class SweepDisplay:
    """The sweep's side: ``update(running)`` with ``[(label, run_dir, first_epoch,
    epochs_to_train), ...]`` (the last two optional) as often as it likes, ``finished(epochs,
    run)`` when a job ends, ``close()`` at the end.

    ``total`` counts runs (a trunk is not one); ``epochs`` is the work to do, in epochs this sweep
    trains (a trunk's, a branch's after its trunk): the bar, percentage and ETA come from it."""

    def __init__(self, total: int, epochs: float, stream=None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.total, self.done = total, 0  # runs
        self.epochs, self.epochs_done = float(epochs), 0.0  # work, by ended jobs
        self.started = self.last_update = time.monotonic()
        self.drawn = 0  # lines of the live block on screen
        self.last_plain: dict[str, float] = {}
        self.next_draw = 0.0

    def fraction(self, running_epochs: float) -> float:
        return min(1.0, (self.epochs_done + running_epochs) / max(1.0, self.epochs))

    def eta(self, running_epochs: float) -> str:
        """The time left, from the epochs done so far (ended jobs' and ``running_epochs``)."""
        f = self.fraction(running_epochs)
        if f <= 0.01:
            return "ETA --"
        return f"ETA {duration((time.monotonic() - self.started) * (1 - f) / f)}"

    def update(self, running: list[tuple]) -> None:
        now = time.monotonic()
        if now - self.last_update > STOPPED_AFTER_S:
            self.started += now - self.last_update
        self.last_update = now
        progress = [(r[0], read_progress(r[1])) for r in running]
        worked = sum(epochs_done(p, *r[2:4]) for r, (_, p) in zip(running, progress))
        if self.live:
            if now < self.next_draw:
                return
            self.next_draw = now + 0.5
            f = self.fraction(worked)
            lines = [run_line(label, p) for label, p in progress]
            lines.append(f"total: {self.done}/{self.total} runs {bar(f)} {100 * f:3.0f} %  "
                         f"{self.eta(worked)}")
            self._draw(lines)
            return
        for label, p in progress:
            if p and now - self.last_plain.get(label, -PLAIN_EVERY_S) >= PLAIN_EVERY_S:
                self.last_plain[label] = now
                print(f"{run_line(label, p)}  ({self.eta(worked)})", file=self.stream,
                      flush=True)

    def message(self, text: str) -> None:
        """A line that stays (a finished run), printed above the live block."""
        self._clear()
        print(text, file=self.stream, flush=True)
        self.next_draw = 0.0

    def finished(self, epochs: float = 0.0, run: bool = True) -> None:
        """A job ended (finished, failed or dropped): its ``epochs`` to train are no longer
        ahead; ``run``: it is a run (not a trunk)."""
        self.done += bool(run)
        self.epochs_done += epochs

    def close(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self.live and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's start, erase
            self.stream.flush()
            self.drawn = 0

    def _draw(self, lines: list[str]) -> None:
        self._clear()
        self.stream.write("".join(line[:160] + "\n" for line in lines))
        self.stream.flush()
        self.drawn = len(lines)
