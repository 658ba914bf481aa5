"""benchmarks/device_check: the whole check in smoke mode on the CPU, and its pure helpers
(the projection arithmetic, run comparison, output parsing, the CIFAR-shaped data plugin)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks.device_check import projection as proj
from benchmarks.device_check import runs
from benchmarks.device_check.common import REPO, Child, Clock, CombinedLog
from lt_bench.device.defaults import resolve_precision

PACKAGE = REPO / "benchmarks" / "device_check"


def run_check(*args, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "benchmarks.device_check", *args], env=env,
                          cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_smoke_check_on_cpu(tmp_path):
    out = tmp_path / "out"
    # A budget far above what the smoke check needs (about 2 minutes here): its sections end when
    # their toy work is done, and with the default 170 s a loaded machine pushed a section past
    # its share and failed the test. How long it takes is a benchmark's question, not a test's.
    done = run_check(str(out), "--device", "cpu", "--smoke", "--budget", "1500", timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # three files come back, nothing else: run folders live in the work folder, then go
    assert sorted(p.name for p in out.iterdir()) == [
        "device_check.json", "device_check.log", "device_check.md"]
    data = json.loads((out / "device_check.json").read_text())
    assert not Path(data["work_dir"]).exists()
    assert data["smoke"] is True and data["torch"] == torch.__version__
    assert set(data["sections"]) == {"correctness", "speed", "concurrency", "projection",
                                     "long_runs"}
    assert all(s["status"] == "ok" for s in data["sections"].values()), data["errors"]
    assert data["errors"] == []

    corr = data["sections"]["correctness"]
    for method in ("dv", "pv", "bv"):
        r = corr["volume_weights"]["methods"][method]
        assert r["passed"] and r["max_rel_diff"] <= 1e-5 and not r["uniform"]
    checks = corr["checks"]
    assert checks["resume"]["passed"] and checks["deterministic"]["passed"]
    assert corr["runs"]["ii_killed"]["interrupted"]
    assert not corr["runs"]["ii_killed"]["results_before_resume"]
    assert corr["runs"]["ii_resumed"]["said_resuming"]
    # what precision=auto resolves to on this CPU, as the run recorded it
    assert checks["precision"]["found"] == resolve_precision("auto", torch.device("cpu"))[0]
    assert corr["harness_epoch_s"] > 0

    variants = data["sections"]["speed"]["variants"]
    for name, r in variants.items():
        if "reduce-overhead" in name:
            assert r["status"] == "skipped" and r["reason"] == "CUDA only"
            continue
        assert r["status"] == "ok", (name, r)
        assert r["img_per_s"] > 0
        if r.get("compile"):
            assert r["outputs_match"] and r["compile_s"] >= 0
    levels = data["sections"]["concurrency"]["levels"]
    assert set(levels) == {"1", "2"}
    assert all(r["aggregate_img_per_s"] > 0 and r["gpu_util_mean"] == "n/a"
               for r in levels.values())

    projection = data["sections"]["projection"]
    assert projection["rows"]["model only"]["run_s"] > 0
    assert projection["chosen"] in projection["rows"]

    long_runs = data["sections"]["long_runs"]
    assert [(r["method"], r["seed"]) for r in long_runs["runs"]] == [("ce", 0), ("dv", 0)]
    for r in long_runs["runs"]:
        assert r["status"] == "FINISHED" and r["epochs_done"] == 2
        assert 0 <= r["final_acc"] <= 1 and 0 <= r["best_acc"] <= 1

    summary = (out / "device_check.md").read_text().splitlines()
    assert summary[0].startswith("Correctness:") and "FAIL" not in summary[0]
    assert summary[0].count("PASS") == 5
    log = (out / "device_check.log").read_text()
    assert "[run (ii) resumed] lt-bench: resuming" in log


@pytest.mark.parametrize("args,message", [
    ([], "give OUT_DIR"),
    (["{out}", "--budget", "5"], "--budget must be more than 30"),
])
def test_usage_errors_are_one_line(tmp_path, args, message):
    done = run_check(*[a.format(out=tmp_path) for a in args], timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_usage_error(tmp_path):
    done = run_check(str(tmp_path), timeout=120)
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr
    assert "Traceback" not in done.stderr


# -- projection arithmetic, by hand ------------------------------------------------------------
def test_epoch_and_speedup_interpolation():
    assert proj.STEPS_PER_EPOCH == 125
    assert proj.epoch_seconds(0.01, 10_000) == pytest.approx(125 * 0.01 + 1.0)
    speedups = {2: 1.8, 4: 3.0}
    assert proj.speedup_at(speedups, 1) == 1.0
    assert proj.speedup_at(speedups, 3) == pytest.approx(2.4)
    assert proj.speedup_at(speedups, 8) == 3.0  # never extrapolated


def test_plan_runs_per_hour_and_the_30_run_comparison():
    p = proj.plan(epoch_s=2.25, concurrency=4, speedups={2: 1.8, 4: 3.0})
    assert p["run_s"] == pytest.approx(450.0)
    assert p["runs_per_hour"] == pytest.approx(3600 * 3.0 / 450)  # 24
    # 30 runs, 4 at a time: 7 waves of 4 (each 450·4/3 s) and one of 2 (450·2/1.8 s)
    assert p["comparison_s"] == pytest.approx(7 * 600 + 500)
    # forked: 5 trunks of 160 epochs (a wave of 4: 360·4/3, then 1: 360), then 30 branches of
    # 40 epochs (7 waves of 4: 90·4/3 each, one of 2: 90·2/1.8)
    assert p["comparison_forked_s"] == pytest.approx((480 + 360) + (7 * 120 + 100))
    assert p["epochs_trained"] == {"from_scratch": 6000, "forked": 2000}
    with_overhead = proj.plan(2.25, 1, {}, overhead_s=10)
    assert with_overhead["run_s"] == pytest.approx(460)
    assert with_overhead["comparison_s"] == pytest.approx(30 * 460)


def test_projection_prefers_the_slower_harness_epoch():
    speed = {"best_overall": "b", "variants": {
        "b": {"precision": "bf16", "ms_per_step": 8.0, "compile_s": 30.0},
        "eval bf16 + channels_last, batch 1000": {"status": "ok", "batch": 1000,
                                                  "img_per_s": 100_000.0, "kind": "eval"}}}
    conc = {"best_concurrency": 2, "speedups": {"2": 1.5}}
    corr = {"harness_epoch_s": 2.0, "runs": {"i_uninterrupted": {"wall_s": 16.0,
                                                                 "harness_wall_s": 6.0}}}
    out = proj.projection(speed, conc, corr)
    model = out["rows"]["model only"]
    assert model["epoch_s"] == pytest.approx(125 * 0.008 + 0.1)
    assert model["run_s"] == pytest.approx(200 * 1.1 + 30 + 10)  # compile + start-up once
    assert out["chosen"].startswith("harness")
    assert out["rows"][out["chosen"]]["runs_per_hour"] == pytest.approx(3600 * 1.5 / 410)


# -- runs: comparison, precision, checkpoints, the log pump ---------------------------------------
def test_compare_is_exact_and_says_where():
    a = {"final": {"acc": 0.5}, "best": {"acc": 0.6}, "class_weights": [[1.0]],
         "history": [{"train/loss": 1.0}, {"train/loss": 0.5}]}
    assert runs.compare(a, json.loads(json.dumps(a)))["equal"]
    b = json.loads(json.dumps(a))
    b["history"][1]["train/loss"] = 0.5000001
    cmp = runs.compare(a, b)
    assert not cmp["equal"] and cmp["parts"]["final"] and not cmp["parts"]["train_loss"]
    assert cmp["train_loss_max_abs_diff"] == pytest.approx(1e-7)


def test_checkpoint_progress_is_tolerant(tmp_path):
    folder = tmp_path / "runs" / "x"
    folder.mkdir(parents=True)
    torch.save({"epoch": 2, "history": [
        {"epoch": 0, "test/acc": 0.2, "time/epoch_s": 9.0},
        {"epoch": 1, "test/acc": 0.4, "test/acc_many": 0.7, "time/epoch_s": 3.0},
        {"epoch": 2, "test/acc": 0.3, "time/epoch_s": 5.0}]}, folder / "checkpoint.pt")
    p = runs.read_checkpoint(tmp_path)
    assert p["epochs_done"] == 3 and p["final_acc"] == 0.3 and p["best_acc"] == 0.4
    assert p["best_epoch"] == 1 and p["epoch_s"] == 4.0  # median without the first epoch
    torch.save({"epoch": 4}, folder / "checkpoint.pt")  # no history at all
    assert runs.read_checkpoint(tmp_path)["epochs_done"] == 5


def test_child_collapses_progress_bars_and_collects_records(tmp_path):
    log = CombinedLog(tmp_path / "log", Clock(100))
    code = ("import sys; sys.stderr.write('\\rbar 1\\rbar 2\\rdone\\n'); "
            "print('@@device_check {\"x\": 1}'); print('plain')")
    child = Child("demo", [sys.executable, "-c", code], log)
    assert child.wait(time.monotonic() + 60) == 0
    assert child.records == [{"x": 1}]
    lines = [line for line in (tmp_path / "log").read_text().splitlines()
             if line.startswith("[demo]")]
    assert lines == ["[demo] done", '[demo] @@device_check {"x": 1}', "[demo] plain"]


def test_child_is_killed_at_its_deadline(tmp_path):
    log = CombinedLog(tmp_path / "log", Clock(100))
    child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log)
    assert child.wait(time.monotonic() + 0.5) != 0
    assert child.kill_reason == "deadline" and child.wall_s < 30


def test_cifar_shaped_plugin_has_cifar10_lt_shapes_and_counts():
    from lt_bench.data import DataConfig, load_data
    from lt_bench.registry import get_registry, reset_registry

    try:
        get_registry([str(PACKAGE / "data.py")])
        data = load_data("cifar_shaped_lt", 100, DataConfig(progress=False))
    finally:
        reset_registry()
    assert data.train_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert data.num_train == 12406 and data.test_counts == [1000] * 10
    assert tuple(data.train_images.shape[1:]) == (3, 32, 32)
    assert data.train_images.dtype == torch.uint8


def test_a_crashed_speed_worker_costs_one_variant(tmp_path, monkeypatch):
    from benchmarks.device_check import speed
    from benchmarks.device_check.common import child_env

    short = [{"name": "eager fp32", "precision": "fp32", "channels_last": False},
             {"name": "eager bf16", "precision": "bf16", "channels_last": False},
             {"name": "eager fp32 + channels_last", "precision": "fp32", "channels_last": True}]
    monkeypatch.setattr(speed, "variants", lambda cuda: [dict(v) for v in short])
    failures = []
    clock = Clock(120)
    ctx = SimpleNamespace(
        device="cpu", smoke=True, clock=clock, log=CombinedLog(tmp_path / "log", clock),
        env=child_env({"DEVICE_CHECK_CRASH": "eager bf16", "OMP_NUM_THREADS": 1}),
        work=tmp_path, say=lambda message: None, update_device=lambda facts: None,
        report=SimpleNamespace(failure=lambda *a: failures.append(a)))
    sec = {}
    speed.speed(ctx, sec, time.monotonic() + 100, save=lambda: None)
    status = {k: r["status"] for k, r in sec["variants"].items()}
    assert status == {"eager fp32": "ok", "eager bf16": "crashed",
                      "eager fp32 + channels_last": "ok"}
    assert sec["status"] == "partial" and failures[0][0] == "speed/eager bf16"
    assert sec["best_eager"] in ("eager fp32", "eager fp32 + channels_last")


def test_the_check_imports_without_mlflow_or_omegaconf():
    """The device has torch and lt_bench's wheel, but neither mlflow nor omegaconf."""
    code = ("import sys; sys.modules['mlflow'] = None; sys.modules['omegaconf'] = None; "
            "import benchmarks.device_check.__main__, benchmarks.device_check.workers")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
