"""How a run stops on a signal: SIGTERM as Ctrl-C, and the moments no signal may split.

A run's record lives in two places, its folder and the tracker. Two stretches must happen whole
or not at all: creating the tracker's run and entering the code that closes it (else a run stays
RUNNING in MLflow for ever), and writing ``results.json`` then closing the tracker's run (else
the folder says FINISHED and the store says RUNNING, and a sweep skips the run for good).
``held()`` defers SIGINT and SIGTERM over such a stretch and delivers them once it is over.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a dying sweep's workers, ``kill``, a batch scheduler) stops the run as Ctrl-C
    does, so the tracker records it KILLED; by default Python would exit without a word and
    leave it RUNNING forever."""
    # Only where nothing else handles it: a Ray worker's own handler must still shut it down.
    if not _main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def held() -> Iterator[None]:
    """Defer SIGINT and SIGTERM until the block is over, then deliver them to the handlers
    that were there before (``KeyboardInterrupt`` for the run's own). Signals only reach the
    main thread, so elsewhere this does nothing."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(caught):  # once each, in the order they came
            signal.raise_signal(signum)
