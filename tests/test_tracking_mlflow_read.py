"""The bulk SQL read of an MLflow store against MLflow's own search API, on a store written
through the MLflow tracker, and the fence on MLflow's schema revision that guards it."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_tracking import log_run, make_cfg

from lt_bench.errors import LtBenchError
from lt_bench.tracking import mlflow_read
from lt_bench.tracking.mlflow_read import KNOWN_REVISIONS, load_runs, read_search, read_sql
from lt_bench.tracking.store import tracking_uri

ACCS = {("dv", 0): 0.61, ("dv", 1): 0.64, ("dv", 2): 0.60, ("ce", 0): 0.55, ("ce", 1): 0.57}
OTHER = "cifar10_lt-IF200-resnet32"  # the experiment of one more run, at imbalance 200
#: (method, seed, imbalance tag) -> final accuracy of every FINISHED seed run logged below
TRUTH = {**{(m, s, "100"): a for (m, s), a in ACCS.items()}, ("dv", 7, "200"): 0.30}


@pytest.fixture(scope="module")
def store(tmp_path_factory, template_db) -> Path:
    ws = tmp_path_factory.mktemp("read")
    shutil.copy(template_db, ws / "mlflow.db")
    for (method, seed), acc in ACCS.items():
        log_run(make_cfg(ws, method, seed), acc)
    log_run(make_cfg(ws, "ce", 5), 0.9, status="FAILED")  # not finished: not read
    log_run(make_cfg(ws, "ce", 6), 0.9, stop_after=1)  # KILLED: not read
    log_run(make_cfg(ws, "dv", 7, imbalance=200.0), 0.30)
    return ws


def final_accs(runs: list[dict]) -> dict:
    return {(r["tags"]["lt.method"], int(r["tags"]["lt.seed"]), r["tags"]["lt.imbalance"]):
            r["metrics"]["final/acc"] for r in runs}


def by_id(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: r["run_id"])


def test_sql_and_search_api_read_the_same_runs(store):
    uri = tracking_uri({"workspace": str(store)})
    by_sql = read_sql(uri, None)
    assert by_sql is not None, "the SQL path refused the installed MLflow's own store"
    by_api = read_search(uri, None)
    assert by_id(by_sql) == by_id(by_api)
    assert final_accs(by_sql) == pytest.approx(TRUTH)
    dv0 = next(r for r in by_sql if final_accs([r]) == {("dv", 0, "100"): 0.61})
    assert set(dv0["tags"]) == {"lt.method", "lt.dataset", "lt.imbalance", "lt.backbone",
                                "lt.protocol", "lt.cfg_hash", "lt.seed", "lt.role"}
    assert dv0["metrics"] == pytest.approx({  # fake_results: no few-shot class, so no acc_few
        "final/acc": 0.61, "final/acc_many": 0.81, "final/acc_medium": 0.51,
        "best/acc": 0.62, "best/acc_many": 0.82, "best/acc_medium": 0.52})
    one_sql, one_api = read_sql(uri, OTHER), read_search(uri, OTHER)
    assert one_sql == one_api and final_accs(one_sql) == {("dv", 7, "200"): 0.30}


def test_the_installed_mlflow_schema_is_one_the_sql_read_was_checked_against(store):
    import mlflow
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    scripts = Config()
    scripts.set_main_option("script_location",
                            str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
    heads = ScriptDirectory.from_config(scripts).get_heads()
    assert len(heads) == 1 and heads[0] in KNOWN_REVISIONS, (
        f"MLflow {mlflow.__version__} has schema head(s) {heads}, not in KNOWN_REVISIONS "
        f"{KNOWN_REVISIONS} of lt_bench/tracking/mlflow_read.py: read the migrations since "
        "(mlflow/store/db_migrations/versions/) for changes to the experiments, runs, tags and "
        "latest_metrics columns the SQL read uses; if none, add the head and check that "
        "test_sql_and_search_api_read_the_same_runs passes")
    with sqlite3.connect(store / "mlflow.db") as con:  # what read_sql compares
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (heads[0],)


def test_a_revision_the_sql_read_does_not_know_is_read_through_the_search_api(
        store, monkeypatch, caplog):
    monkeypatch.setattr(mlflow_read, "KNOWN_REVISIONS", ("000000000000",))
    monkeypatch.setattr(mlflow_read, "_told", set())
    with caplog.at_level(logging.INFO, logger="lt_bench"):
        runs = load_runs({"workspace": str(store)})
        load_runs({"workspace": str(store)})
    assert final_accs(runs) == pytest.approx(TRUTH)
    told = [r for r in caplog.records if "search API" in r.getMessage()]
    assert len(told) == 1 and "000000000000" in told[0].getMessage()  # once, saying why
    assert read_sql(tracking_uri({"workspace": str(store)}), None) is None


def test_a_store_at_a_revision_no_one_knows_is_not_read_by_sql(store, tmp_path):
    """The SQL read would return rows from a schema it was never checked against; refused, the
    store goes to MLflow, whose own one-line verdict reaches the user."""
    shutil.copy(store / "mlflow.db", tmp_path / "mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        con.execute("UPDATE alembic_version SET version_num = '0123456789ab'")
    with pytest.raises(LtBenchError, match="cannot open the MLflow tracking store.*0123456789ab"):
        load_runs({"workspace": str(tmp_path)})


def test_the_leaderboard_reads_an_sql_store_without_importing_mlflow(store):
    code = ("import sys\nfrom lt_bench.compare.leaderboard import tracked_runs\n"
            f"runs = tracked_runs({{'workspace': {str(store)!r}}})\n"
            "print(len(runs), 'mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=store, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(len(TRUTH)), "False"]
