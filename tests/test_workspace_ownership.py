"""One owner per run: a live owner blocks a second trainer; a dead owner's run is taken over."""

import os
import signal
import subprocess
import sys

import pytest

from lt_bench.config import load_config
from lt_bench.run.train import train
from lt_bench.workspace.ownership import RunOwned, claim_run, owner_of

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.batch_size=64", "protocol.epochs=1",
        "precision=fp32", "quiet=true", "tracking.tracker=local"]


def test_a_live_claim_blocks_a_second_one_and_release_frees_it(tmp_path):
    with claim_run(tmp_path / "run"):
        assert owner_of(tmp_path / "run") == f"pid {os.getpid()} on {os.uname().nodename}"
        with pytest.raises(RunOwned, match=rf"is being trained by pid {os.getpid()}"):
            claim_run(tmp_path / "run")
    assert owner_of(tmp_path / "run") is None
    claim_run(tmp_path / "run").release()


def test_the_run_of_a_process_killed_with_sigkill_is_taken_over(tmp_path):
    code = ("import sys, time; from lt_bench.workspace.ownership import claim_run; "
            f"c = claim_run({str(tmp_path / 'run')!r}); print('claimed', flush=True); "
            "time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "claimed"
        assert owner_of(tmp_path / "run") == f"pid {child.pid} on {os.uname().nodename}"
        with pytest.raises(RunOwned):
            claim_run(tmp_path / "run")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert owner_of(tmp_path / "run") is None
    claim_run(tmp_path / "run").release()


def test_train_refuses_a_run_another_live_process_trains_before_loading_data(tmp_path,
                                                                            monkeypatch):
    import lt_bench.run.train as harness
    from lt_bench.workspace.layout import run_folder

    cfg = load_config([], [*TINY, f"workspace={tmp_path}"])
    real_load = harness.load_data

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded for a run another process owns")

    with claim_run(run_folder(cfg)):
        monkeypatch.setattr(harness, "load_data", no_data)
        with pytest.raises(RunOwned, match="is being trained by pid"):
            train(cfg)
    monkeypatch.setattr(harness, "load_data", real_load)
    assert train(cfg).status == "FINISHED"
