"""One owner per run: a run folder is claimed by the process that trains it.

The claim is an exclusive ``flock`` on ``<run folder>/owner.lock``, which also holds the owner's
PID and host for messages. The kernel drops the lock when its process ends, however it ends
(``kill -9`` included), so the run of a dead owner is simply taken over, and resumes from its
checkpoint. A second process that finds the lock held by a live one does not train the run
beside it: ``lt-bench train`` stops with one line, and a sweep skips the run.

The lock is the inode we ``flock``, so it cannot be written atomically: it is opened without
following a link, in a run folder reached without following one (``lt_bench.workspace.files``), and a
run folder holding a link is refused before the run trains.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from lt_bench.errors import LtBenchError
from lt_bench.workspace import files as run_files

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
    with run_files.folder(run_dir) as dir_fd:
        run_files.refuse_links(dir_fd, run_dir)
        fd = run_files.open_at(dir_fd, run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
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
    try:  # a link, a folder or no file is no live owner's lock: claim_run says what it is
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:  # the text from the locked inode itself, not the path again
        text = os.read(fd, 200).decode(errors="replace").strip()
        return text.splitlines()[0] if text else "another process"
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
