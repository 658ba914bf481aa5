"""Sixteen runs logging at once into one SQLite file and into one tracking server lose nothing
(benchmarks/store_load.py has the figures at a larger size)."""

from __future__ import annotations

import shutil

import pytest
from test_tracking_server import server  # noqa: F401  (the fixture: a real `mlflow server`)

from benchmarks.store_load import KEYS, load


def assert_nothing_lost(report: dict, runs: int, epochs: int) -> None:
    assert not report["failed_processes"], report["failed_processes"][0]
    assert report["runs_found"] == report["finished"] == report["summaries_found"] == runs
    assert report["epoch_metrics_found"] == report["epoch_metrics_written"] == \
        runs * epochs * len(KEYS)


@pytest.mark.slow  # 16 processes importing MLflow at once
def test_sixteen_runs_into_one_sqlite_file(tmp_path, template_db):
    (tmp_path / "ws").mkdir()
    shutil.copy(template_db, tmp_path / "ws" / "mlflow.db")
    assert_nothing_lost(load(tmp_path / "ws", None, runs=16, epochs=3), 16, 3)


@pytest.mark.slow  # a server and 16 processes importing MLflow at once
def test_sixteen_runs_into_one_tracking_server(tmp_path, server):  # noqa: F811
    assert_nothing_lost(load(tmp_path / "ws", server.uri, runs=16, epochs=3), 16, 3)
