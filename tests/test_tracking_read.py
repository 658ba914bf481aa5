"""The read side of trackers: the run-folder reader of the base ``Tracker`` (the "local" tracker,
and any subclass without a read side of its own) against hand-written ``results.json`` files and
against the same runs read back from MLflow; and one clear line for a tracker that has none."""

from __future__ import annotations

import json
import shutil
import statistics
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_tracking import fake_results, log_run, make_cfg

from lt_bench.compare.leaderboard import leaderboard
from lt_bench.errors import LtBenchError
from lt_bench.registry import reset_registry
from lt_bench.tracking import Tracker, tracker_for
from lt_bench.tracking.mlflow_tracker import MlflowTracker
from lt_bench.tracking.records import sample_std
from lt_bench.tracking.store import imbalance_tag, setting_experiment

PLUGIN = textwrap.dedent('''
    import lt_bench
    from lt_bench.tracking import Tracker


    class Duck:
        """The write side by shape only: no read side, not a Tracker."""

        def start(self, cfg, run_dir, data_info, resume_id=None):
            return None

        def log_metrics(self, metrics, step):
            pass

        def finish(self, results, status="FINISHED"):
            pass


    class Sub(Tracker):
        def __init__(self, cfg):  # does not call Tracker.__init__
            self.given = cfg


    def duck(cfg):
        return Duck()


    def sub(cfg):
        return Sub(cfg)


    @lt_bench.hookimpl
    def lt_bench_register_trackers(register):
        register("duck", duck)
        register("sub", sub)
''')


@pytest.fixture()
def plugin(tmp_path):
    """A plugin file registering "duck" and "sub"; the registry is forgotten afterwards."""
    path = tmp_path / "read_side_trackers.py"
    path.write_text(PLUGIN)
    reset_registry()
    yield str(path)
    reset_registry()


def part(acc: float | None, epoch: int = 6) -> dict:
    return {"acc": acc, "acc_many": acc + 0.2, "acc_medium": acc - 0.1, "acc_few": None,
            "epoch": epoch, "per_class": [acc] * 3}


def write_run(ws: Path, method: str, seed: int, acc: float, status: str = "FINISHED",
              imbalance: float | None = 100.0, **extra) -> Path:
    """A run folder as the harness leaves it (only the keys the reader needs, plus extras)."""
    folder = ws / "runs" / f"cifar10_lt-{method}-h{method}-seed{seed}"
    folder.mkdir(parents=True)
    results = {"status": status, "method": method, "seed": seed, "cfg_hash": f"h{method}",
               "dataset": "cifar10_lt", "imbalance": imbalance, "backbone": "resnet32",
               "protocol": "quick", "final": part(acc), "best": part(acc + 0.01, 3),
               "run_id": None, "wall_time_s": 3.0, **extra}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.fixture()
def folders(tmp_path) -> Path:
    ws = tmp_path / "ws"
    write_run(ws, "ce", 0, 0.50, schema=1, a_key_from_the_future=[1, 2])
    write_run(ws, "ce", 1, 0.60)  # no ``schema`` key: written before it existed
    write_run(ws, "ce", 2, 0.90, status="FAILED")
    write_run(ws, "dv", 0, 0.70)
    write_run(ws, "dv", 1, 0.74)
    write_run(ws, "ldam", 0, 0.40, imbalance=None)
    broken = ws / "runs" / "cifar10_lt-cb-hcb-seed0"
    broken.mkdir()
    (broken / "results.json").write_text("{")  # half written
    (ws / "runs" / "cifar10_lt-cb-hcb-seed1").mkdir()  # still running: no results.json
    return ws


FINISHED = {("ce", "hce", 0), ("ce", "hce", 1), ("dv", "hdv", 0), ("dv", "hdv", 1),
            ("ldam", "hldam", 0)}


def test_imbalance_has_one_format():
    assert [imbalance_tag(v) for v in (None, 100, 100.0, "100.0", 0.5, "200")] == [
        "none", "100", "100", "100", "0.5", "200"]
    with pytest.raises(ValueError):
        imbalance_tag("none")
    assert setting_experiment({"dataset": "d", "imbalance": 100.0,
                               "backbone": {"name": "b"}}) == "d-IF100-b"


def test_sample_std_is_statistics_stdev():
    for values in ([1.0, 2.0, 4.0], [0.7, 0.705, 0.698, 0.702]):
        assert sample_std(values) == pytest.approx(statistics.stdev(values))
    assert sample_std([0.5]) is None and sample_std([]) is None


def test_local_tracker_reads_finished_runs_from_the_run_folders(folders):
    cfg = {"workspace": str(folders), "tracking": {"tracker": "local"}}
    tracker = tracker_for(cfg)
    assert type(tracker) is Tracker
    assert tracker.finished_runs() == FINISHED
    records = {(r["tags"]["lt.method"], r["tags"]["lt.seed"]): r
               for r in tracker.runs_for_leaderboard()}
    ce0 = records[("ce", "0")]
    assert ce0["tags"] == {"lt.method": "ce", "lt.dataset": "cifar10_lt", "lt.imbalance": "100",
                           "lt.backbone": "resnet32", "lt.protocol": "quick",
                           "lt.cfg_hash": "hce", "lt.seed": "0", "lt.role": "seed"}
    assert ce0["metrics"] == pytest.approx({
        "final/acc": 0.5, "final/acc_many": 0.7, "final/acc_medium": 0.4,
        "best/acc": 0.51, "best/acc_many": 0.71, "best/acc_medium": 0.41})  # no acc_few: None
    assert ce0["experiment_id"] == "cifar10_lt-IF100-resnet32"
    assert records[("ldam", "0")]["tags"]["lt.imbalance"] == "none"
    assert records[("ldam", "0")]["experiment_id"] == "cifar10_lt-resnet32"
    only = tracker.runs_for_leaderboard("cifar10_lt-resnet32")
    assert [r["tags"]["lt.method"] for r in only] == ["ldam"]
    rows = {r.method: r for r in leaderboard(cfg, {"imbalance": "100"})}
    assert set(rows) == {"ce", "dv"}
    assert rows["ce"].n == 2 and rows["ce"].mean == pytest.approx(0.55)
    assert rows["ce"].std == pytest.approx(statistics.stdev([0.5, 0.6]))
    assert rows["dv"].diff == pytest.approx(0.72 - 0.55)


def test_a_runs_own_experiment_name_comes_from_its_config(folders):
    folder = folders / "runs" / "cifar10_lt-dv-hdv-seed1"
    (folder / "config.yaml").write_text("dataset: cifar10_lt\ntracking:\n  experiment: mine\n")
    tracker = Tracker({"workspace": str(folders)})
    assert [(r["tags"]["lt.method"], r["tags"]["lt.seed"])
            for r in tracker.runs_for_leaderboard("mine")] == [("dv", "1")]
    named = Tracker({"workspace": str(folders), "tracking": {"experiment": "mine"}})
    assert named.finished_runs() == {("dv", "hdv", 1)}  # tracking.experiment is the default


def test_local_and_mlflow_readers_give_the_same_records(tmp_path, template_db):
    """The same runs recorded through the MLflow tracker and left in run folders read back alike
    (tags from the config on one side, from results.json on the other)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    for seed, acc in enumerate([0.61, 0.64]):
        cfg = make_cfg(ws, "dv", seed)
        log_run(cfg, acc)
        folder = ws / "runs" / f"run-seed{seed}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(fake_results(cfg, acc).to_dict()))
    cfg = OmegaConf.create(make_cfg(ws))

    def by_seed(runs):
        return {r["tags"]["lt.seed"]: (r["tags"], r["metrics"], r["experiment_id"]) for r in runs}

    from_mlflow = by_seed(MlflowTracker(cfg).runs_for_leaderboard())
    from_folders = by_seed(Tracker(cfg).runs_for_leaderboard())
    assert set(from_mlflow) == {"0", "1"}
    for seed, (tags, metrics, _) in from_mlflow.items():
        assert from_folders[seed][0] == tags
        assert from_folders[seed][1] == pytest.approx(metrics)
        assert from_folders[seed][2] == "cifar10_lt-IF100-resnet32"
    assert MlflowTracker(cfg).finished_runs() == Tracker(cfg).finished_runs()


def test_a_subclass_without_a_read_side_inherits_the_run_folder_reader(folders, plugin):
    cfg = {"workspace": str(folders), "tracking": {"tracker": "sub"}, "plugins": [plugin]}
    tracker = tracker_for(cfg)
    assert type(tracker).__name__ == "Sub" and tracker.cfg is cfg
    assert tracker.finished_runs() == FINISHED
    assert {r.method for r in leaderboard(cfg)} == {"ce", "dv", "ldam"}


def test_a_tracker_that_cannot_be_read_back_is_one_clear_error(folders, plugin, capsys):
    from lt_bench.cli import main

    cfg = {"workspace": str(folders), "tracking": {"tracker": "duck"}, "plugins": [plugin]}
    with pytest.raises(LtBenchError, match="tracker 'duck' cannot be read back") as info:
        leaderboard(cfg)
    assert "\n" not in str(info.value) and "such as mlflow or local" in str(info.value)
    reset_registry()
    code = main(["-p", plugin, "leaderboard", f"workspace={folders}", "tracking.tracker=duck"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("lt-bench: error: tracker 'duck' cannot be read back")
