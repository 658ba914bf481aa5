"""A sweep through a real MLflow tracking server (issue: beyond one machine): the runs, their
metrics, artifacts and group/seed layout arrive through the server, and the leaderboard read
through it equals the one read from the run folders."""

from __future__ import annotations

import pytest
from test_tracking_server import server  # noqa: F401  (the fixture: a real `mlflow server`)

from lt_bench.config import load_config
from lt_bench.leaderboard import leaderboard
from lt_bench.sweep import run_sweep

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.epochs=1", "protocol.batch_size=64",
        "precision=fp32", "methods=[ce,dv]", "seeds=2", "jobs=2"]


@pytest.mark.slow  # a server and four real (tiny) runs in worker processes
def test_a_sweep_through_a_tracking_server(tmp_path, server):  # noqa: F811
    from mlflow.tracking import MlflowClient

    ws = tmp_path / "ws"
    lines: list[str] = []
    summary = run_sweep([*TINY, f"workspace={ws}", "tracking.tracker=mlflow",
                         f"tracking.uri={server.uri}"], out=lines.append)
    assert len(summary["finished"]) == 4 and not summary["failed"], lines

    c = MlflowClient(server.uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    seeds = c.search_runs(experiments, "tags.`lt.role` = 'seed'")
    groups = {r.info.run_id: r for r in c.search_runs(experiments, "tags.`lt.role` = 'group'")}
    assert len(seeds) == 4 and all(r.info.status == "FINISHED" for r in seeds)
    assert {r.data.tags["lt.method"] for r in groups.values()} == {"ce", "dv"}
    for run in seeds:
        parent = groups[run.data.tags["mlflow.parentRunId"]]  # the group of its method
        assert parent.data.tags["lt.method"] == run.data.tags["lt.method"]
        history = c.get_metric_history(run.info.run_id, "test/acc")
        assert [m.step for m in history] == [0]
        assert history[0].value == pytest.approx(run.data.metrics["final/acc"])
        names = {a.path for a in c.list_artifacts(run.info.run_id)}
        plots = {a.path for a in c.list_artifacts(run.info.run_id, "plots")}
        assert {"results.json", "per_class_accuracy.csv"} <= names
        assert "plots/per_class_accuracy.png" in plots  # proxied through the server

    # the leaderboard read through the server equals the one read from the run folders
    through = leaderboard(load_config([], [f"workspace={ws}", f"tracking.uri={server.uri}"]))
    folders = leaderboard(load_config([], [f"workspace={ws}", "tracking.tracker=local"]))
    assert [(r.method, r.n, r.mean, r.std) for r in through] == \
        [(r.method, r.n, r.mean, r.std) for r in folders]
    assert {r.method: r.n for r in through} == {"ce": 2, "dv": 2}
