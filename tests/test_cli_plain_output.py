"""What a person reads off a log or a picture: plain lines without a terminal, no MLflow table
chatter, error bars that stay on the 0–100 scale."""

from __future__ import annotations

import logging

from lt_bench.compare.plot import clipped
from lt_bench.config import load_config
from lt_bench.run.train import train


def test_error_bars_stop_at_0_and_100():
    assert clipped([2.0, 50.0, 99.0], [5.0, 5.0, 5.0]) == [[2.0, 5.0, 5.0], [5.0, 5.0, 1.0]]


def test_train_off_a_terminal_writes_plain_lines(tmp_path, capfd):
    cfg = load_config([], ["dataset=synthetic_lt", "protocol.epochs=2", "protocol.milestones=[]",
                           f"workspace={tmp_path}", "deterministic=true",
                           "tracking.tracker=local"])
    train(cfg)
    out, err = capfd.readouterr()
    assert "\r" not in out + err  # no progress-bar frames in a log
    assert "epoch 1/2" in out and "epoch 2/2" in out


def test_a_new_store_is_made_without_mlflow_chatter(tmp_path, capfd, caplog):
    from lt_bench.tracking.store import client, sqlite_uri

    with caplog.at_level(logging.INFO):
        client(sqlite_uri(tmp_path / "mlflow.db"))
    out, err = capfd.readouterr()
    assert (tmp_path / "mlflow.db").is_file()
    assert "Creating initial MLflow database tables" not in out + err + caplog.text


def test_lt_bench_ui_makes_the_store_but_no_experiment(tmp_path):
    """An empty experiment of the default setting would be listed above the user's own."""
    from lt_bench.commands.ui import server_command
    from lt_bench.tracking.store import client, tracking_uri

    cfg = load_config([], [f"workspace={tmp_path}"])
    command, uri = server_command(cfg, "127.0.0.1", 5999)
    assert uri == tracking_uri(cfg) and "--backend-store-uri" in command
    names = {e.name for e in client(uri).search_experiments()}
    assert names <= {"Default"}  # MLflow's own, made with the tables
