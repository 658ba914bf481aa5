"""Files in the workspace, written and read back safely: the one writer and the one reader.

**Writing.** A workspace on shared storage is where another user can plant a symbolic link
(``runs/<name> -> /elsewhere``, ``results.json -> ~/.bashrc``). lt_bench makes no links, so every
folder it creates below the workspace and every file it writes there must be a real one. A write
walks from the workspace down, opening each folder with ``O_NOFOLLOW`` relative to the one above
(no window between a check and the write), writes a fresh temporary file beside the target
(``O_CREAT|O_EXCL|O_NOFOLLOW``: a planted name is never opened) and renames it over the target.
A link on the way is refused in one line naming it (``LinkRefused``). The workspace itself and the
folders above it are the user's, and may be links. ``root`` is that workspace: by default the
folder two levels above the file's folder, as a run folder is ``<workspace>/runs/<name>`` and a
trunk's ``<workspace>/trunks/<name>``; a file elsewhere (``sweeps/logs``) passes its ``root``.

**Reading.** ``read_record(path, parse)`` returns ``parse`` of the file's JSON, None when the file
is missing, and raises ``RunFileError`` in one line naming the file and what to do when it is
empty, truncated, of the wrong JSON type or of wrong field types (``check_fields``).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import secrets
import stat
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, TypeVar

from lt_bench.errors import LtBenchError

T = TypeVar("T")
AGAIN = "delete it, or pass resume=false to train the run again"


class RunFileError(LtBenchError):
    """A file in the workspace that lt_bench cannot use: corrupt, a folder, or a link."""


class LinkRefused(RunFileError):
    """A symbolic link where lt_bench writes (or reads) a file or folder of its own."""


def refused(link: Path) -> LinkRefused:
    return LinkRefused(f"{str(link)!r} is a symbolic link, which lt-bench did not make: it never "
                       "writes through a link in the workspace (another user may have planted "
                       "it); remove the link and start again")


def corrupt(path: Path, what: str, fix: str = AGAIN) -> RunFileError:
    what = (str(what).strip().splitlines() or ["unreadable"])[0][:200]
    return RunFileError(f"run file {str(path)!r} is corrupt ({what}): {fix}")


def not_a_folder(path: Path) -> RunFileError:
    return RunFileError(f"{str(path)!r} is a file where lt-bench keeps a folder: delete or move "
                        "it, and start again")


def run_root(folder: Path) -> Path:
    """The workspace of a run (or trunk) folder ``<workspace>/runs/<name>``."""
    return Path(folder).parent.parent


# -- writing ------------------------------------------------------------------------------------
@contextmanager
def folder(path: Path, root: Path | None = None) -> Iterator[int]:
    """A descriptor of the folder ``path``, each folder below ``root`` created if missing and
    opened without following a link; closed on exit."""
    path = Path(path)
    root = run_root(path) if root is None else Path(root)
    parts = path.relative_to(root).parts
    if ".." in parts:
        raise LtBenchError(f"{str(path)!r} leaves its workspace {str(root)!r} ('..')")
    root.mkdir(parents=True, exist_ok=True)  # the user's: it may be a link
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        where = root
        for part in parts:
            where = where / part
            with suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except NotADirectoryError:  # O_NOFOLLOW|O_DIRECTORY says the same for a link
                raise refused(where) if _is_link(fd, part) else not_a_folder(where) from None
            os.close(fd)
            fd = below
        yield fd
    finally:
        os.close(fd)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def open_at(dir_fd: int, path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` of ``path``'s name in the folder ``dir_fd``, never through a link."""
    try:
        return os.open(Path(path).name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(path, exc) or exc from None


def _refusal(path: Path, exc: OSError) -> RunFileError | None:
    if exc.errno == errno.ELOOP:
        return refused(path)
    if exc.errno == errno.EISDIR:
        return corrupt(path, "a folder, not a file", "delete it and start again")
    return None


def refuse_links(dir_fd: int, path: Path) -> None:
    """Refuse a folder (``dir_fd``, at ``path``) that holds a link: found before a run trains,
    not when it writes its results."""
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if entry.is_symlink():
                raise refused(Path(path) / entry.name)


@contextmanager
def atomic_writer(path: Path, root: Path | None = None, fsync: bool = False) -> Iterator[IO]:
    """A binary file to write ``path``'s new content into: a fresh temporary beside it, renamed
    over ``path`` on a clean exit, removed on an error. A reader sees the old file or the new."""
    path = Path(path)
    with folder(path.parent, root) as dir_fd:
        _check_target(dir_fd, path)
        tmp, fd = _fresh_temporary(dir_fd, path)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


def _check_target(dir_fd: int, path: Path) -> None:
    """The rename would replace a link, not follow it; but a link there is not lt_bench's."""
    try:
        mode = os.lstat(path.name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise refused(path)
    if stat.S_ISDIR(mode):
        raise _refusal(path, IsADirectoryError(errno.EISDIR, "a folder"))


def _fresh_temporary(dir_fd: int, path: Path) -> tuple[str, int]:
    """``.<name>.<pid>.<random>.tmp``, created here and now (a planted name is not opened)."""
    for _ in range(20):
        name = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            return name, open_at(dir_fd, path.with_name(name),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:  # O_EXCL: a link by that name is not followed either
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def write_file(path: Path, data: str | bytes, root: Path | None = None,
               fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, never through a link (see the module's note)."""
    with atomic_writer(path, root, fsync) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def open_log(path: Path, root: Path | None = None, append: bool = False) -> IO[str]:
    """A text file to stream a log into (truncated, or appended to), never through a link."""
    path = Path(path)
    with folder(path.parent, root) as dir_fd:
        return open(path, "a" if append else "w",
                    opener=lambda _name, flags: open_at(dir_fd, path, flags))


# -- reading ------------------------------------------------------------------------------------
def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; None when it is missing; ``RunFileError`` when it cannot be used."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _refusal(path, exc) or corrupt(path, f"cannot be read: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise _refusal(path, exc) or corrupt(path, f"cannot be read: {exc.strerror}") from None
    if not text.strip():
        raise corrupt(path, "empty")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise corrupt(path, f"not JSON: {exc}") from None


def read_record(path: Path, parse: Callable[[Any], T]) -> T | None:
    """``parse(JSON of path)``; None when the file is missing. A ``ValueError`` or ``TypeError``
    of ``parse`` (what is wrong) becomes one line naming the file."""
    data = read_json(path)
    if data is None:
        return None
    try:
        return parse(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise corrupt(path, str(exc)) from None


def json_object(data: Any) -> dict:
    """``data`` when it is a JSON object; ValueError naming what it is instead."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    return data


def check_fields(values: dict, hints: dict[str, Any], required: tuple = (),
                 prefix: str = "") -> None:
    """Raise ValueError naming the first key of ``values`` whose value is not of its type in
    ``hints`` (keys without a hint are not checked), or the first ``required`` key missing."""
    for key in required:
        if key not in values:
            raise ValueError(f"no {prefix + key!r}")
    for key, hint in hints.items():
        if key in values and not conforms(values[key], hint):
            shown = repr(values[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ValueError(f"{prefix + key!r} is the {type(values[key]).__name__} {shown}, not "
                             f"{type_name(hint)}")


@functools.cache
def field_hints(cls: type) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A dataclass's field types and its fields without a default."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    return ({f.name: hints[f.name] for f in fields},
            tuple(f.name for f in fields if f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING))


JSON_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false",
              type(None): "null", dict: "an object"}


def type_name(hint: Any) -> str:
    """``float | None`` as "a number or null", in the words of JSON."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(map(type_name, args))
    if origin is list:
        if not args:
            return "a list"
        words = type_name(args[0]).split(" ")[1:]  # "an integer" -> ["integer"]
        return "a list of " + " ".join([words[0] + "s", *words[1:]])
    return JSON_NAMES.get(hint, "an object" if dataclasses.is_dataclass(hint) else str(hint))


def conforms(value: Any, hint: Any, deep: bool = True) -> bool:
    """Whether a JSON value is of type ``hint`` (an int is a float; a bool is neither). The
    items of a list of lists are checked to be lists, not item by item: an ImageNet-LT run's
    weights of every epoch are 90,000 numbers, and a leaderboard reads thousands of runs."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a, deep) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and (not args or not deep
                                            or all(conforms(v, args[0], False) for v in value))
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, origin or hint)
