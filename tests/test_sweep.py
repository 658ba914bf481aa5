"""Sweep grid expansion, local worker processes, and skipping what the store has finished.

The workers run ``fake_train`` below (``run_sweep(..., train_fn=FAKE)``): it records the run
through the real MLflow tracker and writes ``results.json`` like the harness, in a fraction of a
second, so the sweep machinery is tested without data sets or backbones.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lt_bench.commands.sweep import run_sweep
from lt_bench.compare.leaderboard import leaderboard
from lt_bench.sweep.grid import expand
from lt_bench.tracking.store import prepare_store
from lt_bench.workspace.layout import run_folder
from lt_bench.workspace.record import RunResult, finished_result

HERE = Path(__file__).parent
FAKE = "test_sweep:fake_train"


def fake_train(cfg) -> RunResult:
    """A stand-in for ``lt_bench.run.train.train``: deterministic accuracy, real tracker; like the
    harness it claims its run folder and returns a finished run's record untouched. It takes
    FAKE_TRAIN_SECONDS to "train" and notes its PID in pids.txt."""
    from lt_bench.workspace.ownership import claim_run

    out = run_folder(cfg)
    with claim_run(out):
        if (done := finished_result(out / "results.json")) is not None:
            return done
        with open(Path(cfg.workspace) / "pids.txt", "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(float(os.environ.get("FAKE_TRAIN_SECONDS", "0")))
        return _fake_result(cfg, out)


def _fake_result(cfg, out: Path) -> RunResult:
    from lt_bench.config import config_hash, to_dict
    from lt_bench.tracking.mlflow_tracker import MlflowTracker

    acc = 0.5 + (0.1 if cfg.method.name == "dv" else 0.0) + 0.01 * cfg.seed
    with open(Path(cfg.workspace) / "calls.txt", "a") as f:
        f.write(f"{cfg.method.name} {cfg.seed} {cfg.imbalance}\n")
    part = {"acc": acc, "acc_many": acc + 0.1, "acc_medium": acc - 0.1, "acc_few": None,
            "epoch": 0, "per_class": [acc, acc]}
    results = {"status": "FINISHED", "seed": cfg.seed, "method": cfg.method.name,
               "dataset": cfg.dataset, "imbalance": cfg.imbalance, "backbone": "b",
               "protocol": "quick", "classes": ["a", "b"], "train_counts": [10, 1],
               "final": part, "best": part, "confusion": [[1, 0], [0, 1]],
               "class_weights": [[1.0, 2.0]], "history": [], "wall_time_s": 0.1,
               "cfg_hash": config_hash(cfg), "group_of_class": ["many", "few"]}
    result = RunResult.from_dict(results)
    if cfg.tracking.tracker == "mlflow":
        tracker = MlflowTracker(cfg)
        tracker.start(to_dict(cfg), out, {"classes": ["a", "b"], "counts": [10, 1]})
        tracker.log_metrics({"train/loss": 1.0, "test/acc": acc}, step=0)
        tracker.finish(result)
    result.save(out / "results.json")
    return result


def test_a_config_cannot_name_the_function_workers_run():
    from lt_bench import LtBenchError

    with pytest.raises(LtBenchError, match="unknown config key 'train_fn'"):
        expand(["methods=[ce]", "train_fn=os:system"])


def test_grid_expansion():
    sweep = expand(["methods=[ce,dv]", "seeds=3", "imbalance=[100,200]",
                    "protocol.milestones=[3,4]", "protocol.epochs=5", "jobs=2"])
    assert len(sweep.jobs) == 2 * 3 * 2
    points = {(j.method, j.cfg.imbalance, j.seed) for j in sweep.jobs}
    assert points == {(m, i, s) for m in ("ce", "dv") for i in (100.0, 200.0) for s in range(3)}
    for job in sweep.jobs:
        assert list(job.cfg.protocol.milestones) == [3, 4]  # a list-typed key is not an axis
        assert job.cfg.protocol.epochs == 5 and job.cfg.quiet is False
    # the seeds of one point share the config hash, other points differ
    hashes = {(j.method, j.cfg.imbalance): set() for j in sweep.jobs}
    for job in sweep.jobs:
        hashes[(job.method, job.cfg.imbalance)].add(job.cfg_hash)
    assert all(len(h) == 1 for h in hashes.values()) and len(
        set.union(*hashes.values())) == 4
    assert sweep.options["jobs"] == 2
    assert [j.seed for j in expand(["seeds=[0,5]"]).jobs] == [0, 5]
    assert len(expand(["protocol.milestones=[[1,2],[3,4]]"]).jobs) == 2
    with pytest.raises(Exception, match="seeds"):
        expand(["seeds=abc"])



def test_parallel_workers_share_the_cores(monkeypatch):
    from lt_bench.sweep.workers import worker_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert worker_env(expand(["jobs=4"]))["OMP_NUM_THREADS"] == "2"
    assert worker_env(expand(["jobs=16"]))["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in worker_env(expand(["jobs=1"]))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    assert worker_env(expand(["jobs=4"]))["OMP_NUM_THREADS"] == "3"


@pytest.fixture
def store_sweep(tmp_path, template_db, monkeypatch) -> tuple[Path, list[str]]:
    """A workspace with an MLflow store, and the sweep arguments that use it."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    return ws, [f"workspace={ws}", "tracking.tracker=mlflow", "dataset=cifar10_lt",
                "imbalance=100"]


def test_sweep_skips_what_the_store_has_finished(store_sweep):
    """Two of four runs are already in the store (their run folders gone): only two run."""
    from lt_bench.config import load_config

    ws, common = store_sweep
    for method in ("ce", "dv"):
        fake_train(load_config([], [*common, f"method={method}", "seed=0"]))
    shutil.rmtree(ws / "runs")
    lines: list[str] = []
    summary = run_sweep([*common, "methods=[ce,dv]", "seeds=2", "jobs=2"], out=lines.append,
                        train_fn=FAKE)
    assert sorted(summary["skipped"]) == ["ce seed=0", "dv seed=0"]
    assert sorted(summary["finished"]) == ["ce seed=1", "dv seed=1"] and not summary["failed"]
    assert sum(line.startswith("[") and "final acc 6" in line for line in lines) == 1
    calls = sorted(c for c in (ws / "calls.txt").read_text().split("\n") if c)
    assert calls == sorted(f"{m} {s} 100.0" for m in ("ce", "dv") for s in (0, 1))
    rows = {r["method"]: r for r in summary["leaderboard"]}
    assert rows["dv"]["n"] == 2 and rows["dv"]["mean"] == pytest.approx(0.605)
    assert rows["dv"]["diff"] == pytest.approx(0.1)


@pytest.mark.slow  # 6 worker processes, each importing torch and MLflow
def test_sweep_runs_workers_and_skips_finished(store_sweep):
    ws, common = store_sweep
    lines: list[str] = []
    summary = run_sweep([*common, "methods=[ce,dv]", "seeds=2", "jobs=2"], out=lines.append,
                        train_fn=FAKE)
    assert len(summary["finished"]) == 4 and not summary["failed"] and not summary["skipped"]
    assert sum(line.startswith("[") and "final acc" in line for line in lines) == 4
    assert any(line.startswith("method") for line in "\n".join(lines).splitlines())
    rows = {r["method"]: r for r in summary["leaderboard"]}
    assert rows["dv"]["n"] == 2 and rows["dv"]["mean"] == pytest.approx(0.605)
    assert rows["dv"]["diff"] == pytest.approx(0.1)
    # the store, not the run folders, tells what is done: remove the folders, resume, add a seed
    shutil.rmtree(ws / "runs")
    summary = run_sweep([*common, "methods=[ce,dv]", "seeds=3", "jobs=2"], out=lines.append,
                        train_fn=FAKE)
    assert len(summary["skipped"]) == 4 and len(summary["finished"]) == 2
    calls = (ws / "calls.txt").read_text().split("\n")
    assert sorted(c for c in calls if c) == sorted(
        f"{m} {s} 100.0" for m in ("ce", "dv") for s in (0, 1, 2))
    rows = leaderboard({"workspace": str(ws)})
    assert {r.method: r.n for r in rows} == {"ce": 3, "dv": 3}


@pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                    reason="ray is not installed (optional extra lt-bench[ray])")
def test_ray_engine_on_a_local_instance(tmp_path, template_db, monkeypatch):
    """2 methods x 2 seeds as Ray tasks on a local Ray instance (ray.init on 127.0.0.1): every
    run lands once in the store, with its results.json, and the leaderboard closes the sweep."""
    from lt_bench.tracking.store import client, tracking_uri

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    prepare_store({"workspace": str(ws)})
    lines: list[str] = []
    summary = run_sweep([f"workspace={ws}", "tracking.tracker=mlflow", "engine=ray",
                         "methods=[ce,dv]", "seeds=2", "gpus_per_run=0", "cpus_per_run=1"],
                        out=lines.append, train_fn=FAKE)
    assert len(summary["finished"]) == 4 and not summary["failed"]
    c = client(tracking_uri({"workspace": str(ws)}))
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()],
                         "tags.`lt.role` = 'seed'")
    assert sorted((r.data.tags["lt.method"], r.data.tags["lt.seed"]) for r in runs) == [
        ("ce", "0"), ("ce", "1"), ("dv", "0"), ("dv", "1")]  # each once
    assert len(list(ws.glob("runs/*/results.json"))) == 4
    assert any(line.startswith("method") for line in "\n".join(lines).splitlines())


@pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                    reason="ray is not installed (optional extra lt-bench[ray])")
@pytest.mark.slow  # a local Ray instance and a task that is killed and run again
def test_a_ray_task_whose_worker_dies_runs_again_once(tmp_path):
    ws = tmp_path / "ws"
    sweep = start_sweep(ws, ["engine=ray", "methods=[ce]", "seeds=1", "cpus_per_run=1"],
                        seconds=6)
    pids = ws / "pids.txt"
    deadline = time.time() + 180
    while time.time() < deadline and not pids.exists():
        time.sleep(0.2)
    first = int(pids.read_text().split()[0])
    ray_worker = int(Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(ray_worker, signal.SIGKILL)  # the task's Ray worker dies mid-run
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["finished"] == ["ce seed=0"] and not summary["failed"]
    started = pids.read_text().split()
    assert len(started) == 2 and not alive(first)  # retried once; the first attempt died too
    assert (ws / "calls.txt").read_text().split("\n")[:-1] == ["ce 0 100.0"]  # trained once


def test_sweep_command_reports_a_missing_ray_cleanly(tmp_path):
    hide = tmp_path / "no-ray"  # a ray that fails to import, installed or not
    hide.mkdir()
    (hide / "ray.py").write_text("raise ImportError('No module named ray')\n")
    out = subprocess.run([sys.executable, "-m", "lt_bench", "sweep", f"workspace={tmp_path}",
                          "tracking.tracker=local", "engine=ray", "methods=[ce]"],
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(hide)})
    assert out.returncode == 2 and "pip install 'lt-bench[ray]'" in out.stderr


@pytest.mark.slow  # four real (tiny) training runs in worker processes
def test_end_to_end_sweep_on_synthetic_data(tmp_path, template_db):
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    out = subprocess.run([sys.executable, "-m", "lt_bench", "sweep", "dataset=synthetic_lt",
                          "methods=[ce,dv]", "seeds=2", "jobs=2", "protocol.epochs=1",
                          "device=cpu", "tracking.tracker=mlflow", f"workspace={ws}"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert sum(line.startswith("[") and "final acc" in line
               for line in out.stdout.splitlines()) == 4
    rows = {r.method: r for r in leaderboard({"workspace": str(ws)})}
    assert rows["ce"].n == 2 and rows["dv"].n == 2
    assert rows["dv"].p_value is not None or rows["dv"].test_note


def test_workers_do_not_import_modules_from_the_current_folder(tmp_path, monkeypatch):
    """A module planted in the folder a sweep is started from (here ``omegaconf.py``, which
    every worker imports) must not run: workers start without the current folder on sys.path."""
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "omegaconf.py").write_text(
        "from pathlib import Path\nPath('planted-ran').write_text('yes')\nraise SystemExit(99)\n")
    summary = run_sweep([f"workspace={tmp_path / 'ws'}", "tracking.tracker=local",
                         "methods=[ce]", "seeds=1"], out=lambda *a, **k: None, train_fn=FAKE)
    assert not (tmp_path / "planted-ran").exists()
    assert summary["failed"] == []


def test_the_local_tracker_gets_a_leaderboard_and_skips_finished_runs(tmp_path, monkeypatch):
    """tracking.tracker=local: the run folders are read back for the closing leaderboard."""
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    common = [f"workspace={tmp_path / 'ws'}", "tracking.tracker=local", "dataset=cifar10_lt",
              "imbalance=100", "backbone=b", "methods=[ce,dv]", "jobs=2"]  # fake_train's "b"
    summary = run_sweep([*common, "seeds=2"], out=lambda *a: None, train_fn=FAKE)
    rows = {r["method"]: r for r in summary["leaderboard"]}
    assert rows["dv"]["n"] == 2 and rows["dv"]["mean"] == pytest.approx(0.605)  # 0.60, 0.61
    assert rows["dv"]["diff"] == pytest.approx(0.1)  # ce: 0.50, 0.51
    summary = run_sweep([*common, "seeds=3"], out=lambda *a: None, train_fn=FAKE)
    assert len(summary["skipped"]) == 4 and sorted(summary["finished"]) == [
        "ce seed=2", "dv seed=2"]
    assert {r["method"]: r["n"] for r in summary["leaderboard"]} == {"ce": 3, "dv": 3}


def test_a_tracker_that_cannot_be_read_back_is_said_and_the_sweep_still_runs(
        tmp_path, monkeypatch, caplog):
    import logging

    from test_tracking_read import PLUGIN  # registers "duck", a tracker with no read side

    from lt_bench.registry import reset_registry
    from lt_bench.tracking import cannot_read_back

    plugin = tmp_path / "duck_tracker.py"
    plugin.write_text(PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    args = [f"workspace={tmp_path / 'ws'}", "tracking.tracker=duck", f"plugins=[{plugin}]",
            "methods=[ce]", "seeds=2"]
    reset_registry()
    try:
        with caplog.at_level(logging.WARNING, logger="lt_bench"):
            first = run_sweep(args, out=lambda *a: None, train_fn=FAKE)
            again = run_sweep(args, out=lambda *a: None, train_fn=FAKE)
    finally:
        reset_registry()
    said = [r.getMessage() for r in caplog.records if "cannot be read back" in r.getMessage()]
    assert said == [cannot_read_back("duck")] * 2  # once per sweep
    assert sorted(first["finished"]) == ["ce seed=0", "ce seed=1"] and not first["failed"]
    assert "leaderboard" not in first
    assert sorted(again["skipped"]) == ["ce seed=0", "ce seed=1"]  # by run folder


# -- one owner per run ----------------------------------------------------------------------------
def start_sweep(ws: Path, args: list[str], seconds: float) -> subprocess.Popen:
    """``run_sweep`` in a process of its own (the way two users would start two sweeps)."""
    code = ("import json, sys; from lt_bench.commands.sweep import run_sweep; "
            f"s = run_sweep(sys.argv[1:], out=lambda *a: None, train_fn={FAKE!r}); "
            "print(json.dumps(s))")
    env = {**os.environ, "PYTHONPATH": str(HERE), "FAKE_TRAIN_SECONDS": str(seconds)}
    return subprocess.Popen([sys.executable, "-c", code, f"workspace={ws}",
                             "tracking.tracker=local", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # two sweeps, four worker processes each importing torch
def test_two_sweeps_on_one_workspace_train_every_run_once(tmp_path):
    ws = tmp_path / "ws"
    args = ["methods=[ce,dv]", "seeds=2", "jobs=2"]
    sweeps = [start_sweep(ws, args, seconds=4) for _ in range(2)]
    summaries = []
    for proc in sweeps:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    calls = [c for c in (ws / "calls.txt").read_text().split("\n") if c]
    assert sorted(calls) == sorted(f"{m} {s} 100.0" for m in ("ce", "dv") for s in (0, 1))
    for s in summaries:  # each sweep accounts for every run, and none failed
        assert not s["failed"]
        assert len(s["finished"]) + len(s["busy"]) + len(s["skipped"]) == 4
    assert sum(len(s["busy"]) for s in summaries) >= 1  # the second met the first's runs


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state  # a zombie has stopped running


@pytest.mark.slow  # a worker process importing torch
def test_a_sweep_killed_with_sigkill_takes_its_workers_with_it(tmp_path):
    ws = tmp_path / "ws"
    sweep = start_sweep(ws, ["methods=[ce]", "seeds=1"], seconds=300)
    deadline = time.time() + 120
    while time.time() < deadline and not (ws / "pids.txt").exists():
        time.sleep(0.2)
    worker = int((ws / "pids.txt").read_text().split()[0])
    assert alive(worker)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    deadline = time.time() + 30
    while time.time() < deadline and alive(worker):
        time.sleep(0.2)
    assert not alive(worker), "the worker trains on as an orphan"
