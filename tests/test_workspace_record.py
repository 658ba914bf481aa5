"""The run record: one typed record from the history, read back as written, older files too."""

import json

import pytest

from lt_bench.config import load_config
from lt_bench.workspace.files import RunFileError
from lt_bench.workspace.record import (
    SCHEMA,
    RunResult,
    Score,
    finished_result,
    from_history,
    read_result,
)


class Data:
    classes = ["a", "b"]
    train_counts = [10, 1]


def history():
    return [{"epoch": 0, "test/acc": 0.4, "test/acc_many": 0.8, "test/acc_few": 0.0,
             "test/classes_many": 1, "test/classes_few": 1, "train/loss": 2.0,
             "per_class": [0.8, 0.0], "class_weights": [1.0, 1.0], "confusion": [[4, 1], [5, 0]]},
            {"epoch": 1, "train/loss": 1.5, "class_weights": [0.6, 4.0]},
            {"epoch": 2, "test/acc": 0.3, "test/acc_many": 0.5, "test/acc_few": 0.1,
             "test/classes_many": 1, "test/classes_few": 1, "train/loss": 1.0,
             "per_class": [0.5, 0.1], "class_weights": [0.5, 5.0], "confusion": [[3, 2], [4, 1]]}]


def test_final_and_best_come_from_the_evaluated_epochs():
    cfg = load_config([], ["method=dv", "seed=3"])
    r = from_history(cfg, Data(), history(), "FINISHED", 12.5, cfg_hash="abc")
    assert r.final == Score(epoch=2, acc=0.3, acc_many=0.5, acc_few=0.1, classes_many=1,
                            classes_few=1, per_class=[0.5, 0.1])
    assert r.best.epoch == 0 and r.best.acc == 0.4 and r.best_chosen_on == "test"
    assert r.class_weights == [[1.0, 1.0], [0.6, 4.0], [0.5, 5.0]]  # every epoch's, in order
    assert r.confusion == [[3, 2], [4, 1]]  # of the final epoch
    assert all("per_class" not in h and "class_weights" not in h for h in r.history)
    assert (r.method, r.seed, r.cfg_hash, r.wall_time_s) == ("dv", 3, "abc", 12.5)


def test_saved_record_reads_back_equal(tmp_path):
    cfg = load_config([], ["method=ce"])
    r = from_history(cfg, Data(), history(), "FINISHED", 1.0)
    r.save(tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text())["schema"] == SCHEMA
    assert read_result(tmp_path / "results.json") == r
    assert finished_result(tmp_path / "results.json") == r


#: a results.json as the first releases wrote it: no schema, no ECE, no shifted priors
OLDER_RECORD = {"status": "FINISHED", "method": "ce", "dataset": "d", "imbalance": 100.0,
                "backbone": "resnet32", "protocol": "quick", "seed": 0,
                "final": {"acc": 0.5, "epoch": 6, "per_class": [0.5]}, "best": None}


def test_an_older_file_without_schema_and_with_unknown_keys_still_reads(tmp_path):
    old = {**OLDER_RECORD, "some_future_key": 1}
    (tmp_path / "results.json").write_text(json.dumps(old))
    r = read_result(tmp_path / "results.json")
    assert r.schema == 0 and r.final.acc == 0.5 and r.final.acc_few is None and r.best is None


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"status": "RUNNING"})])
def test_a_truncated_or_partial_file_is_one_line_naming_it(tmp_path, content):
    # results.json is written atomically: a file cut short was damaged after lt_bench wrote it
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(RunFileError, match="results.json.*resume=false"):
        finished_result(tmp_path / "results.json")
    assert finished_result(tmp_path / "missing.json") is None


def test_a_failed_run_is_not_a_finished_run(tmp_path):
    failed = from_history(load_config([], ["method=ce"]), Data(), history(), "FAILED", 1.0)
    failed.save(tmp_path / "results.json")
    assert read_result(tmp_path / "results.json").status == "FAILED"
    assert finished_result(tmp_path / "results.json") is None


def test_summary_drops_the_per_class_lists():
    r = from_history(load_config([], ["method=ce"]), Data(), history(), "FINISHED", 1.0)
    s = r.summary()
    assert s["final"]["acc"] == 0.3 and "per_class" not in s["final"]
    assert RunResult.from_dict(json.loads(json.dumps(s))).final.acc == 0.3


def test_an_older_file_reads_with_defaults(tmp_path):
    old = {**OLDER_RECORD, "schema": 1}  # before ECE and the shifted priors
    (tmp_path / "results.json").write_text(json.dumps(old))
    r = read_result(tmp_path / "results.json")
    assert r.final.ece is None and r.final.shifted == {} and r.group_thresholds == {}
    assert Score.from_dict({"epoch": 0, "acc": 0.5, "shifted": {"uniform": 0.5}}).shifted == {
        "uniform": 0.5}
    with pytest.raises(ValueError, match="shifted"):
        Score.from_dict({"epoch": 0, "acc": 0.5, "shifted": [0.5]})
    assert RunResult.from_dict({**old, "future": 1}).final.ece is None
