"""Progress of a sweep: live lines in a terminal, plain lines in a log, one line an epoch in
each run's log; and the arithmetic behind the bars and the ETA."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from lt_bench.progress import RunProgress, SweepDisplay, fraction, read_progress

SWEEP = ["-m", "lt_bench", "sweep", "dataset=synthetic_lt", "imbalance=10", "'methods=[ce,dv]'",
         "protocol.epochs=6", "precision=fp32", "tracking.tracker=local", "jobs=2"]


def sweep_args(ws):
    return [a.strip("'") for a in SWEEP] + [f"workspace={ws}"]


def test_fraction_counts_epochs_and_steps():
    assert fraction(None) == 0.0
    assert fraction({"epoch": 1, "epochs": 4, "step": 5, "steps": 10}) == pytest.approx(0.375)
    assert fraction({"epoch": 4, "epochs": 4, "step": 0, "steps": 10}) == 1.0


def test_run_progress_round_trips_and_throttles(tmp_path):
    p = RunProgress(tmp_path, epochs=3, steps_per_epoch=10)
    p.step(0, 1)
    p.step(0, 2)  # within WRITE_EVERY_S of the first: not written
    assert read_progress(tmp_path) == {"epoch": 0, "epochs": 3, "step": 1, "steps": 10,
                                       "acc": None}
    p.epoch_done(0, 0.25)  # always written
    assert read_progress(tmp_path)["epoch"] == 1 and read_progress(tmp_path)["acc"] == 0.25


def test_eta_extrapolates_the_elapsed_time(monkeypatch):
    d = SweepDisplay(total=4, live=False)
    d.started -= 100  # 100 s ago
    d.done = 1
    assert d.eta([0.0]) == "ETA 5 min 00 s"  # a quarter done in 100 s: 300 s to go


def test_sweep_in_a_terminal_shows_live_lines_per_run(tmp_path):
    master, slave = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, *sweep_args(tmp_path)], stdout=slave,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    os.close(slave)
    out = b""
    deadline = time.time() + 240
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert "total: " in text and "ETA" in text
    assert "ce seed=0: epoch" in text and "dv seed=0: epoch" in text
    assert "\x1b[" in text  # redrawn in place


def test_sweep_into_a_log_writes_plain_lines_and_epoch_lines_per_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *sweep_args(tmp_path)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\r" not in out.stdout and "\x1b[" not in out.stdout
    assert "final acc" in out.stdout
    logs = list((tmp_path / "sweeps" / "logs").glob("*.log"))
    assert len(logs) == 2
    for log in logs:
        assert "\r" not in log.read_text()
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("epoch ")]
        assert [ln.split()[1] for ln in lines] == [f"{k}/6" for k in range(1, 7)]
