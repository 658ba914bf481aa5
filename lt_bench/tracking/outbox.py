"""Metrics on their way to a tracking server that may be away: kept, and sent in order when it
answers again.

A server lost mid-run must neither stop nor stall training (hours of GPU time against a
dashboard). Every epoch's metrics join a queue, and the queue goes out as one batch with each
metric's original step and timestamp: a batch sent again after its answer was lost is no
duplicate (MLflow skips a metric it holds with the same key, step, timestamp and value). After a
failed send the server is left alone until a back-off deadline (``FIRST_BACKOFF_S``, doubling up
to ``MAX_BACKOFF_S``), so while it is away an epoch costs either nothing or one short attempt
(``store.METRIC_BOUNDS``: one retry, 5 s to connect and to answer).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lt_bench.tracking.http_budget import METRIC_BOUNDS, http_bounds
from lt_bench.tracking.store import reason, unreachable

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 10.0
MAX_BACKOFF_S = 300.0
#: the pause between the attempts of ``drain`` (doubling up to the last one)
DRAIN_PAUSE_S = (1.0, 8.0)


@dataclass
class Entry:
    step: int
    metrics: list  # mlflow.entities.Metric
    summary: bool = False


@dataclass
class Outbox:
    """The metrics of one run not yet acknowledged by the server at ``uri``; ``send`` logs a
    list of ``Metric``s (raising when the server does not take them)."""

    uri: str
    send: Callable[[list], None]
    clock: Callable[[], float] = time.monotonic
    pending: list[Entry] = field(default_factory=list)
    backoff_s: float = 0.0  # 0 while the server answers
    retry_at: float = 0.0
    last_error: BaseException | None = None

    @property
    def down(self) -> bool:
        return self.backoff_s > 0

    def queue(self, metrics: list, step: int, summary: bool = False) -> None:
        if metrics:
            self.pending.append(Entry(int(step), list(metrics), summary))

    def put(self, metrics: list, step: int) -> None:
        """Queue an epoch's ``metrics``, then send the queue unless the server is within its
        back-off."""
        self.queue(metrics, step)
        if self.pending and not (self.down and self.clock() < self.retry_at):
            self.flush()

    def flush(self, announce: bool = True) -> bool:
        """One bounded attempt to send the queue; True when nothing is left in it. ``announce``:
        the first failure of an outage says so in a line."""
        if not self.pending:
            return True
        batch = list(self.pending)
        try:
            with http_bounds(METRIC_BOUNDS), quiet("urllib3.connectionpool"):
                self.send([m for entry in batch for m in entry.metrics])
        except Exception as exc:
            if not unreachable(exc):
                # the server answered no: the same batch would be refused again
                del self.pending[:len(batch)]
                self.backoff_s = 0.0  # it answered
                log.warning("lt-bench: MLflow refused %s: %s", describe(batch),
                            str(exc).splitlines()[0][:300])
                return True
            self._failed(exc, announce)
            return False
        del self.pending[:len(batch)]
        if self.down:
            log.info("lt-bench: the MLflow server %s answers again; %s are in the store now",
                     self.uri, describe(batch))
        self.backoff_s = 0.0
        return True

    def drain(self, wait_s: float) -> bool:
        """Send the queue, trying again with growing pauses for up to ``wait_s`` seconds while the
        server does not answer (the back-off deadline is ignored: this is the last chance). Quiet:
        the caller says what could not be sent."""
        deadline = self.clock() + wait_s
        pause, longest = DRAIN_PAUSE_S
        while not self.flush(announce=False):
            if self.clock() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, longest)
        return True

    def _failed(self, exc: BaseException, announce: bool) -> None:
        first = not self.down
        self.last_error = exc
        self.backoff_s = FIRST_BACKOFF_S if first else min(MAX_BACKOFF_S, self.backoff_s * 2)
        self.retry_at = self.clock() + self.backoff_s
        if first and announce:  # one line per outage, not one per epoch
            steps = [e.step for e in self.pending if not e.summary]
            what = (f"the metrics from step {steps[0]} on" if steps
                    else "the final summary metrics")
            log.warning("lt-bench: the MLflow server %s does not answer (%s); training goes on, "
                        "and %s wait here to be sent when it is back", self.uri, reason(exc), what)
        else:
            log.debug("lt-bench: the MLflow server %s is still away; next try in %.0f s",
                      self.uri, self.backoff_s)


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """``logger``'s warnings off inside the block: urllib3 says "Retrying ..." on every attempt,
    where the outage deserves one line (``Outbox._failed``)."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def describe(entries: list[Entry]) -> str:
    """``steps 2-4, 6 of lr, test/acc, train/loss and the final summary``."""
    steps = sorted({e.step for e in entries if not e.summary})
    keys = sorted({m.key for e in entries if not e.summary for m in e.metrics})
    parts = []
    if steps:
        parts.append(f"step{'s' if len(steps) > 1 else ''} {spans(steps)} of {', '.join(keys)}")
    if any(e.summary for e in entries):
        parts.append("the final summary metrics")
    return " and ".join(parts) or "no metrics"


def spans(numbers: list[int]) -> str:
    """``[2, 3, 4, 6]`` → ``"2-4, 6"``."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)
