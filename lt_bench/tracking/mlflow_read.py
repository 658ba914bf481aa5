"""Reading the finished seed runs of an MLflow tracking store in bulk (the records of
``lt_bench.tracking.records``).

From an SQL store (the default SQLite file, PostgreSQL, MySQL): four SQL queries over MLflow's
tables ``runs``, ``tags``, ``latest_metrics`` and ``params`` (only the lt.* tags and the
final/best metrics; the params, the run's config, name a row by its options), with SQLAlchemy
and without importing MLflow, whose import alone takes seconds. Those tables are MLflow's
private schema, so this path is taken only when the store's schema revision
(its ``alembic_version``) is one this code was checked against, ``KNOWN_REVISIONS``. Any other
store, and a tracking server, is read with MLflow's ``search_runs`` page by page.
``group_summary`` is the mean and std over a group's seed runs that the tracker logs on the
group run.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lt_bench.errors import LtBenchError
from lt_bench.tracking.records import METRIC_KEYS, SUMMARY_KEYS, TAG_KEYS, mean, sample_std
from lt_bench.tracking.store import (
    TAG,
    attempts_for,
    client,
    get,
    retry,
    search_all,
    sqlite_path,
    timeout_of,
    tracking_uri,
)

log = logging.getLogger(__name__)

#: MLflow schema revisions whose runs / tags / latest_metrics / params / experiments tables the
#: SQL read was checked against: dc11669786a5 is the head of MLflow 3.17.2. test_tracking_mlflow_read.py
#: fails when the installed MLflow's head is not here; before adding one, check that the
#: migrations since leave the columns read below alone and that the test's two paths agree.
KNOWN_REVISIONS = ("dc11669786a5",)
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

_told: set[str] = set()  # stores already logged as read through the search API


def is_sql(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES


def schema_revision(conn) -> str | None:
    """The store's MLflow schema revision (``alembic_version``), or None when it has none."""
    import sqlalchemy as sa

    try:
        row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
    except sa.exc.SQLAlchemyError:  # no such table: a store MLflow has not migrated
        return None
    return None if row is None else str(row[0])


def read_sql(uri: str, experiment: str | None) -> list[dict] | None:
    """The finished seed runs by SQL, or None when the store's schema revision is not one of
    ``KNOWN_REVISIONS`` (the caller then asks MLflow)."""
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            revision = schema_revision(conn)
            if revision not in KNOWN_REVISIONS:
                if uri not in _told:
                    _told.add(uri)
                    log.info("reading %s through MLflow's search API: its schema revision %s is "
                             "not one the bulk SQL read was checked against (%s)", uri, revision,
                             ", ".join(KNOWN_REVISIONS))
                return None
            return _query(conn, uri, experiment)
    finally:
        engine.dispose()


def _query(conn, uri: str, experiment: str | None) -> list[dict]:
    import sqlalchemy as sa

    exp_filter, params = "", {}
    if experiment:
        row = conn.execute(sa.text("SELECT experiment_id FROM experiments WHERE name = :name"),
                           {"name": experiment}).first()
        if row is None:
            raise LtBenchError(f"experiment {experiment!r} not found in {uri}")
        exp_filter, params = " AND r.experiment_id = :exp", {"exp": row[0]}
    seeds = ("SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
             f"WHERE t.key = '{TAG}role' AND t.value = 'seed' AND r.status = 'FINISHED' "
             f"AND r.lifecycle_stage = 'active'{exp_filter}")
    runs = {}
    for run_id, end, exp in conn.execute(sa.text(
            f"SELECT run_uuid, end_time, experiment_id FROM runs WHERE run_uuid IN ({seeds})"),
            params):
        runs[run_id] = {"run_id": run_id, "end_time": end or 0, "experiment_id": str(exp),
                        "tags": {}, "metrics": {}, "params": {}}
    if not runs:
        return []
    for table, keys, target in (("tags", TAG_KEYS, "tags"),
                                ("latest_metrics", METRIC_KEYS, "metrics"),
                                ("params", None, "params")):
        names = "" if keys is None else "key IN ({}) AND ".format(
            ", ".join(f"'{k}'" for k in keys))  # constants, not user input
        for run_id, key, value in conn.execute(sa.text(
                f"SELECT run_uuid, key, value FROM {table} WHERE {names}"
                f"run_uuid IN ({seeds})"), params):
            if run_id in runs:
                runs[run_id][target][key] = value
    return list(runs.values())


def read_search(uri: str, experiment: str | None, timeout_s: float | None = None) -> list[dict]:
    """The finished seed runs through MLflow's search API (any store, any schema revision)."""
    c = client(uri, timeout_s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if experiment:
            exp = retry(c.get_experiment_by_name, str(experiment), attempts=attempts_for(uri))
            if exp is None:
                raise LtBenchError(f"experiment {experiment!r} not found in {uri}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in retry(c.search_experiments, max_results=50000,
                                                  attempts=attempts_for(uri))]
        out = []
        query = f"tags.`{TAG}role` = 'seed' and attributes.status = 'FINISHED'"
        for i in range(0, len(ids), 100):
            for run in search_all(c, ids[i:i + 100], query):
                out.append({"run_id": run.info.run_id, "end_time": run.info.end_time or 0,
                            "experiment_id": run.info.experiment_id,
                            "tags": {k: v for k, v in run.data.tags.items() if k in TAG_KEYS},
                            "metrics": {k: v for k, v in run.data.metrics.items()
                                        if k in METRIC_KEYS},
                            "params": dict(run.data.params)})
    return out


def load_runs(cfg: Any, experiment: str | None = None) -> list[dict]:
    """The finished seed runs of the store named by ``cfg`` (``tracking.uri`` / workspace), of
    one experiment (by name; default ``tracking.experiment``) or of all."""
    uri = tracking_uri(cfg)
    if (db := sqlite_path(uri)) is not None and not db.exists():
        raise LtBenchError(
            f"no tracking store at {db}: run `lt-bench sweep ...` or `lt-bench train "
            "tracking.tracker=mlflow ...` first, or point workspace= / tracking.uri= at one")
    experiment = experiment or get(cfg, "tracking.experiment")
    if is_sql(uri):
        try:
            runs = retry(read_sql, uri, experiment)
        except LtBenchError:
            raise
        except Exception as exc:
            raise LtBenchError(f"cannot read the tracking store {uri!r}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        if runs is not None:
            return runs
    return read_search(uri, experiment, timeout_of(cfg))


def group_summary(finished: list) -> dict[str, float]:
    """Mean and std (ddof=1) of the summary metrics over finished seed runs, one per seed (the
    latest if a seed was run twice), and their number as ``seeds``."""
    latest: dict[str, Any] = {}
    for run in finished:
        seed = run.data.tags.get(f"{TAG}seed")
        if seed not in latest or run.info.end_time > latest[seed].info.end_time:
            latest[seed] = run
    summary: dict[str, float] = {"seeds": float(len(latest))}
    for which in ("final", "best"):
        for key in SUMMARY_KEYS:
            values = [r.data.metrics[f"{which}/{key}"] for r in latest.values()
                      if f"{which}/{key}" in r.data.metrics]
            if values:
                summary[f"{which}/{key}_mean"] = mean(values)
            if len(values) > 1:
                summary[f"{which}/{key}_std"] = sample_std(values)
    return summary
