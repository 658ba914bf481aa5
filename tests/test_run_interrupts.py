"""A signal at any moment of a run leaves the tracker's status true: the two windows where a
SIGTERM used to leave a run RUNNING for ever (just after the tracker's run is created, just after
results.json is written) are signalled at exactly that moment, not by timing luck."""

import os
import signal

import pytest

import lt_bench.run.assemble as parts
from lt_bench.config import load_config
from lt_bench.run.interrupts import held, terminate_as_interrupt
from lt_bench.run.train import train
from lt_bench.tracking.base import Tracker
from lt_bench.workspace.record import RunResult, read_result

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.batch_size=64", "protocol.epochs=1",
        "precision=fp32", "quiet=true", "tracking.tracker=local"]


class Recording(Tracker):
    """A tracker that remembers what it was told, as a store would."""

    def __init__(self, cfg=None, signal_after_start=False):
        super().__init__(cfg)
        self.signal_after_start = signal_after_start
        self.status: list[str] = []

    def start(self, cfg, run_dir, data_info, resume_id=None):
        self.status.append("RUNNING")
        if self.signal_after_start:  # the store has the run; the harness has not its id yet
            os.kill(os.getpid(), signal.SIGTERM)
        return "run-1"

    def finish(self, result, status="FINISHED"):
        self.status.append(status)


def test_sigterm_just_after_the_tracker_run_is_created_records_killed(tmp_path, monkeypatch):
    tracker = Recording(signal_after_start=True)
    monkeypatch.setattr(parts, "build_tracker", lambda cfg: tracker)
    with pytest.raises(KeyboardInterrupt):
        train(load_config([], [*TINY, f"workspace={tmp_path}"]))
    assert tracker.status == ["RUNNING", "KILLED"]


def test_sigterm_just_after_results_json_is_written_still_finishes_the_tracker_run(
        tmp_path, monkeypatch):
    tracker = Recording()
    monkeypatch.setattr(parts, "build_tracker", lambda cfg: tracker)
    save = RunResult.save

    def save_then_signal(self, path):
        save(self, path)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(RunResult, "save", save_then_signal)
    with pytest.raises(KeyboardInterrupt):
        train(load_config([], [*TINY, f"workspace={tmp_path}"]))
    assert tracker.status == ["RUNNING", "FINISHED"]  # not left RUNNING, not overwritten KILLED
    [results] = list(tmp_path.glob("runs/*/results.json"))
    assert read_result(results).status == "FINISHED"


def test_held_delivers_a_signal_once_the_block_is_done():
    done = []
    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt):
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("the whole block ran")
        done.append("never: the signal is delivered as the block ends")
    assert done == ["the whole block ran"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # every handler put back
