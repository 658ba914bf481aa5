"""Run-folder files: written atomically and never through a planted link (the file outside the
workspace stays as it was, and the error names the link); read back as a typed record, None when
missing, or one line naming a corrupt file (never a traceback, never a seed silently left out)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

import lt_bench.run.train as harness
from lt_bench.cli import main
from lt_bench.compare.leaderboard import Row, leaderboard
from lt_bench.compare.plot import class_lines, write_figures
from lt_bench.config import load_config
from lt_bench.errors import LtBenchError
from lt_bench.run.checkpoint import load_checkpoint, save_checkpoint
from lt_bench.run.progress import RunProgress, epochs_done, fraction, read_progress, run_line
from lt_bench.workspace.files import LinkRefused, RunFileError, open_log, write_file
from lt_bench.workspace.layout import run_folder
from lt_bench.workspace.ownership import claim_run, owner_of
from lt_bench.workspace.record import RunResult, finished_or_skip, finished_result, read_result

SECRET = "someone else's file\n"
NAME = "cifar10_lt-ce-abc-seed0"


@pytest.fixture
def ws(tmp_path) -> Path:
    (tmp_path / "ws" / "runs").mkdir(parents=True)
    return tmp_path / "ws"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside the workspace that a planted link points to."""
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "secret"
    target.write_text(SECRET)
    return target


def plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def record(seed: int = 0, **changes) -> dict:
    score = {"epoch": 1, "acc": 0.5, "acc_many": 0.6, "per_class": [0.6, 0.4]}
    return {"status": "FINISHED", "method": "ce", "dataset": "cifar10_lt", "imbalance": 100.0,
            "backbone": "resnet32", "protocol": "quick", "seed": seed, "cfg_hash": "abc",
            "classes": ["a", "b"], "train_counts": [10, 1], "final": score, "best": score,
            **changes}


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> None:
    assert isinstance(exc.value, LtBenchError)
    assert "\n" not in str(exc.value) and repr(str(path)) in str(exc.value)


# -- writes never go through a link ---------------------------------------------------------------
@pytest.mark.parametrize("dangling", [False, True])
def test_owner_lock_link_is_refused(ws, outside, dangling):
    target = outside.with_name("made-by-us") if dangling else outside
    link = plant(ws / "runs" / NAME / "owner.lock", target)
    with pytest.raises(LinkRefused) as exc:
        claim_run(ws / "runs" / NAME)
    one_line_naming(exc, link)
    assert outside.read_text() == SECRET and not outside.with_name("made-by-us").exists()
    assert owner_of(ws / "runs" / NAME) is None  # no live owner's lock: the claim says why


@pytest.mark.parametrize("planted", ["runs", f"runs/{NAME}"])
def test_a_symlinked_run_folder_is_refused(ws, outside, planted):
    (ws / "runs").rmdir()
    link = plant(ws / planted, outside.parent)
    run = ws / "runs" / NAME
    with pytest.raises(LinkRefused) as exc:
        claim_run(run)
    one_line_naming(exc, link)
    with pytest.raises(LinkRefused):
        RunResult.from_dict(record()).save(run / "results.json")
    assert sorted(p.name for p in outside.parent.rglob("*")) == ["secret"]


def test_a_link_beside_the_lock_is_refused_before_the_run_trains(ws, outside):
    link = plant(ws / "runs" / NAME / "config.yaml", outside)
    with pytest.raises(LinkRefused) as exc:
        claim_run(ws / "runs" / NAME)
    one_line_naming(exc, link)


def test_owner_lock_that_is_a_folder_or_a_run_folder_that_is_a_file(ws):
    (ws / "runs" / NAME / "owner.lock").mkdir(parents=True)
    with pytest.raises(RunFileError) as exc:
        claim_run(ws / "runs" / NAME)
    one_line_naming(exc, ws / "runs" / NAME / "owner.lock")
    (ws / "runs" / "file-run").write_text("")
    with pytest.raises(RunFileError) as exc:
        claim_run(ws / "runs" / "file-run")
    one_line_naming(exc, ws / "runs" / "file-run")


def test_results_temporary_is_never_a_planted_name(ws, outside):
    run = ws / "runs" / NAME
    plant(run / "results.tmp", outside)  # the name results.save used before
    result = RunResult.from_dict(record())
    result.save(run / "results.json")
    assert outside.read_text() == SECRET and read_result(run / "results.json") == result
    link = plant(run / "other" / "results.json", outside)
    with pytest.raises(LinkRefused) as exc:
        result.save(link)
    one_line_naming(exc, link)
    assert outside.read_text() == SECRET


def test_checkpoint_temporary_is_never_a_planted_name(ws, outside):
    run = ws / "runs" / NAME
    plant(run / f".checkpoint.pt.{os.getpid()}.tmp", outside)  # the name used before
    save_checkpoint(run / "checkpoint.pt", {"w": torch.ones(2)})
    assert outside.read_text() == SECRET
    assert torch.equal(load_checkpoint(run / "checkpoint.pt")["w"], torch.ones(2))
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_progress_temporary_is_never_a_planted_name(ws, outside):
    run = ws / "runs" / NAME
    plant(run / f".progress.json.{os.getpid()}.tmp", outside)  # the name used before
    RunProgress(run, epochs=3, steps_per_epoch=10).epoch_done(0, 0.25)
    assert outside.read_text() == SECRET and read_progress(run)["acc"] == 0.25
    plant(run / "progress.json.link", outside).replace(run / "progress.json")
    with pytest.raises(LinkRefused):
        RunProgress(run, epochs=3, steps_per_epoch=10).epoch_done(1, 0.5)
    assert outside.read_text() == SECRET


def row(**changes) -> Row:
    values = dict(dataset="cifar10_lt", imbalance="100", backbone="resnet32", protocol="quick",
                  method="ce", cfg_hash="abc", metric="final", n=1, mean=0.5, std=None,
                  best_mean=0.5, acc_many=0.6, acc_medium=None, acc_few=None, values=[0.5],
                  seeds=["0"])
    return Row(**{**values, **changes})


def test_the_sweep_picture_is_never_written_through_a_link(ws, outside):
    picture = ws / "sweeps" / "comparison-cifar10_lt-IF100-resnet32-quick.png"
    plant(picture, outside)
    with pytest.raises(LinkRefused) as exc:
        write_figures([row()], ws, ws / "sweeps" / "comparison.png", suffix=True, out=print,
                      root=ws)
    one_line_naming(exc, picture)
    picture.unlink()
    (ws / "sweeps").rmdir()
    plant(ws / "sweeps", outside.parent)  # the folder a link
    with pytest.raises(LinkRefused):
        write_figures([row()], ws, ws / "sweeps" / "comparison.png", suffix=True, root=ws)
    assert sorted(p.name for p in outside.parent.iterdir()) == ["secret"]
    assert outside.read_text() == SECRET


def test_logs_and_files_under_a_linked_folder_are_refused_the_workspace_may_be_a_link(
        tmp_path, ws, outside):
    link = plant(ws / "sweeps" / "logs" / "run.log", outside)
    with pytest.raises(LinkRefused) as exc:
        open_log(link, root=ws)
    one_line_naming(exc, link)
    link.unlink()
    with open_log(link, root=ws) as log:
        log.write("line\n")
    assert link.read_text() == "line\n" and outside.read_text() == SECRET
    (tmp_path / "ws-link").symlink_to(ws)  # the user's own link to their workspace
    write_file(tmp_path / "ws-link" / "trunks" / "t" / "trunk.json", "{}")
    assert (ws / "trunks" / "t" / "trunk.json").read_text() == "{}"
    with claim_run(tmp_path / "ws-link" / "runs" / NAME):
        assert owner_of(ws / "runs" / NAME)


# -- corrupt files: one line naming the file -------------------------------------------------------
@pytest.mark.parametrize("content", [
    "[]", "3", "", '{"status": "FINISHED", "meth', json.dumps(record(imbalance="100")),
    json.dumps(record(final={"epoch": 1, "acc": 0.5, "per_class": ["0.6", "0.4"]})),
    json.dumps(record(final="x")), json.dumps(record(best=[1])), json.dumps(record(seed="0")),
    json.dumps(record(train_counts="10,1")), json.dumps({"status": "FINISHED"}),
])
def test_a_corrupt_results_file_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "results.json"
    path.write_text(content)
    for read in (read_result, finished_result):
        with pytest.raises(RunFileError) as exc:
            read(path)
        one_line_naming(exc, path)
        assert "resume=false" in str(exc.value)
    told = []
    assert finished_or_skip(path, told.append) is None and len(told) == 1
    assert read_result(tmp_path / "missing.json") is None


def test_a_results_file_that_is_a_link_or_a_folder_is_refused(tmp_path, outside):
    link = plant(tmp_path / "run" / "results.json", outside)
    with pytest.raises(LinkRefused) as exc:
        read_result(link)
    one_line_naming(exc, link)
    (tmp_path / "other" / "results.json").mkdir(parents=True)
    with pytest.raises(RunFileError):
        read_result(tmp_path / "other" / "results.json")


@pytest.mark.parametrize("content", [
    "3", "[]", "", "{bad", json.dumps({"epoch": None, "epochs": 3, "step": 0, "steps": 10}),
    json.dumps({"epoch": 1, "epochs": None, "step": None, "steps": 10, "acc": None}),
    json.dumps({"epoch": 1, "epochs": 3, "step": 0, "steps": 10, "acc": "high"}),
])
def test_a_corrupt_progress_file_reads_as_none(tmp_path, content):
    (tmp_path / "progress.json").write_text(content)
    p = read_progress(tmp_path)
    assert p is None
    assert fraction(p) == 0.0 and epochs_done(p) == 0.0 and run_line("ce", p) == "ce: starting"


def test_the_leaderboard_goes_on_past_a_corrupt_file(ws, caplog):
    for seed in (0, 1):
        RunResult.from_dict(record(seed)).save(ws / "runs" / f"cifar10_lt-ce-abc-seed{seed}"
                                                / "results.json")
    bad = ws / "runs" / "cifar10_lt-ce-abc-seed2" / "results.json"
    bad.parent.mkdir()
    bad.write_text("[]")
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        rows = leaderboard({"workspace": str(ws), "tracking": {"tracker": "local"}})
    assert [(r.method, r.n) for r in rows] == [("ce", 2)]
    assert [m for m in caplog.messages if str(bad) in m and "\n" not in m]


def test_the_per_class_panel_goes_on_past_a_corrupt_file(ws):
    RunResult.from_dict(record(0)).save(ws / "runs" / NAME / "results.json")
    bad = ws / "runs" / "cifar10_lt-ce-abc-seed1" / "results.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(record(1, final={"epoch": 1, "acc": 0.5, "per_class": ["x"]})))
    told = []
    lines, missing = class_lines([row(seeds=["0", "1"], n=2)], ws, told.append)
    assert lines["ce"]["seeds"] == 1 and missing == ["cifar10_lt-ce-abc-seed1"]
    assert len(told) == 1 and str(bad) in told[0]


def test_leaderboard_plot_to_a_format_matplotlib_cannot_write_is_refused_up_front(ws, capsys):
    RunResult.from_dict(record()).save(ws / "runs" / NAME / "results.json")
    code = main(["leaderboard", f"workspace={ws}", "tracking.tracker=local",
                 "--plot", str(ws / "out.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "out.txt" in err and ".png" in err
    assert not (ws / "out.txt").exists()


def test_train_refuses_a_corrupt_results_file_and_resume_false_trains_it_again(tmp_path):
    tiny = ["dataset=synthetic_lt", "imbalance=10", "protocol.epochs=1", "precision=fp32",
            "quiet=true", "tracking.tracker=local", f"workspace={tmp_path}"]
    results = run_folder(load_config([], tiny)) / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text("[]")
    with pytest.raises(RunFileError) as exc:
        harness.train(load_config([], tiny))
    one_line_naming(exc, results)
    assert harness.train(load_config([], [*tiny, "resume=false"])).status == "FINISHED"
    assert finished_result(results).status == "FINISHED"
