"""A tracking server lost mid-run: training goes on, the metrics arrive when the server is back,
or the run finishes locally and says what the store lacks. Against a real ``mlflow server``
process that the tests stop and start again; the queue's back-off against a fake clock."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests
from omegaconf import OmegaConf
from test_tracking import DATA_INFO, fake_results, make_cfg

from lt_bench.tracking import outbox as outbox_module
from lt_bench.tracking.mlflow_tracker import MlflowTracker
from lt_bench.tracking.outbox import MAX_BACKOFF_S, Outbox, spans


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1:``port`` over ``root/server.db``, artifacts proxied into
    ``root/artifacts``; its own process group, so stopping it takes its workers too."""

    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.root / "server.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise AssertionError(f"mlflow server did not answer in {timeout_s} s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after 15 s; returns once the
        group is gone (the port is then refused)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        group = proc.pid  # start_new_session: the leader's pid is the group's id
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 15.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader, else its zombie keeps the group alive
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def log_tail(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-2000:]


@pytest.fixture()
def server(tmp_path, template_db):
    root = tmp_path / "server"
    root.mkdir()
    shutil.copy(template_db, root / "server.db")  # migrated already: starts seconds sooner
    srv = Server(root, free_port())
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def epoch_metrics(epoch: int) -> dict[str, float]:
    return {"train/loss": 2.0 - 0.25 * epoch, "lr": 0.1, "test/acc": 0.3 + 0.05 * epoch}


def lines_naming(caplog, text: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and r.name.startswith("lt_bench") and text in r.getMessage()]


def start_tracker(tmp_path: Path, uri: str) -> tuple[MlflowTracker, dict]:
    cfg = make_cfg(tmp_path / "ws", tracking={"tracker": "mlflow", "uri": uri,
                                              "experiment": None})
    tracker = MlflowTracker(OmegaConf.create(cfg))
    tracker.start(cfg, tmp_path / "ws" / "runs" / "x", DATA_INFO)
    return tracker, cfg


def timed_epochs(tracker: MlflowTracker, epochs: range) -> list[float]:
    took = []
    for epoch in epochs:
        started = time.monotonic()
        tracker.log_metrics(epoch_metrics(epoch), step=epoch)
        took.append(time.monotonic() - started)
    return took


@pytest.mark.slow
def test_metrics_logged_while_the_server_is_away_arrive_when_it_is_back(
        tmp_path, server, caplog, monkeypatch):
    from mlflow import MlflowClient

    # the restart takes several seconds, so a 1 s back-off has passed by epoch 5
    monkeypatch.setattr(outbox_module, "FIRST_BACKOFF_S", 1.0)
    caplog.set_level(logging.INFO, logger="lt_bench")
    tracker, cfg = start_tracker(tmp_path, server.uri)
    timed_epochs(tracker, range(2))
    server.stop()
    took = timed_epochs(tracker, range(2, 5))
    assert max(took) < 3 and sum(took) < 5, took  # training does not wait for the server
    assert len(lines_naming(caplog, server.uri)) == 1  # one line for the outage, not per epoch
    server.start()
    timed_epochs(tracker, range(5, 6))
    c = MlflowClient(tracking_uri=server.uri)
    # delivered by that epoch's call, before finish: every epoch with its own step and value
    for key in ("train/loss", "test/acc"):
        history = sorted((m.step, m.value) for m in c.get_metric_history(tracker.run_id, key))
        assert history == [(e, pytest.approx(epoch_metrics(e)[key])) for e in range(6)]
    assert lines_naming(caplog, "answers again", logging.INFO)
    tracker.finish(fake_results(cfg, 0.6, epochs=6), status="FINISHED")
    run = c.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["final/acc"] == pytest.approx(0.6)
    assert run.data.metrics["best/acc"] == pytest.approx(0.61)
    assert "results.json" in {a.path for a in c.list_artifacts(tracker.run_id)}
    assert len(lines_naming(caplog, server.uri)) == 1  # and nothing more to say at the end


@pytest.mark.slow
def test_a_server_that_never_returns_leaves_the_run_finished_locally_in_one_line(
        tmp_path, server, caplog):
    from mlflow import MlflowClient

    caplog.set_level(logging.INFO, logger="lt_bench")
    tracker, cfg = start_tracker(tmp_path, server.uri)
    timed_epochs(tracker, range(2))
    server.stop()
    assert max(timed_epochs(tracker, range(2, 5))) < 3
    tracker.finish_wait_s = 4.0
    started = time.monotonic()
    tracker.finish(fake_results(cfg, 0.6, epochs=5), status="FINISHED")  # does not raise
    took = time.monotonic() - started
    assert 2.5 < took < 4.0 + 6, took  # it kept trying for the bound, and no longer
    [line] = lines_naming(caplog, "finished locally")
    assert len(lines_naming(caplog, server.uri)) == 2  # the outage, then what the store lacks
    assert "\n" not in line and server.uri in line
    assert "steps 2-4 of lr, test/acc, train/loss" in line and "final summary" in line
    assert str(tmp_path / "ws" / "runs" / "x" / "results.json") in line
    # what the line says is missing is missing: read the server's database directly
    c = MlflowClient(tracking_uri=f"sqlite:///{server.root / 'server.db'}")
    steps = sorted(m.step for m in c.get_metric_history(tracker.run_id, "train/loss"))
    assert steps == [0, 1]
    run = c.get_run(tracker.run_id)
    assert run.info.status == "RUNNING" and "final/acc" not in run.data.metrics


# -- the queue alone, against a fake clock ------------------------------------------------------
class FlakyServer:
    def __init__(self):
        self.up, self.attempts, self.received = True, 0, []

    def send(self, metrics: list) -> None:
        self.attempts += 1
        if not self.up:
            raise requests.ConnectionError("[Errno 111] Connection refused")
        self.received.extend((m.key, m.step, m.value) for m in metrics)


def metrics_of(step: int) -> list:
    from mlflow.entities import Metric

    return [Metric("train/loss", float(step), 1000 + step, step)]


def test_the_queue_leaves_a_dead_server_alone_until_its_doubling_deadline(caplog):
    now = [0.0]
    srv = FlakyServer()
    box = Outbox("http://example:5000", srv.send, clock=lambda: now[0])
    box.put(metrics_of(0), 0)
    srv.up = False
    box.put(metrics_of(1), 1)  # fails: back off 10 s
    assert srv.attempts == 2
    now[0] = 9.9
    box.put(metrics_of(2), 2)
    assert srv.attempts == 2  # within the back-off: not contacted
    now[0] = 10.0
    box.put(metrics_of(3), 3)  # tried, fails: back off 20 s
    now[0] = 29.9
    box.put(metrics_of(4), 4)
    assert srv.attempts == 3
    srv.up = True
    now[0] = 30.0
    box.put(metrics_of(5), 5)
    assert srv.received == [("train/loss", s, float(s)) for s in range(6)]  # in order, all
    assert not box.pending and not box.down
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "from step 1 on" in warnings[0].getMessage()


def test_the_back_off_doubles_up_to_its_cap():
    now = [0.0]
    srv = FlakyServer()
    srv.up = False
    box = Outbox("http://example:5000", srv.send, clock=lambda: now[0])
    waits = []
    for step in range(8):
        box.put(metrics_of(step), step)
        waits.append(box.retry_at - now[0])
        now[0] = box.retry_at
    assert waits == [10, 20, 40, 80, 160, 300, 300, 300] and MAX_BACKOFF_S == 300


def test_a_batch_the_server_refuses_is_dropped_not_retried(caplog):
    from mlflow.exceptions import MlflowException

    def refuse(metrics):
        raise MlflowException("INVALID_PARAMETER_VALUE: bad metric")

    box = Outbox("http://example:5000", refuse, clock=lambda: 0.0)
    box.put(metrics_of(3), 3)
    assert not box.pending and not box.down
    assert any("refused step 3 of train/loss" in r.getMessage() for r in caplog.records)


def test_spans_of_steps():
    assert spans([0, 2, 3, 4, 7]) == "0, 2-4, 7"
    assert spans([5]) == "5"
