"""A sweep through a real MLflow tracking server (issue: beyond one machine): the runs, their
metrics, artifacts and group/seed layout arrive through the server, and the leaderboard read
through it equals the one read from the run folders."""

from __future__ import annotations

import json
import shutil

import pytest
from test_tracking_server import server  # noqa: F401  (the fixture: a real `mlflow server`)

from lt_bench.commands.sweep import run_sweep
from lt_bench.compare.leaderboard import leaderboard
from lt_bench.config import load_config

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


ray_needed = pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                                reason="ray is not installed (pip install -e '.[dev]')")


@ray_needed
@pytest.mark.slow  # a server, a local Ray instance and four tasks
def test_a_ray_sweep_through_a_tracking_server(tmp_path, server, monkeypatch):  # noqa: F811
    from mlflow.tracking import MlflowClient
    from test_sweep import FAKE, HERE

    monkeypatch.setenv("PYTHONPATH", str(HERE))
    summary = run_sweep([f"workspace={tmp_path / 'ws'}", "tracking.tracker=mlflow",
                         f"tracking.uri={server.uri}", "engine=ray", "cpus_per_run=1",
                         "methods=[ce,dv]", "seeds=2"], out=lambda *a: None, train_fn=FAKE)
    assert len(summary["finished"]) == 4 and not summary["failed"]
    c = MlflowClient(server.uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()],
                         "tags.`lt.role` = 'seed'")
    assert sorted((r.data.tags["lt.method"], r.data.tags["lt.seed"]) for r in runs) == [
        ("ce", "0"), ("ce", "1"), ("dv", "0"), ("dv", "1")]
    assert {r["method"]: r["n"] for r in summary["leaderboard"]} == {"ce": 2, "dv": 2}


@ray_needed
@pytest.mark.slow  # a local Ray instance and a real run that is killed and resumed
def test_a_killed_ray_task_resumes_its_run_from_the_checkpoint(tmp_path, template_db):
    """The Ray worker of a real run is killed after its first checkpoint: Ray runs the task
    again, the run resumes from the checkpoint and ends as the run trained without a kill, with
    one run in the store (the resumed one continues the same MLflow run)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from lt_bench.tracking.store import client, tracking_uri
    from lt_bench.workspace.layout import run_folder
    from lt_bench.workspace.record import read_result

    run = ["dataset=synthetic_lt", "imbalance=20", "protocol.epochs=12", "protocol.batch_size=64",
           "precision=fp32", "deterministic=true", "method=dv", "protocol.start_epoch=6",
           "seed=0"]
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # as in the Ray task (num_cpus=1)
    subprocess.run([sys.executable, "-m", "lt_bench", "train", *run, "quiet=true",
                    "tracking.tracker=local", f"workspace={tmp_path / 'alone'}"], check=True,
                   env=one_thread, capture_output=True)
    alone = read_result(next((tmp_path / "alone").glob("runs/*/results.json")))
    folder = run_folder(load_config([], [*run, f"workspace={ws}"]))
    sweep = subprocess.Popen([sys.executable, "-m", "lt_bench", "sweep", *run, "engine=ray",
                              "cpus_per_run=1", "tracking.tracker=mlflow", f"workspace={ws}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=one_thread)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (folder / "checkpoint.pt").is_file():
            try:
                if torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"] >= 1:
                    break
            except Exception:  # noqa: BLE001  (read while it is replaced: try again)
                pass
        time.sleep(0.2)
    trainer = int((folder / "owner.lock").read_text().split()[1])  # "pid N on HOST"
    ray_worker = int(open(f"/proc/{trainer}/stat").read().rsplit(")", 1)[1].split()[1])
    os.kill(ray_worker, signal.SIGKILL)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, (out + err)[-3000:]
    resumed = json.loads((folder / "results.json").read_text())
    assert resumed["final"]["acc"] == alone.final.acc
    assert resumed["final"]["per_class"] == alone.final.per_class
    assert resumed["class_weights"] == alone.class_weights
    c = client(tracking_uri({"workspace": str(ws)}))
    seeds = c.search_runs([e.experiment_id for e in c.search_experiments()],
                          "tags.`lt.role` = 'seed'")
    assert len(seeds) == 1 and seeds[0].info.status == "FINISHED"
    assert f"pid {trainer} " not in (folder / "owner.lock").read_text()  # another attempt ended it
