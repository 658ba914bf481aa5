"""Shared machinery of the device check: the clock and budget, the report (rewritten atomically
after every step), the combined log and the child processes (each in its own process group, so
that a kill takes its compile workers and data workers with it).

The parent process never touches CUDA: everything that runs on the device runs in a child, so a
crash, a hang or a poisoned CUDA context costs one item, not the rest of the check.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shlex
import signal
import subprocess
import threading
import time
import traceback
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository: benchmarks/ is a package in it

#: a line a worker prints to hand a JSON record to the parent
MARK = "@@device_check "
#: share of the budget per timed section; each deadline is cumulative, so the time a section
#: leaves unused passes on to the next, and the long runs get whatever is left at the end
SHARES = (("correctness", 0.30), ("speed", 0.25), ("concurrency", 0.15))
END_MARGIN_S = 20.0


class UserError(Exception):
    """A mistake in how the check was called: one line on stderr, no traceback."""


class Clock:
    def __init__(self, budget_s: float):
        self.t0 = time.monotonic()
        self.budget_s = float(budget_s)
        self.deadlines: dict[str, float] = {}
        at = 0.0
        for name, share in SHARES:
            at += share * self.budget_s
            self.deadlines[name] = self.t0 + at
        self.deadlines["long_runs"] = self.t0 + max(at, self.budget_s - END_MARGIN_S)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self, section: str) -> float:
        return self.deadlines[section] - time.monotonic()

    @staticmethod
    def wall(deadline: float) -> float:
        """A monotonic deadline as ``time.time()``, which other processes can compare with."""
        return time.time() + (deadline - time.monotonic())


class CombinedLog:
    """One log for every child (at most a few files come back from the device machine): each
    line prefixed with the run's name, since concurrent runs interleave. Capped, because a file
    over 16 MiB does not come back at all."""

    LIMIT = 12 * 2**20

    def __init__(self, path: Path, clock: Clock):
        self.clock = clock
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8", buffering=1)
        self.written = 0

    def _write(self, text: str) -> None:
        with self.lock:
            if self.written > self.LIMIT:
                return
            self.written += len(text)
            if self.written > self.LIMIT:
                text = "===== the log reached its size limit; later lines are left out\n"
            self.file.write(text)

    def line(self, name: str, text: str) -> None:
        self._write(f"[{name}] {text[:4000]}\n")

    def header(self, text: str) -> None:
        self._write(f"===== [{self.clock.elapsed():7.1f} s] {text}\n")


class Progress:
    """Progress lines on stdout (flushed at once: the device harness may cut us off) and in the
    combined log."""

    def __init__(self, clock: Clock, log: CombinedLog | None = None):
        self.clock, self.log = clock, log

    def __call__(self, message: str) -> None:
        text = f"[{self.clock.elapsed():7.1f} s] {message}"
        print(text, flush=True)
        if self.log is not None:
            self.log.line("main", message)


# -- child processes -----------------------------------------------------------------------------
_LIVE: set[Child] = set()


class Child:
    """A subprocess in its own session whose merged stdout/stderr is pumped by a thread into the
    combined log; ``records`` collects the JSON lines it marks with ``MARK``."""

    def __init__(self, name: str, cmd: list[str], log: CombinedLog, *, env=None, cwd=None):
        self.name, self.cmd, self.log = name, [str(c) for c in cmd], log
        self.lines: deque[str] = deque(maxlen=3000)
        self.records: list[dict] = []
        self.kill_reason: str | None = None
        log.header(f"start {name}: {shlex.join(self.cmd)}")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)
        self.ended: float | None = None
        _LIVE.add(self)
        self._pump_thread = threading.Thread(target=self._pump, name=f"pump-{name}", daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        pending = b""
        stream = self.proc.stdout
        while True:
            chunk = stream.read1(1 << 16)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self._take(raw)
            # a progress bar redraws with \r and no newline for a whole epoch: only the text
            # after the last \r would ever be shown, so only that is kept
            cut = pending.rfind(b"\r")
            if cut > 0:
                pending = pending[cut:]
        if pending:
            self._take(pending)

    def _take(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r").split("\r")[-1].rstrip()
        if text.startswith(MARK):
            try:
                self.records.append(json.loads(text[len(MARK):]))
            except ValueError:
                pass
        if text:
            self.lines.append(text)
            self.log.line(self.name, text)

    def running(self) -> bool:
        return self.proc.poll() is None

    def follow(self, deadline: float, on_record, poll: float = 0.2) -> int:
        """Wait like ``wait``, handing each new record to ``on_record`` as it arrives, so that
        the caller can save the report after every measured item."""
        seen = 0
        while True:
            done = self.proc.poll() is not None
            if done:
                self._finish()  # joins the pump, so every record is in
            while seen < len(self.records):
                on_record(self.records[seen])
                seen += 1
            if done:
                return self.proc.returncode
            if time.monotonic() >= deadline:
                self.kill("section deadline")
                continue
            time.sleep(poll)

    def wait(self, deadline: float | None = None, reason: str = "deadline") -> int:
        """The exit status; at the monotonic ``deadline`` the process group is killed first."""
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(reason)
        return self._finish()

    def kill(self, reason: str) -> None:
        if self.proc.poll() is None and self.kill_reason is None:
            self.kill_reason = reason
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._finish()

    def _finish(self) -> int:
        rc = self.proc.wait()
        if self.ended is None:
            self.ended = time.monotonic()
            self._pump_thread.join(timeout=5)
            self.log.header(f"end {self.name}: exit {rc}"
                            + (f" (killed: {self.kill_reason})" if self.kill_reason else ""))
        _LIVE.discard(self)
        return rc

    @property
    def wall_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def tail(self, n: int = 25) -> list[str]:
        return [line for line in self.lines if not line.startswith(MARK)][-n:]

    def output(self) -> str:
        return "\n".join(self.lines)


def kill_all_children() -> None:
    for child in list(_LIVE):
        child.kill("the check ended")


atexit.register(kill_all_children)


def child_env(extra: dict | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # the check's workers run as ``python -m benchmarks.device_check`` from other folders: the
    # repository goes last on their path, after an installed lt_bench (the device's wheel)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


# -- the report ----------------------------------------------------------------------------------
def clean(value):
    """JSON-safe: NaN and infinities become strings (json.dumps would write invalid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def error_record(exc: BaseException, where: str) -> dict:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    tail = "".join(lines).rstrip().splitlines()[-12:]
    return {"where": where, "type": type(exc).__name__, "message": str(exc)[:2000],
            "traceback": tail}


class Report:
    def __init__(self, out_dir: Path, data: dict, clock: Clock, render):
        self.out_dir, self.data, self.clock, self.render = out_dir, data, clock, render

    def section(self, name: str) -> dict:
        return self.data["sections"].setdefault(name, {})

    def error(self, exc: BaseException, where: str) -> dict:
        record = error_record(exc, where)
        self.data["errors"].append(record)
        return record

    def failure(self, where: str, message: str, tail=None) -> None:
        """A failure in a child (a worker's item, a run's exit): listed with the exceptions,
        so that one look at ``errors`` finds every problem."""
        self.data["errors"].append({"where": where, "type": "child failure",
                                    "message": str(message)[:2000], "traceback": tail or []})

    def save(self) -> None:
        """Rewrite both files; a failure to render the summary must not lose the JSON."""
        self.data["elapsed_s"] = round(self.clock.elapsed(), 1)
        data = clean(self.data)
        atomic_write(self.out_dir / "device_check.json", json.dumps(data, indent=1))
        try:
            text = self.render(data)
        except Exception as exc:  # the JSON is the record; the summary is a convenience
            text = f"summary could not be rendered ({type(exc).__name__}: {exc}); see the JSON\n"
        atomic_write(self.out_dir / "device_check.md", text)


def run_section(report: Report, name: str, say, fn, *args) -> None:
    """Run one section; an exception is recorded (type, message, traceback tail) and the check
    goes on with the next section."""
    section = report.section(name)
    started = report.clock.elapsed()
    section.setdefault("status", "running")
    say(f"section {name}: start")
    try:
        fn(section, *args)
        if section.get("status") == "running":
            section["status"] = "ok"
    except Exception as exc:
        section["status"] = "error"
        section["error"] = report.error(exc, name)
        say(f"section {name}: ERROR {type(exc).__name__}: {exc}")
    finally:
        section["elapsed_s"] = round(report.clock.elapsed() - started, 1)
        report.save()
    say(f"section {name}: {section['status']} in {section['elapsed_s']:.1f} s")
