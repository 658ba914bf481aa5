"""The training harness on generated data: results, resume after a kill, and 2-process DDP."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lt_bench.config import load_config
from lt_bench.run.assemble import lr_factor
from lt_bench.run.train import train

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.batch_size=64", "protocol.lr=0.05",
        "protocol.warmup_epochs=0", "precision=fp32", "quiet=true", "deterministic=true"]


def run_cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lt_bench", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_train_records_final_and_best_per_group(tmp_path):
    cfg = load_config([], TINY + ["method=dv", "protocol.epochs=2", "protocol.start_epoch=1",
                                  f"workspace={tmp_path}"])
    results = train(cfg)
    assert results.status == "FINISHED"
    counts = results.train_counts
    assert counts == [200, 94, 44, 21, 10]  # int(200 * 20^(-i/4)): 200/20^0.75 = 21.1
    for which in ("final", "best"):
        r = results.score(which)
        assert 0.0 <= r.acc <= 1.0 and len(r.per_class) == 5
        # groups from training counts: many > 100, medium 20..100, few < 20
        assert r.classes_many == 1 and r.classes_medium == 3 and r.classes_few == 1
    assert results.final.epoch == 1
    assert sum(map(sum, results.confusion)) == 100  # 20 test images x 5 classes, no duplicates
    # DV weights: uniform in epoch 0 (before start_epoch), then from the epoch-0 statistics
    assert results.class_weights[0] == [1.0] * 5
    weights = torch.tensor(results.class_weights[1], dtype=torch.float64)
    assert float((weights * torch.tensor(counts)).sum()) == pytest.approx(sum(counts), rel=1e-5)
    saved = json.loads((tmp_path / "runs").glob("*/results.json").__next__().read_text())
    assert saved["final"]["acc"] == results.final.acc and saved["schema"] == 1


def test_lr_schedule_warmup_and_step_decay():
    p = load_config([], ["protocol=ldam_cifar"]).protocol
    assert lr_factor(0, 10, p) == pytest.approx(1 / 50)  # linear warm-up over 5 epochs
    assert lr_factor(49, 10, p) == pytest.approx(1.0)
    assert lr_factor(1599, 10, p) == pytest.approx(1.0)
    assert lr_factor(1600, 10, p) == pytest.approx(0.01)  # epoch 160
    assert lr_factor(1800, 10, p) == pytest.approx(1e-4)  # epoch 180


def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = TINY + ["method=dv", "protocol.epochs=4", "protocol.start_epoch=2"]
    reference = run_cli(args + [f"workspace={tmp_path / 'ref'}"])

    interrupted = tmp_path / "killed"
    proc = run_cli(args + [f"workspace={interrupted}"], start_new_session=True)
    deadline = time.time() + 240
    checkpoints = []
    while time.time() < deadline and proc.poll() is None:
        checkpoints = list(interrupted.glob("runs/*/checkpoint.pt"))
        if checkpoints:
            state = torch.load(checkpoints[0], weights_only=False)
            if state["epoch"] >= 1:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(interrupted.glob("runs/*/results.json"))
    resumed = run_cli(args + [f"workspace={interrupted}"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    def load(ws):
        return json.loads(next(ws.glob("runs/*/results.json")).read_text())

    a, b = load(tmp_path / "ref"), load(interrupted)
    assert b["final"] == a["final"] and b["best"] == a["best"]
    assert b["class_weights"] == a["class_weights"]
    assert [h["train/loss"] for h in b["history"]] == [h["train/loss"] for h in a["history"]]


def test_a_run_stopped_by_sigterm_is_recorded_killed_not_left_running(tmp_path):
    """What a dying sweep sends its workers (and ``kill`` sends by default), before the run's
    first checkpoint: the MLflow run must not stay RUNNING for ever."""
    from mlflow import MlflowClient

    proc = run_cli(TINY + ["protocol.epochs=500", f"workspace={tmp_path}"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    def seed_runs():
        if not (tmp_path / "mlflow.db").exists():
            return []
        experiments = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(experiments, "tags.`lt.role` = 'seed'")

    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not seed_runs():
        time.sleep(0.5)
    assert proc.poll() is None and seed_runs(), "the run ended before it could be stopped: " + \
        proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    assert [r.info.status for r in seed_runs()] == ["KILLED"]


def test_finished_run_is_not_trained_again(tmp_path):
    cfg = load_config([], TINY + ["protocol.epochs=1", f"workspace={tmp_path}"])
    first = train(cfg)
    again = train(cfg)
    assert again.final == first.final and again.wall_time_s == first.wall_time_s


@pytest.mark.slow
def test_two_process_ddp_on_gloo(tmp_path):
    """torchrun with 2 CPU processes: rank 0 alone writes, evaluation covers each test image
    once, and the class-volume weights come from the statistics of both ranks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --max-restarts=1, as docs/CONFIG.md ("Several GPUs") advises: gloo now and then aborts a rank as
    # the ranks start ("terminate called without an active exception", seen twice in CI; of the kind
    # in pytorch/pytorch#188266); the restarted workers resume from the run's checkpoint. That is safe
    # here and hides nothing: a resumed run ends bit-identical to one never interrupted
    # (test_killed_run_resumes_to_the_same_result and the fork tests hold that), so a restart cannot
    # change any number asserted below; and a defect that made a rank fail every time still fails,
    # since one restart is all torchrun allows.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--max-restarts=1", "--master_port=29517", "-m", "lt_bench", "train", *TINY,
           "method=dv",
           "protocol.epochs=2", "protocol.start_epoch=1", "deterministic=false",
           f"workspace={tmp_path}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/results.json")]
    assert len(results) == 1
    r = results[0]
    assert sum(map(sum, r["confusion"])) == 100
    weights = torch.tensor(r["class_weights"][1], dtype=torch.float64)
    counts = torch.tensor(r["train_counts"], dtype=torch.float64)
    assert float((weights * counts).sum()) == pytest.approx(float(counts.sum()), rel=1e-5)
    assert not torch.allclose(weights, torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("override,match", [
    ("method.bta=0.9", "no option 'bta'"),
    ("backbone=resnet33", "did you mean 'resnet32'"),
    ("tracking.tracker=wandb", "unknown tracker 'wandb'"),
])
def test_misspelt_names_fail_before_any_data_is_loaded(tmp_path, monkeypatch, override, match):
    import lt_bench.run.train as harness
    from lt_bench import LtBenchError

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the names were checked")

    monkeypatch.setattr(harness, "load_data", no_data)
    cfg = load_config([], ["method=effective_number", override, f"workspace={tmp_path}"])
    with pytest.raises(LtBenchError, match=match):
        train(cfg)
