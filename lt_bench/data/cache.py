"""The on-disk cache of decoded images: keyed by source path + size + mtime, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

FORMAT = 1  # bump when the cached layout changes


def stat_key(paths: Iterable[Path], *extra) -> str:
    """A short hash of each path's absolute name, size and mtime (and ``extra``)."""
    parts = []
    for p in paths:
        p = Path(p).resolve()
        st = p.stat()
        parts.append([str(p), st.st_size, st.st_mtime_ns])
    blob = json.dumps([FORMAT, parts, [str(e) for e in extra]], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a cache file is shareable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cached(path: Path, build: Callable[[], dict]) -> dict:
    """The dict saved at ``path``, or ``build()``'s result, saved there atomically first."""
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: rebuild it
            pass
    obj = build()
    atomic_save(obj, path)
    return obj
