"""The MLflow tracker against synthetic run records (``lt_bench.workspace.record.RunResult``; no data set
or backbone needed), checked through MLflow's own client."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from lt_bench.config import config_hash
from lt_bench.tracking.mlflow_tracker import MlflowTracker, param_value
from lt_bench.tracking.store import client, prepare_store, tracking_uri
from lt_bench.workspace.record import RunResult

CLASSES = [f"c{i}" for i in range(10)]
COUNTS = [500, 300, 180, 110, 65, 40, 24, 14, 8, 5]


def make_cfg(workspace: Path, method: str = "ce", seed: int = 0, **extra) -> dict:
    cfg = {
        "dataset": "cifar10_lt", "imbalance": 100.0,
        "data": {"root": "/data", "note": "x" * 7000},  # a param value over MLflow's limit
        "backbone": {"name": "resnet32"}, "method": {"name": method},
        "protocol": {"name": "quick", "epochs": 3, "lr": 0.1, "milestones": [1, 2]},
        "seed": seed, "workspace": str(workspace),
        "tracking": {"tracker": "mlflow", "uri": None, "experiment": None},
    }
    cfg.update(extra)
    return cfg


def fake_results(cfg: dict, acc: float, epochs: int = 3) -> RunResult:
    """A run record as ``train`` returns it (CIFAR-10-LT: no few-shot class)."""
    per_class = [min(1.0, acc + 0.3 - 0.06 * i) for i in range(10)]
    group = ["many"] * 4 + ["medium"] * 6

    def part(a, epoch):
        return {"acc": a, "acc_many": a + 0.2, "acc_medium": a - 0.1, "classes_many": 4,
                "classes_medium": 6, "classes_few": 0, "epoch": epoch, "per_class": per_class}

    return RunResult.from_dict({
        "status": "FINISHED", "run_id": None, "seed": cfg["seed"], "method": cfg["method"]["name"],
        "dataset": cfg["dataset"], "imbalance": cfg["imbalance"], "backbone": "resnet32",
        "protocol": "quick", "classes": CLASSES, "train_counts": COUNTS,
        "final": part(acc, epochs - 1), "best": part(acc + 0.01, epochs - 2),
        "confusion": [[10 if i == j else 1 for j in range(10)] for i in range(10)],
        "class_weights": [[1.0 + 0.1 * e * i for i in range(10)] for e in range(epochs)],
        "history": [{"epoch": e, "train/loss": 2.0 - e} for e in range(epochs)],
        "wall_time_s": 12.5, "cfg_hash": config_hash(cfg), "group_of_class": group,
    })


DATA_INFO = {"name": "cifar10_lt", "classes": CLASSES, "num_classes": 10, "counts": COUNTS,
             "total": sum(COUNTS), "imbalance": 100.0, "test_counts": [100] * 10}


def log_run(cfg: dict, acc: float, epochs: int = 3, status: str = "FINISHED",
            resume_id: str | None = None, stop_after: int | None = None):
    tracker = MlflowTracker(OmegaConf.create(cfg))
    run_id = tracker.start(cfg, Path(cfg["workspace"]) / "runs" / "x", DATA_INFO, resume_id)
    for epoch in range(epochs):
        if stop_after is not None and epoch >= stop_after:
            tracker.finish(None, status="KILLED")
            return tracker, run_id
        tracker.log_metrics({"train/loss": 2.0 - epoch, "lr": 0.1, "test/acc": acc - 0.1 + epoch * 0.05,
                             "test/acc_few": None}, step=epoch)
    tracker.finish(fake_results(cfg, acc, epochs), status=status)
    return tracker, run_id



@pytest.fixture()
def workspace(tmp_path, template_db) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    return ws


def test_default_store_is_sqlite_in_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = {"workspace": str(tmp_path), "tracking": {"uri": None}}
    assert tracking_uri(cfg) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert tracking_uri(cfg) == "http://example:5000"
    cfg["tracking"]["uri"] = "sqlite:////elsewhere/x.db"
    assert tracking_uri(cfg) == "sqlite:////elsewhere/x.db"


def test_param_values_are_cut_to_mlflows_limit():
    assert param_value([1, 2]) == "[1, 2]"
    long = param_value("y" * 10_000)
    assert len(long) == 6000 and long.endswith("chars, cut]")


def test_layout_tags_metrics_artifacts(workspace):
    from mlflow.entities import ViewType

    accs = [0.61, 0.64, 0.60]
    run_ids = [log_run(make_cfg(workspace, "dv", seed), a)[1] for seed, a in enumerate(accs)]
    c = client(tracking_uri({"workspace": str(workspace)}))
    exp = c.get_experiment_by_name("cifar10_lt-IF100-resnet32")
    assert exp is not None and exp.artifact_location.startswith((workspace / "mlartifacts").as_uri())
    runs = c.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)
    groups = [r for r in runs if r.data.tags.get("lt.role") == "group"]
    seeds = [r for r in runs if r.data.tags.get("lt.role") == "seed"]
    assert len(groups) == 1 and len(seeds) == 3
    group = groups[0]
    assert {r.info.run_id for r in seeds} == set(run_ids)
    cfg_hash = config_hash(make_cfg(workspace, "dv", 0))
    for run in seeds:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == group.info.run_id
        assert (tags["lt.method"], tags["lt.dataset"], tags["lt.imbalance"], tags["lt.backbone"],
                tags["lt.cfg_hash"]) == ("dv", "cifar10_lt", "100", "resnet32", cfg_hash)
        assert run.info.status == "FINISHED"
        seed = int(tags["lt.seed"])
        assert run.data.metrics["final/acc"] == pytest.approx(accs[seed])
        assert run.data.metrics["best/acc"] == pytest.approx(accs[seed] + 0.01)
        # the UI's column: percent, rounded as the leaderboard prints it
        assert run.data.metrics["percent/acc"] == round(100 * accs[seed], 2)
        assert "final/acc_few" not in run.data.metrics  # a group with no class is left out
        assert run.data.params["protocol.lr"] == "0.1"
        assert run.data.params["protocol.milestones"] == "[1, 2]"
        assert len(run.data.params["data.note"]) == 6000
        assert run.data.params["seed"] == str(seed)
        assert run.inputs.dataset_inputs[0].dataset.name == "cifar10_lt-IF100-resnet32"
    assert group.data.tags["lt.cfg_hash"] == cfg_hash and group.info.status == "FINISHED"
    # per-epoch history, step = epoch
    history = c.get_metric_history(run_ids[0], "test/acc")
    assert [m.step for m in history] == [0, 1, 2]
    # mean / std over the seeds on the group run, against numpy
    gm = c.get_run(group.info.run_id).data.metrics
    assert gm["seeds"] == 3
    assert gm["final/acc_mean"] == pytest.approx(np.mean(accs))
    assert gm["final/acc_std"] == pytest.approx(np.std(accs, ddof=1))
    assert gm["percent/acc"] == round(100 * np.mean(accs), 2)
    assert gm["percent/acc_std"] == round(100 * np.std(accs, ddof=1), 2)
    # one value a settled seed, all at step 0: the chart view draws a bar, not a line
    history = c.get_metric_history(group.info.run_id, "percent/acc")
    assert len(history) == 3 and {m.step for m in history} == {0}
    # artifacts
    names = {a.path for a in c.list_artifacts(run_ids[1])}
    assert {"config.yaml", "per_class_accuracy.csv", "class_weights.csv", "class_weights.json",
            "results.json", "plots"} <= names
    plots = {a.path for a in c.list_artifacts(run_ids[1], "plots")}
    assert plots == {"plots/per_class_accuracy.png", "plots/class_weights.png",
                     "plots/confusion_matrix.png"}
    local = Path(c.download_artifacts(run_ids[1], "per_class_accuracy.csv", str(workspace / "dl")))
    rows = list(csv.DictReader(io.StringIO(local.read_text())))
    assert [int(r["train_count"]) for r in rows] == COUNTS
    assert float(rows[9]["final_acc"]) == pytest.approx(
        fake_results(make_cfg(workspace), 0.64).final.per_class[9])
    weights = json.loads(Path(c.download_artifacts(run_ids[1], "class_weights.json",
                                                   str(workspace / "dl"))).read_text())
    assert len(weights["weights"]) == 3 and weights["weights"][2][9] == pytest.approx(2.8)
    png = Path(c.download_artifacts(run_ids[1], "plots/per_class_accuracy.png",
                                    str(workspace / "dl")))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_the_same_run_and_failed_runs_are_marked(workspace):
    cfg = make_cfg(workspace, "ce", 0)
    tracker, run_id = log_run(cfg, 0.5, epochs=3, stop_after=2)
    c = client(tracker.uri)
    assert c.get_run(run_id).info.status == "KILLED"
    tracker2, run_id2 = log_run(cfg, 0.55, epochs=3, resume_id=run_id)
    assert run_id2 == run_id
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["final/acc"] == pytest.approx(0.55)
    seeds = c.search_runs([run.info.experiment_id], "tags.`lt.role` = 'seed'")
    assert len(seeds) == 1
    # a run of another method makes a second group, and its own experiment when asked to
    log_run(make_cfg(workspace, "ce", 1, tracking={"tracker": "mlflow", "uri": None,
                                                 "experiment": "mine"}), 0.5)
    assert c.get_experiment_by_name("mine") is not None


WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_tracking import log_run, make_cfg
    from pathlib import Path
    seed = int(sys.argv[1])
    log_run(make_cfg(Path({ws!r}), "ce" if seed % 2 else "dv", seed), 0.5 + seed / 100)
""")


@pytest.mark.slow  # 8 Python processes importing MLflow: minutes on a loaded 2-core machine
def test_eight_processes_log_into_one_fresh_store(tmp_path):
    """Concurrent creation of a fresh SQLite store and of the same group runs loses nothing."""
    ws = tmp_path / "fresh"
    code = WORKER.format(tests=str(Path(__file__).parent), ws=str(ws))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(seed)], stderr=subprocess.PIPE,
                              text=True) for seed in range(8)]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errors)
    uri, exp_id = prepare_store({"workspace": str(ws), "dataset": "cifar10_lt",
                                 "imbalance": 100.0, "backbone": {"name": "resnet32"}})
    c = client(uri)
    seeds = c.search_runs([exp_id], "tags.`lt.role` = 'seed'", max_results=100)
    assert sorted(int(r.data.tags["lt.seed"]) for r in seeds) == list(range(8))
    for run in seeds:
        assert run.info.status == "FINISHED"
        seed = int(run.data.tags["lt.seed"])
        assert run.data.metrics["final/acc"] == pytest.approx(0.5 + seed / 100)
        assert len(c.get_metric_history(run.info.run_id, "train/loss")) == 3
    groups = c.search_runs([exp_id], "tags.`lt.role` = 'group'")
    assert sorted(g.data.tags["lt.method"] for g in groups) == ["ce", "dv"]
    for g in groups:
        mine = [0.5 + s / 100 for s in range(8) if (s % 2 == 1) == (g.data.tags["lt.method"] == "ce")]
        assert g.data.metrics["seeds"] == 4
        assert g.data.metrics["final/acc_mean"] == pytest.approx(np.mean(mine))
        # settled by racing processes at one step: the summary of all four is still the latest
        assert g.data.metrics["percent/acc"] == round(100 * np.mean(mine), 2)
        assert not math.isnan(g.data.metrics["final/acc_std"])


def test_a_group_is_named_by_its_method_until_a_second_setting_needs_its_keys(workspace):
    """As the leaderboard names its rows: ``dv`` alone, then, once another setting of dv is in
    the experiment, what tells the two apart; a method with one setting keeps its bare name."""
    def names() -> dict[str, str]:
        c = client(tracking_uri({"workspace": str(workspace)}))
        exp = c.get_experiment_by_name("cifar10_lt-IF100-resnet32").experiment_id
        return {r.data.tags["lt.cfg_hash"]: r.info.run_name
                for r in c.search_runs([exp], "tags.`lt.role` = 'group'")}

    log_run(make_cfg(workspace, "dv", 0), 0.6)
    log_run(make_cfg(workspace, "ce", 0), 0.5)
    assert sorted(names().values()) == ["ce", "dv"]
    other = make_cfg(workspace, "dv", 0)
    other["protocol"] = {**other["protocol"], "lr": 0.05}
    log_run(other, 0.62)
    assert sorted(names().values()) == ["ce", "dv (protocol.lr=0.05)", "dv (protocol.lr=0.1)"]


def test_accuracy_is_the_first_metric_a_run_shows(workspace):
    """MLflow's compare-runs page plots the first metric key its runs share, in the order the
    store first saw them: a seed's is its test accuracy (not the loss, logged beside it in the
    same batch), a group's its percent accuracy."""
    tracker, run_id = log_run(make_cfg(workspace, "dv", 0), 0.6)
    c = client(tracking_uri({"workspace": str(workspace)}))
    assert list(c.get_run(run_id).data.metrics)[0] == "test/acc"
    assert list(c.get_run(tracker.group_id).data.metrics)[0] == "percent/acc"
