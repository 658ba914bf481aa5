"""The fork at the re-weighting start: a branch started from a trunk equals the run trained alone,
bit for bit (CPU, deterministic); the plan shares exactly the plain epochs; a sweep trains each
trunk once and its branches read like ordinary runs."""

from __future__ import annotations

import math

import pytest

from lt_bench import build_method
from lt_bench.config import load_config
from lt_bench.method import PLAIN_THROUGHOUT
from lt_bench.run.fork import trunk_folder
from lt_bench.run.train import train, train_trunk
from lt_bench.sweep.trunks import epochs_with_and_without, plan

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.batch_size=64", "protocol.lr=0.05",
        "protocol.warmup_epochs=0", "precision=fp32", "quiet=true", "deterministic=true",
        "tracking.tracker=local", "protocol.epochs=5", "protocol.start_epoch=3",
        "protocol.milestones=[2,4]"]


def same_run(a, b) -> None:
    assert a.final == b.final and a.best == b.best  # per-class accuracy included
    assert a.class_weights == b.class_weights and a.confusion == b.confusion
    assert [h["train/loss"] for h in a.history] == [h["train/loss"] for h in b.history]


@pytest.mark.parametrize("method", ["dv", "effective_number"])
def test_a_branch_equals_the_run_trained_alone(tmp_path, method):
    alone = train(load_config([], [*TINY, f"method={method}", f"workspace={tmp_path / 'a'}"]))
    cfg = load_config([], [*TINY, f"method={method}", f"workspace={tmp_path / 'f'}"])
    train_trunk(cfg, 2)
    branched = train(cfg, trunk=str(trunk_folder(cfg, 2)))
    same_run(alone, branched)
    assert branched.class_weights[2] == [1.0] * 5 != branched.class_weights[3]  # weighted from 3
    # interrupted after it branched (its own checkpoint, no results): it resumes its own
    (tmp_path / "f" / "runs").glob("*/results.json").__next__().unlink()
    same_run(alone, train(cfg, trunk=str(trunk_folder(cfg, 2))))


def test_plain_epochs_from_the_loss_the_start_and_the_statistics():
    assert build_method("ce", [10, 1]).plain_epochs == PLAIN_THROUGHOUT
    assert build_method("effective_number", [10, 1], start_epoch=160).plain_epochs == 160
    # class volume gathers the statistics of the epoch before its start
    assert build_method("dv", [10, 1], start_epoch=160).plain_epochs == 159
    assert build_method("bv", [10, 1], start_epoch=0).plain_epochs == 0
    assert build_method("effective_number", [10, 1], start_epoch=160,
                        loss="focal").plain_epochs == 0  # not cross-entropy from the start


class Job:
    def __init__(self, overrides, seed=0, workspace="/tmp/w"):
        self.cfg = load_config([], [*TINY, *overrides, f"seed={seed}", f"workspace={workspace}"])
        self.seed = seed


def test_the_plan_shares_the_least_plain_prefix_of_each_group():
    jobs = [Job(["method=ce"]), Job(["method=dv"]), Job(["method=effective_number"]),
            Job(["method=ce"], seed=1), Job(["method=dv"], seed=1),
            Job(["method=focal"], seed=2), Job(["method=ce"], seed=2),  # focal: nothing shared
            Job(["method=dv", "imbalance=50"])]  # another setting, alone in its group
    trunks = plan(jobs)
    assert sorted((t.branches[0].seed, t.epochs, len(t.branches)) for t in trunks) == [
        (0, 2, 3), (1, 2, 2)]  # start_epoch 3: dv's statistics start in epoch 3 (index 2)
    with_fork, alone = epochs_with_and_without(trunks, jobs)
    assert alone == 8 * 5 and with_fork == alone - 2 * 2 - 2 * 1
    assert len({t.folder for t in trunks}) == 2


def test_a_method_added_later_branches_from_the_finished_trunk(tmp_path):
    added = [Job(["method=dv", "method.convention=authors"], workspace=tmp_path)]
    assert plan(added) == []  # alone in its group and no trunk yet: trained alone
    folder = trunk_folder(added[0].cfg, 2)
    folder.mkdir(parents=True)
    (folder / "trunk.json").write_text('{"epochs": 2}')  # what a finished trunk leaves
    trunks = plan(added)
    assert [(t.folder, t.epochs, len(t.branches)) for t in trunks] == [(folder, 2, 1)]
    assert epochs_with_and_without(trunks, added) == (5 - 2, 5)  # the trunk's epochs are all saved
    (folder / "trunk.json").write_text('{"epochs": 3}')  # unfinished: it says another length
    assert plan(added) == []
    # a method whose plain prefix is longer than a finished trunk's branches from that trunk
    longer = [Job(["method=effective_number"], workspace=tmp_path)]  # plain for 3 epochs
    shorter = trunk_folder(longer[0].cfg, 1)
    shorter.mkdir()
    (shorter / "trunk.json").write_text('{"epochs": 1}')
    assert [(t.folder, t.epochs) for t in plan(longer)] == [(shorter, 1)]
    (folder / "trunk.json").write_text('{"epochs": 2}')
    assert [(t.folder, t.epochs) for t in plan(longer)] == [(folder, 2)]  # the longest usable


@pytest.mark.slow  # two sweeps of three worker processes each
def test_a_sweep_trains_the_trunk_once_and_matches_the_sweep_without_it(tmp_path, template_db):
    import shutil

    from lt_bench.commands.sweep import run_sweep
    from lt_bench.tracking.store import client, tracking_uri

    args = [*TINY, "methods=[ce,dv,effective_number]", "seeds=1", "jobs=2",
            "tracking.tracker=mlflow"]
    (tmp_path / "f").mkdir()
    shutil.copy(template_db, tmp_path / "f" / "mlflow.db")
    lines: list[str] = []
    forked = run_sweep([*args, f"workspace={tmp_path / 'f'}"], out=lines.append)
    alone = run_sweep([*args, f"workspace={tmp_path / 'a'}", "tracking.tracker=local",
                       "fork=false"], out=lambda *a: None)
    assert sorted(forked["finished"]) == sorted(alone["finished"]) and not forked["failed"]
    assert sum(line.startswith("[trunk]") for line in lines) == 1
    assert any("11 epochs to train instead of 15" in line for line in lines)
    by_method = {r["method"]: r["mean"] for r in forked["leaderboard"]}
    assert by_method == {r["method"]: r["mean"] for r in alone["leaderboard"]}
    c = client(tracking_uri({"workspace": str(tmp_path / "f")}))
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()],
                         "tags.`lt.role` = 'seed'")
    assert len(runs) == 3 and all(r.data.tags.get("lt.trunk") for r in runs)
    for run in runs:  # the trunk's epochs were logged into every branch
        steps = [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == [0, 1, 2, 3, 4]
    assert math.isfinite(forked["leaderboard"][0]["mean"])
