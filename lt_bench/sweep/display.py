"""The sweep's live display: every running run's place, and a total line with an ETA.

The sweep reads the runs' ``progress.json`` (``lt_bench.run.progress``) while it waits for its
workers. In a terminal it redraws one line per running worker and a total line with an ETA,
counted in the epochs the sweep trains (not in runs: a fork's trunk is no run, its branches
train a few epochs each); otherwise (CI, nohup, a log file) it prints a plain line per run at
most every ``PLAIN_EVERY_S`` seconds, never a carriage return.
"""

from __future__ import annotations

import sys
import time

from lt_bench.run.progress import bar, duration, epochs_done, read_progress, run_line

PLAIN_EVERY_S = 30.0
# The sweep's loop updates its display every fraction of a second; a longer silence means the
# sweep was stopped (SIGSTOP, a suspended laptop), and that time is no work for the ETA.
STOPPED_AFTER_S = 30.0


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
