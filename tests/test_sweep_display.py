"""The sweep's display of its runs' progress: live lines in a terminal, plain lines in a log,
one line an epoch in each run's log; and the arithmetic behind the bars and the ETA."""

import io
import json
import os
import pty
import select
import subprocess
import sys
import time

from lt_bench.sweep.display import STOPPED_AFTER_S, SweepDisplay

SWEEP = ["-m", "lt_bench", "sweep", "dataset=synthetic_lt", "imbalance=10", "'methods=[ce,dv]'",
         "protocol.epochs=6", "precision=fp32", "tracking.tracker=local", "jobs=2"]


def sweep_args(ws):
    return [a.strip("'") for a in SWEEP] + [f"workspace={ws}"]


def test_eta_extrapolates_the_elapsed_time(monkeypatch):
    d = SweepDisplay(total=4, epochs=40, live=False)
    d.started -= 100  # 100 s ago
    d.finished(10)
    assert d.done == 1
    assert d.eta(0.0) == "ETA 5 min 00 s"  # a quarter of the epochs in 100 s: 300 s to go


def write_progress(folder, epoch, epochs, step=0, steps=10):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "progress.json").write_text(json.dumps(
        {"epoch": epoch, "epochs": epochs, "step": step, "steps": steps, "acc": None}))
    return folder


def total_line(d, running):
    d.stream.seek(0)
    d.stream.truncate()
    d.next_draw, d.drawn = 0.0, 0  # draw now, from the top of the (fresh) stream
    d.update(running)
    return d.stream.getvalue().splitlines()


def test_a_forked_sweeps_eta_counts_the_epochs_it_trains(tmp_path, monkeypatch):
    """15 runs of 34 epochs forked from 3 trunks of 30: 3 * 30 + 15 * 4 = 150 epochs to train.
    Two trunks at 28 % after 9 minutes: 16.8 epochs of 150 done, about 71 min to go (counted in
    runs, the ETA said 3 h 09 min there)."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    d = SweepDisplay(total=15, epochs=150, stream=io.StringIO(), live=True)

    def work(seconds):  # the sweep's loop updates the display every fraction of a second
        for _ in range(int(seconds)):
            clock[0] += 1
            d.update([])

    work(9 * 60)
    trunks = [("trunk seed=0, epochs 1-30", write_progress(tmp_path / "t0", 8, 30, step=4), 0,
               30),
              ("trunk seed=1, epochs 1-30", write_progress(tmp_path / "t1", 8, 30, step=4), 0,
               30)]
    lines = total_line(d, trunks)
    assert lines[0].startswith("trunk seed=0, epochs 1-30: epoch 9/30") and "28 %" in lines[0]
    assert lines[-1].startswith("total: 0/15 runs ") and "  11 %" in lines[-1]
    assert lines[-1].endswith("ETA 1 h 11 min")  # 540 s * (150 - 16.8) / 16.8 = 4281 s

    # two trunks done (not runs), one trunk and a branch running: the branch that has just
    # started at epoch 30 of 34 has trained nothing yet; its line says where it is
    d.finished(30, run=False)
    d.finished(30, run=False)
    work(36 * 60)  # 45 min in all
    branch = ("ce seed=0", write_progress(tmp_path / "b0", 30, 34), 30, 4)
    trunk = ("trunk seed=2, epochs 1-30", write_progress(tmp_path / "t2", 15, 30), 0, 30)
    lines = total_line(d, [branch, trunk])
    assert lines[0].startswith("ce seed=0: epoch 31/34")
    assert lines[-1].startswith("total: 0/15 runs ") and "  50 %" in lines[-1]
    assert lines[-1].endswith("ETA 45 min 00 s")  # 75 of 150 epochs in 45 min
    write_progress(tmp_path / "b0", 32, 34, step=5)  # 2.5 epochs into the branch
    assert total_line(d, [branch, trunk])[-1].endswith("ETA 42 min 05 s")  # 2700 * 72.5 / 77.5
    d.finished(4)  # the branch ended: a run, and its 4 epochs
    assert d.done == 1 and d.epochs_done == 64


def test_plan_work_counts_trunk_branch_and_resumed_epochs(tmp_path):
    from omegaconf import OmegaConf

    from lt_bench.sweep.jobs import Job
    from lt_bench.sweep.report import Report
    from lt_bench.sweep.trunks import plan_work
    from lt_bench.workspace.layout import TRUNK_MARK

    cfg = OmegaConf.create({"protocol": {"epochs": 34}, "resume": True})
    trunks = [Job([], cfg, "ce", seed, run_dir=tmp_path / f"t{seed}", trunk_epochs=30)
              for seed in range(3)]
    branches = [Job([], cfg, m, seed, run_dir=tmp_path / f"{m}{seed}", after=trunks[seed])
                for seed in range(3) for m in "abcde"]
    assert plan_work(trunks + branches) == 3 * 30 + 15 * 4
    assert (branches[0].first_epoch, branches[0].epochs_to_train) == (30, 4)
    assert (trunks[0].first_epoch, trunks[0].epochs_to_train) == (0, 30)

    # a finished trunk trains nothing; a trunk and a run that resume from their own
    # checkpoints train what is left after the epoch their progress reached
    (tmp_path / "t0").mkdir()
    (tmp_path / "t0" / TRUNK_MARK).write_text(json.dumps({"epochs": 30}))
    for folder, epoch, epochs in (("t1", 12, 30), ("a2", 31, 34)):
        write_progress(tmp_path / folder, epoch, epochs, step=3)
        (tmp_path / folder / "checkpoint.pt").write_bytes(b"")
    alone = Job([], cfg, "ce", 7, run_dir=tmp_path / "alone")
    write_progress(tmp_path / "alone", 20, 34)  # no checkpoint: it starts again
    assert plan_work(trunks + branches + [alone]) == 0 + 18 + 30 + 15 * 4 - 1 + 34
    assert (branches[10].first_epoch, branches[10].epochs_to_train) == (31, 3)

    # a trunk's end adds its epochs but no run; a branch's adds both
    d = SweepDisplay(total=16, epochs=141, stream=io.StringIO(), live=False)
    report = Report("final", 16, [], 16, d.message, d)
    report(trunks[1], None, 1.0, "")
    report(branches[5], None, 1.0, "exit code 1")
    assert (d.done, d.epochs_done) == (1, 22)


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


def test_eta_leaves_out_the_time_the_sweep_was_stopped():
    d = SweepDisplay(total=4, epochs=40, live=False, stream=io.StringIO())
    d.started -= 1100  # started 1100 s ago, of which the last 1000 s stopped (kill -STOP)
    d.last_update -= 1000
    d.finished(10)
    d.update([])
    assert d.eta(0.0) == "ETA 5 min 00 s"  # a quarter in 100 s of work: 300 s to go
    d.started -= STOPPED_AFTER_S / 2  # 15 s more, with a silence too short to be a stop
    d.last_update -= STOPPED_AFTER_S / 2
    d.update([])
    assert d.eta(0.0) == "ETA 5 min 45 s"  # 115 s of work for a quarter
