"""Where runs are recorded: the MLflow tracking URI, the artifact location, experiments, retries.

The default store is embedded: ``sqlite:///<workspace>/mlflow.db`` with artifacts under
``<workspace>/mlartifacts``. ``tracking.uri`` (or ``MLFLOW_TRACKING_URI``) selects any other
store, e.g. ``http://host:5000`` for a shared ``mlflow server``.

Several processes creating the same fresh SQLite store at once crash inside MLflow (its schema
migration is not safe to race: "table ... already exists"), so creating the store and an
experiment happens under a file lock next to the database, and every call to the store is retried
a bounded number of times with jittered back-off when the database is busy. A call to a tracking
server is tried by MLflow alone, within ``tracking.timeout_s`` (``http_budget``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from lt_bench.config import TrackingConfig
from lt_bench.errors import LtBenchError
from lt_bench.tracking import http_budget
from lt_bench.tracking.http_budget import _user_http, bound_http, left_of
from lt_bench.tracking.ui_view import experiment_tags

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
TAG = "lt."  # prefix of lt-bench's own run tags

T = TypeVar("T")

#: messages of errors that mean "try again": SQLite/PostgreSQL contention, a racing creator
_TRANSIENT = ("database is locked", "database table is locked", "busy", "already exists",
              "unique constraint", "duplicate key", "deadlock", "could not serialize",
              "temporarily unavailable", "connection reset", "connection refused",
              "too many requests", "503")


def get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg['a']['b']`` for ``'a.b'`` on a dict or DictConfig, or ``default``."""
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError, IndexError):
            return default
        if node is None:
            return default
    return node


def workspace(cfg: Any) -> Path:
    return Path(str(get(cfg, "workspace", "./workspace"))).expanduser().resolve()


def tracking_uri(cfg: Any) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the workspace's SQLite database."""
    uri = get(cfg, "tracking.uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        uri = str(uri)
        if "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
            raise LtBenchError(
                f"config key 'tracking.uri' = {uri!r} is not a URI: give e.g. "
                f"sqlite:///{Path(uri).expanduser().resolve()}/mlflow.db or http://host:5000"
            )
        return uri
    return sqlite_uri(workspace(cfg) / DB_NAME)


def sqlite_uri(db: Path) -> str:
    """The URI of a database file, percent-escaped: SQLAlchemy decodes ``%20`` in a path and
    cuts it at ``?``, so a workspace named so would open another file."""
    from urllib.parse import quote

    return f"sqlite:///{quote(str(db), safe='/')}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    from urllib.parse import unquote

    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///"):].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def check_sqlite(uri: str) -> None:
    """Open a local database file once, directly: a path SQLite cannot open (a name too long,
    a folder that cannot be made) fails here in one line, not after MLflow's minutes of
    retrying its engine."""
    import sqlite3

    db = sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(db, timeout=5).close()
    except (OSError, sqlite3.Error) as exc:
        what = getattr(exc, "strerror", None) or str(exc)
        raise LtBenchError(f"cannot open the MLflow store {str(db)!r}: {what}; choose a "
                           "shorter or writable workspace, or set tracking.uri") from None


def is_remote(uri: str) -> bool:
    """A tracking server (which decides where artifacts go) rather than a database."""
    return uri.split(":", 1)[0] in ("http", "https", "databricks")


def artifact_root(cfg: Any, uri: str) -> str | None:
    """Where new experiments keep their artifacts: inside the workspace for a database store
    (the default), the server's choice for a tracking server."""
    if is_remote(uri):
        return None
    return (workspace(cfg) / ARTIFACTS_DIR).as_uri()


def setting_experiment(cfg: Any) -> str:
    """``tracking.experiment``, else one experiment per benchmark setting
    (``cifar10_lt-IF100-resnet32``)."""
    name = get(cfg, "tracking.experiment")
    if name:
        return str(name)
    dataset = get(cfg, "dataset", "dataset")
    backbone = get(cfg, "backbone.name", "backbone")
    imbalance = get(cfg, "imbalance")
    if imbalance is None:
        return f"{dataset}-{backbone}"
    return f"{dataset}-IF{imbalance_tag(imbalance)}-{backbone}"


def imbalance_tag(value: Any) -> str:
    """The imbalance factor as the ``lt.imbalance`` tag, experiment names and the leaderboard
    write it: ``"none"`` for a naturally long-tailed set, else ``%g`` (``100.0`` → ``"100"``), so
    that ``imbalance=100`` and ``imbalance=100.0`` are one setting. Raises ValueError on text
    that is not a number."""
    return "none" if value is None else f"{float(value):g}"


def is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


#: how many times this process retried a store call (benchmarks/store_load.py reports it)
retries_done = 0


def retry(fn: Callable[..., T], *args, attempts: int = 10, base_s: float = 0.05,
          max_s: float = 3.0, **kwargs) -> T:
    """``fn(*args, **kwargs)``, retried on transient store errors with jittered exponential
    back-off (at most ``attempts`` tries); any other error is raised at once, and so is a server
    that did not answer: MLflow's own HTTP retries (``bound_http``) have spent its time."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts or not is_transient(exc) or unreachable(exc):
                raise
            global retries_done
            retries_done += 1
            delay = min(max_s, base_s * 2 ** attempt)
            time.sleep(delay * (0.5 + random.random()))
    raise AssertionError("unreachable")


_held: dict[str, int] = {}


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock across processes for a local SQLite store (a no-op otherwise);
    re-entrant within a process."""
    db = sqlite_path(uri)
    if db is None or _held.get(str(db)):
        _held[str(db)] = _held.get(str(db), 0) + 1
        try:
            yield
        finally:
            _held[str(db)] -= 1
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held[str(db)] = 1
        try:
            yield
        finally:
            _held[str(db)] = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


_ready: set[str] = set()


def timeout_of(cfg: Any) -> float:
    """``tracking.timeout_s``, the schema's default for a config without it; one line if it is
    not a positive number of seconds."""
    value = get(cfg, "tracking.timeout_s", TrackingConfig.timeout_s)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds >= 1:  # MLflow's HTTP timeout is whole seconds
        raise LtBenchError(f"config key 'tracking.timeout_s' = {value!r} is not a number of "
                           "seconds of at least 1: give e.g. tracking.timeout_s=30")
    return seconds


def attempts_for(uri: str) -> int:
    """Our tries of one store call: a server's calls already carry MLflow's bounded HTTP retries
    (``bound_http``), and ours on top would multiply the wait past ``tracking.timeout_s``. A call
    that races other processes (``ensure_experiment``) keeps the default, as the server's answer
    "already exists" is worth another try."""
    return 1 if uri.startswith(("http://", "https://")) else 10


def unreachable(exc: BaseException) -> bool:
    """True when the store did not answer (refused, reset, timed out, or still 5xx after MLflow's
    own retries), False when it answered that the request is wrong. MLflow wraps the transport
    error in an ``MlflowException`` whose context is the ``requests`` error."""
    import requests

    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        if isinstance(node, (requests.RequestException, ConnectionError, TimeoutError)):
            return True
        seen.add(id(node))
        node = node.__cause__ or node.__context__
    return False


def gone(exc: BaseException) -> bool:
    """MLflow's answer to a write on a deleted run."""
    return "must be in the 'active' state" in str(exc)


def unless_gone(fn: Callable[..., Any], *args, **kwargs) -> None:
    """``fn(*args, **kwargs)``, where a run that a racing process deleted is no error."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        if not gone(exc):
            raise


def client(uri: str, timeout_s: float | None = None):
    """An ``MlflowClient`` whose store exists (created under the lock on first use). A server's
    calls each give up within ``timeout_s`` (``tracking.timeout_s``; None: as set before, else
    the default)."""
    if timeout_s is not None or not _user_http:
        seconds = 30.0 if timeout_s is None else timeout_s
        bound_http(left_of(seconds), said=seconds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow import MlflowClient

    if uri in _ready:
        return MlflowClient(tracking_uri=uri)
    check_sqlite(uri)
    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database
        logging.getLogger(name).setLevel(logging.WARNING)  # tables": not the user's business
    try:
        with store_lock(uri):  # MlflowClient() itself may create (migrate) the store
            c = retry(MlflowClient, tracking_uri=uri, attempts=attempts_for(uri))
            retry(c.search_experiments, max_results=1, attempts=attempts_for(uri))
    except Exception as exc:
        raise LtBenchError(f"cannot open the MLflow tracking store {uri!r} (config key "
                           f"'tracking.uri' or $MLFLOW_TRACKING_URI): {why(exc)}") from exc
    _ready.add(uri)
    return c


def reason(exc: BaseException) -> str:
    """A few words on why a server did not answer, for a one-line message."""
    text = str(exc).lower()
    for marker, words in (("refused", "connection refused"), ("timed out", "timed out"),
                          ("timeout", "timed out"), ("reset", "connection reset"),
                          ("name or service not known", "unknown host"),
                          ("too many", "it keeps answering with server errors")):
        if marker in text:
            return words
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else \
        type(exc).__name__


def why(exc: BaseException) -> str:
    """The cause of a failed store call in a few words: a server that did not answer in time
    names the key that bounds the wait, not MLflow's environment variable."""
    if unreachable(exc):
        words = reason(exc)
        if words == "timed out":
            return (f"it did not answer within tracking.timeout_s={http_budget._bound_s:g} s: "
                    "check the "
                    "server, or raise the key for a slow one")
        return words
    return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def search_all(c, experiment_ids: list[str], filter_string: str, page: int = 1000) -> list:
    """Every run matching ``filter_string`` (``search_runs`` page by page)."""
    out, token = [], None
    while True:
        batch = retry(c.search_runs, experiment_ids, filter_string, max_results=page,
                      page_token=token, attempts=attempts_for(c.tracking_uri))
        out.extend(batch)
        token = batch.token
        if not token:
            return out


def ensure_experiment(c, name: str, artifact_location: str | None, uri: str = "") -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) when missing and
    restored when deleted; either way with the tags that open it on its runs in MLflow's UI
    (``ui_view.experiment_tags``), where it does not have its own already."""
    wanted = {f"{TAG}kind": "benchmark-setting", **experiment_tags()}

    def get_or_create() -> tuple[str, dict]:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            return c.create_experiment(name, artifact_location=artifact_location,
                                       tags=wanted), {}
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id, {k: v for k, v in wanted.items() if k not in exp.tags}

    with store_lock(uri):  # a server's racing creators answer "already exists": tried again
        exp_id, missing = retry(get_or_create)
        try:  # an experiment made before lt-bench tagged them
            for key, value in missing.items():
                retry(c.set_experiment_tag, exp_id, key, value, attempts=attempts_for(uri))
        except Exception as exc:  # the view is a convenience: it never stops a run
            log.warning("experiment %r keeps MLflow's default view: %s", name, exc)
    return exp_id


def prepare_store(cfg: Any) -> tuple[str, str]:
    """Create the store and the setting's experiment before workers start; return
    ``(tracking_uri, experiment_id)``. Safe to call from several processes."""
    uri = tracking_uri(cfg)
    c = client(uri, timeout_of(cfg))
    return uri, ensure_experiment(c, setting_experiment(cfg), artifact_root(cfg, uri), uri)
