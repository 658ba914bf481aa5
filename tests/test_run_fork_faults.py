"""The fork when something is wrong with a trunk: a truncated checkpoint behind a finished mark
is trained again instead of failing every branch for ever, and a trunk that another sweep is
training is waited for, then branched from, instead of its branches being dropped."""

from __future__ import annotations

import threading

import pytest

from lt_bench.commands.sweep import run_sweep
from lt_bench.config import load_config
from lt_bench.run.fork import finished_trunk, trunk_folder
from lt_bench.run.train import train, train_trunk
from lt_bench.sweep.grid import expand
from lt_bench.sweep.trunks import plan
from lt_bench.workspace.ownership import claim_run

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.batch_size=64", "protocol.lr=0.05",
        "protocol.warmup_epochs=0", "precision=fp32", "quiet=true", "deterministic=true",
        "tracking.tracker=local", "protocol.epochs=3", "protocol.start_epoch=2",
        "protocol.milestones=[2]"]


def test_a_truncated_trunk_checkpoint_is_trained_again(tmp_path, capsys):
    cfg = load_config([], [*TINY, "method=effective_number", f"workspace={tmp_path}"])
    folder = trunk_folder(cfg, 1)
    train_trunk(cfg, 1)
    assert finished_trunk(folder, 1)
    checkpoint = folder / "checkpoint.pt"
    whole = checkpoint.read_bytes()
    checkpoint.write_bytes(whole[: len(whole) // 2])  # a disk that filled, a copy cut short
    assert not finished_trunk(folder, 1)  # the mark alone no longer vouches for it
    train_trunk(cfg, 1)
    assert "does not match its trunk.json" in capsys.readouterr().out
    assert finished_trunk(folder, 1) and len(checkpoint.read_bytes()) == len(whole)
    assert train(cfg, trunk=str(folder)).status == "FINISHED"


@pytest.mark.slow  # a sweep of three worker processes on generated data
def test_a_trunk_another_sweep_trains_is_waited_for_then_branched_from(tmp_path):
    args = [*TINY, "methods=[effective_number,dv]", "jobs=1", f"workspace={tmp_path}"]
    [trunk] = plan(expand(args).jobs)
    lines: list[str] = []
    waited = threading.Event()

    def out(line: str) -> None:
        lines.append(line)
        if "being trained by" in line:
            waited.set()

    claim = claim_run(trunk.folder)  # another sweep's worker, training this trunk
    summary: dict = {}
    sweep = threading.Thread(target=lambda: summary.update(run_sweep(args, out=out)))
    sweep.start()
    try:
        assert waited.wait(timeout=120), lines
    finally:
        claim.release()  # it stops without finishing: this sweep trains the trunk itself
    sweep.join(timeout=600)
    assert not sweep.is_alive()
    assert sorted(summary["finished"]) == ["dv seed=0", "effective_number seed=0"], lines
    assert not summary["failed"] and not summary["busy"]
    assert finished_trunk(trunk.folder, trunk.epochs)
