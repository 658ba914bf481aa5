"""One owner per run: a run folder is claimed by the process that trains it.

The claim is an exclusive ``flock`` on ``<run folder>/owner.lock``, which also holds the owner's
PID and host for messages. The kernel drops the lock when its process ends, however it ends
(``kill -9`` included), so the run of a dead owner is simply taken over, and resumes from its
checkpoint. A second process that finds the lock held by a live one does not train the run
beside it: ``lt-bench train`` stops with one line, and a sweep skips the run.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from lt_bench.errors import LtBenchError

LOCK = "owner.lock"


class RunOwned(LtBenchError):
    """The run is being trained by another live process."""


class Claim:
    def __init__(self, fd: int | None):
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run(run_dir: Path, enabled: bool = True) -> Claim:
    """Claim ``run_dir`` for this process, or raise ``RunOwned`` naming the live owner."""
    if not enabled:  # the other ranks of a torchrun job: rank 0 holds the claim for them all
        return Claim(None)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunOwned(f"run folder {str(run_dir)!r} is being trained by {owner_of(run_dir)}; "
                       "wait for it to finish (or stop that process: the run resumes from its "
                       "checkpoint when started again)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return Claim(fd)


def owner_of(run_dir: Path) -> str | None:
    """``"pid N on HOST"`` while a live process owns the run, else None."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return path.read_text().strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
