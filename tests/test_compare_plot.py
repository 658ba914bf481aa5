"""The comparison plot: what the figure draws is read back from its artists and checked against
numbers computed here from the results.json files this test writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer

from lt_bench.compare.leaderboard import leaderboard
from lt_bench.compare.plot import class_lines, figure
from lt_bench.workspace.record import RunResult

HERE = Path(__file__).parent
COUNTS = [500, 300, 300, 120, 60, 60, 25, 10, 5, 5]  # ties: 300, 60 and 5 are one point each
GROUP = ["many"] * 3 + ["medium"] * 3 + ["few"] * 4
SEEDS = {"ce": 3, "dv": 3, "ldam": 1}  # ldam: one seed, so no error bar


def per_class(method: str, seed: int) -> list[float]:
    rng = np.random.default_rng(10 * seed + sorted(SEEDS).index(method))
    head = {"ce": 0.9, "dv": 0.85, "ldam": 0.8}[method]
    return [float(np.clip(head - 0.07 * i + rng.normal(0, 0.04), 0, 1)) for i in range(10)]


def group_mean(values: list[float], group: str) -> float:
    return float(np.mean([v for v, g in zip(values, GROUP) if g == group]))


def write_run(ws: Path, method: str, seed: int, imbalance: float = 100.0) -> RunResult:
    acc = per_class(method, seed)
    score = {"epoch": 5, "acc": float(np.mean(acc)), "per_class": acc,
             **{f"acc_{g}": group_mean(acc, g) for g in ("many", "medium", "few")}}
    result = RunResult.from_dict({
        "status": "FINISHED", "method": method, "dataset": "cifar10_lt", "imbalance": imbalance,
        "backbone": "resnet32", "protocol": "quick", "seed": seed, "cfg_hash": f"h{method}",
        "classes": [f"c{i}" for i in range(10)], "train_counts": COUNTS,
        "group_of_class": GROUP, "final": score, "best": score})
    hash_ = f"h{method}" if imbalance == 100.0 else f"h{method}{imbalance:g}"
    result.cfg_hash = hash_
    folder = ws / "runs" / f"cifar10_lt-{method}-{hash_}-seed{seed}"
    folder.mkdir(parents=True)
    result.save(folder / "results.json")
    return result


@pytest.fixture
def ws(tmp_path) -> Path:
    for method, n in SEEDS.items():
        for seed in range(n):
            write_run(tmp_path, method, seed)
    return tmp_path


def rows_of(ws: Path):
    return leaderboard({"workspace": str(ws), "tracking": {"tracker": "local"}})


def test_bars_are_the_leaderboard_and_lines_the_per_class_means(ws):
    rows = rows_of(ws)
    fig = figure(rows, ws)
    bars_ax, lines_ax = fig.axes
    assert [t.get_text() for t in bars_ax.get_xticklabels()] == ["overall", "many", "medium",
                                                                 "few"]
    bars = [c for c in bars_ax.containers if isinstance(c, BarContainer)]
    for container in bars:
        method = container.get_label().split(" ")[0]
        runs = [per_class(method, s) for s in range(SEEDS[method])]
        row = next(r for r in rows if r.method == method)
        truth = [[np.mean(a) for a in runs]] + [[group_mean(a, g) for a in runs]
                                               for g in ("many", "medium", "few")]
        heights = [p.get_height() for p in container.patches]
        assert heights == pytest.approx([100 * np.mean(t) for t in truth])
        assert heights[0] == pytest.approx(100 * row.mean)  # the leaderboard's own number
        assert container.get_label() == f"{method} (n={SEEDS[method]})"
        errors = [c for c in bars_ax.containers if c.get_label() == f"_std {method}"]
        if SEEDS[method] == 1:
            assert not errors  # no spread over one seed: no error bar at all
            continue
        segments = errors[0].lines[2][0].get_segments()
        assert [s[0][0] for s in segments] == pytest.approx([p.get_x() + p.get_width() / 2
                                                             for p in container.patches])
        spans = [abs(s[1][1] - s[0][1]) / 2 for s in segments]
        assert spans == pytest.approx([100 * np.std(t, ddof=1) for t in truth])
    assert sorted(c.get_label() for c in bars) == ["ce (n=3)", "dv (n=3)",
                                                                  "ldam (n=1)"]
    unique = sorted(set(COUNTS))
    for line in lines_ax.get_lines():
        method = line.get_label().split(" ")[0]
        runs = [per_class(method, s) for s in range(SEEDS[method])]
        by_count = [[np.mean([a[i] for i in range(10) if COUNTS[i] == c]) for c in unique]
                    for a in runs]
        assert list(line.get_xdata()) == unique  # ascending training count, ties merged
        assert list(line.get_ydata()) == pytest.approx(100 * np.mean(by_count, axis=0))
    lines, missing = class_lines(rows, ws)
    dv = [[np.mean([a[i] for i in range(10) if COUNTS[i] == c]) for c in unique]
          for a in (per_class("dv", s) for s in range(3))]
    assert lines["dv"]["low"] == pytest.approx(np.min(dv, axis=0))
    assert lines["dv"]["high"] == pytest.approx(np.max(dv, axis=0))
    assert not missing and lines["ldam"]["low"] == lines["ldam"]["high"]
    assert "lowest to highest seed" in lines_ax.get_title()
    assert "imbalance 100" in fig._suptitle.get_text() and "final epoch" in fig._suptitle.get_text()


def test_a_group_without_classes_is_left_out_and_missing_folders_are_said(ws):
    rows = rows_of(ws)
    for row in rows:  # as for a split where no class has few training images
        row.acc_few, row.group_values["few"] = None, []
    shutil.rmtree(ws / "runs" / "cifar10_lt-dv-hdv-seed1")
    said: list[str] = []
    fig = figure(rows, ws, out=said.append)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["overall", "many", "medium"]
    assert len(said) == 1 and "1 of 7 runs" in said[0] and "drawn from the others" in said[0]
    assert next(ln for ln in fig.axes[1].get_lines()
                if ln.get_label().startswith("dv")).get_label() == "dv (n=2)"
    shutil.rmtree(ws / "runs")
    said.clear()
    assert len(figure(rows, ws, out=said.append).axes) == 1  # bars only
    assert "7 of 7 runs" in said[0] and "left out" in said[0]


def test_command_writes_the_png_and_says_where(ws):
    target = ws / "out" / "comparison.png"
    done = subprocess.run([sys.executable, "-m", "lt_bench", "leaderboard", f"workspace={ws}",
                           "tracking.tracker=local", "--plot", str(target)],
                          capture_output=True, text=True, check=True)
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert str(target) in done.stderr and "ldam" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "lt_bench", "leaderboard", f"workspace={ws}",
                          "tracking.tracker=local", "imbalance=7", "--plot", str(target)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--plot" in bad.stderr and "filter" in bad.stderr
    write_run(ws, "ce", 0, imbalance=200.0)  # a second setting: a second file, each suffixed
    subprocess.run([sys.executable, "-m", "lt_bench", "leaderboard", f"workspace={ws}",
                    "tracking.tracker=local", "--plot", str(target)], check=True,
                   capture_output=True)
    assert sorted(p.name for p in target.parent.glob("comparison-*.png")) == [
        "comparison-cifar10_lt-IF100-resnet32-quick.png",
        "comparison-cifar10_lt-IF200-resnet32-quick.png"]


def test_the_sweep_draws_it_and_logs_a_sweep_level_run(tmp_path, template_db, monkeypatch):
    from lt_bench.commands.sweep import run_sweep
    from lt_bench.tracking.store import TAG, client, tracking_uri

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    monkeypatch.setenv("PYTHONPATH", str(HERE))  # the workers import test_sweep's fake_train
    lines: list[str] = []
    summary = run_sweep([f"workspace={ws}", "tracking.tracker=mlflow", "dataset=cifar10_lt",
                         "imbalance=100", "methods=[ce,dv]", "seeds=1", "jobs=2"],
                        out=lines.append, train_fn="test_sweep:fake_train")
    png = ws / "sweeps" / "comparison-cifar10_lt-IF100-resnet32-quick.png"
    assert summary["plots"] == [str(png)] and png.read_bytes()[:4] == b"\x89PNG"
    assert f"sweep: comparison plot {png}" in lines
    c = client(tracking_uri({"workspace": str(ws)}))
    exp = c.get_experiment_by_name("cifar10_lt-IF100-resnet32")
    runs = c.search_runs([exp.experiment_id], f"tags.`{TAG}role` = 'sweep'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [a.path for a in c.list_artifacts(runs[0].info.run_id)] == [png.name]
    assert any(runs[0].info.run_id in line for line in lines)
    # the leaderboard still counts the seed runs only
    assert {r.method: r.n for r in leaderboard({"workspace": str(ws)})} == {"ce": 1, "dv": 1}


def test_the_picture_reads_at_the_artifact_viewers_width(ws, overflows):
    fig = figure(rows_of(ws), ws)
    width_px = fig.get_figwidth() * fig.dpi
    assert 800 <= width_px <= 1000  # MLflow's artifact viewer shows about 1000 px
    sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))
             if getattr(t, "get_text", lambda: "")().strip()]
    assert min(sizes) >= 8  # at native size: 8 pt at 120 dpi is 13 px
    assert not overflows(fig)


def test_the_title_names_the_protocols_overridden_values():
    from lt_bench.config import load_config, protocol_label

    assert protocol_label(load_config([], ["protocol=quick"])) == "quick"
    assert protocol_label(load_config([], ["protocol=quick", "protocol.epochs=2"])) == \
        "quick (epochs 2)"
    two = load_config([], ["protocol=quick", "protocol.epochs=2", "protocol.lr=0.05"])
    assert protocol_label(two) == "quick (epochs 2, lr 0.05)"
