"""How many threads a CPU run uses: the cores it may run on, less those other processes keep busy.

OpenMP threads wait for each other at every layer. With a core taken by another process, a
two-thread ResNet-32 step waits on the thread that has no core: on an Intel Xeon with AMX it
trained at 0.23 of its idle speed beside one busy loop, where one thread trained at 0.58
(docs/BENCHMARKS.md). A passive OpenMP wait policy does not help (0.25) and costs a third of
the idle speed. So a run counts, from ``/proc/stat``, how busy its allowed cores were with other
work since it last looked (its own time, from ``/proc/self/stat``, taken out), and uses one
thread per core left free: at the start, and every ``EVERY_STEPS`` steps, so that a job started
beside it costs it its fair share, not twentyfold. It never goes above the thread count it
started with (the user's ``OMP_NUM_THREADS``, a sweep worker's one thread), and a
``deterministic=true`` run keeps its threads (another count sums in another order).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

EVERY_STEPS = 100
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def allowed_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def busy_ticks(cores: list[int]) -> tuple[int, int] | None:
    """(busy, all) clock ticks of ``cores`` since boot, from /proc/stat; None elsewhere."""
    wanted = {f"cpu{c}" for c in cores}
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name in wanted:
                    ticks = [int(v) for v in values[:8]]
                    idle = ticks[3] + ticks[4]  # idle and iowait
                    total += sum(ticks)
                    busy += sum(ticks) - idle
    except (OSError, ValueError, IndexError):
        return None
    return busy, total


def own_stat() -> list[str] | None:
    """The fields of /proc/self/stat from the state on (the 3rd), or None where there is none."""
    try:  # split after the last ")": the command name in parentheses may hold spaces
        with open("/proc/self/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def own_ticks() -> int | None:
    """This process's CPU time (all its threads), in clock ticks."""
    try:
        fields = own_stat()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (TypeError, ValueError, IndexError):
        return None


@dataclass
class FairThreads:
    """The run's thread count, kept at the cores other work leaves free (module docstring)."""

    most: int  # the thread count the run started with: never more
    cores: list[int] = field(default_factory=allowed_cores)
    threads: int = 0
    others: float = 0.0  # cores kept busy by other processes in the last window
    _last: tuple | None = None

    def look(self) -> bool:
        """Measure the window since the last look and set the threads; True when they change."""
        import torch

        now = (busy_ticks(self.cores), own_ticks(), time.monotonic())
        if self._last is None or None in (now[0], now[1], self._last[0], self._last[1]):
            self._last = now
            return False
        (busy0, total0), own0, _ = self._last
        (busy1, total1), own1, _ = now
        self._last = now
        if total1 <= total0:
            return False
        # shares of all the cores' time: others' busy ticks over the window, in cores
        window = (total1 - total0) / len(self.cores)
        self.others = max(0.0, (busy1 - busy0) - (own1 - own0)) / window
        threads = max(1, min(self.most, len(self.cores) - round(self.others)))
        changed = threads != self.threads
        self.threads = threads
        if changed:
            torch.set_num_threads(threads)
        return changed

    def start(self, window_s: float = 0.3) -> str:
        """The first choice, from a short window before training; the line a run says."""
        self.look()
        time.sleep(window_s)
        self.look()
        if not self.threads:
            self.threads = self.most
        return self.describe()

    def restore(self) -> None:
        """Give the process back the thread count the run started with: a later run in the same
        process (a sweep's next run, a notebook's) takes that count as its own most, so a run that
        ended at one thread beside a passing load would leave every later run at one thread."""
        import torch

        if self.threads and self.threads != self.most:
            torch.set_num_threads(self.most)
        self.threads = self.most

    def describe(self) -> str:
        busy = round(self.others)
        return (f"{self.threads} thread{'s' if self.threads != 1 else ''} of "
                f"{len(self.cores)} core{'s' if len(self.cores) != 1 else ''}"
                + (f" ({busy} busy with other work; re-checked every {EVERY_STEPS} steps)"
                   if busy else f" (re-checked every {EVERY_STEPS} steps)"))
