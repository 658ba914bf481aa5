"""The leaderboard against statistics computed here with numpy and scipy on the same numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lt_bench.compare.leaderboard import (
    NEEDS_SEEDS,
    build,
    format_csv,
    format_markdown,
    leaderboard,
)
from lt_bench.tracking.store import client, ensure_experiment, tracking_uri

ACC = {  # method -> final accuracy per seed
    "ce": [0.700, 0.705, 0.698, 0.702],
    "dv": [0.720, 0.731, 0.716, 0.725],
    "cb": [0.701, 0.699, 0.706],
    "ldam": [0.71],  # one seed: no test
}



@pytest.fixture(scope="module")
def store(tmp_path_factory, template_db) -> Path:
    """A store with runs laid out as the tracker lays them out (logged directly, quickly)."""
    from mlflow.entities import Metric

    ws = tmp_path_factory.mktemp("lb")
    shutil.copy(template_db, ws / "mlflow.db")
    uri = tracking_uri({"workspace": str(ws)})
    c = client(uri)
    exp = ensure_experiment(c, "cifar10_lt-IF100-resnet32", (ws / "art").as_uri(), uri)
    other = ensure_experiment(c, "cifar10_lt-IF200-resnet32", (ws / "art").as_uri(), uri)

    def seed_run(exp_id, method, seed, acc, imbalance="100", status="FINISHED", many=None):
        tags = {"lt.method": method, "lt.dataset": "cifar10_lt", "lt.imbalance": imbalance,
                "lt.backbone": "resnet32", "lt.protocol": "quick", "lt.cfg_hash": f"h-{method}",
                "lt.role": "seed", "lt.seed": str(seed)}
        run = c.create_run(exp_id, tags=tags).info.run_id
        values = {"final/acc": acc, "best/acc": acc + 0.01, "final/acc_many": many or acc + 0.2,
                  "final/acc_medium": acc - 0.1}
        c.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in values.items()])
        c.set_terminated(run, status)
        return run

    for method, values in ACC.items():
        for seed, acc in enumerate(values):
            seed_run(exp, method, seed, acc)
    seed_run(exp, "dv", 9, 0.1, status="FAILED")  # not finished: ignored
    group = c.create_run(exp, tags={"lt.role": "group", "lt.method": "dv",
                                    "lt.cfg_hash": "h-dv"}).info.run_id
    c.log_batch(group, metrics=[Metric("final/acc", 0.0, 0, 0)])
    c.set_terminated(group, "FINISHED")  # a group run is not a seed: ignored
    seed_run(other, "ce", 0, 0.6, imbalance="200")
    seed_run(other, "ce", 1, 0.62, imbalance="200")
    return ws


def test_statistics_match_numpy_and_scipy(store):
    rows = leaderboard({"workspace": str(store)}, {"imbalance": "100"})
    by_method = {r.method: r for r in rows}
    assert set(by_method) == set(ACC)
    assert [r.method for r in rows] == ["dv", "ldam", "cb", "ce"]  # by mean accuracy
    for method, values in ACC.items():
        row = by_method[method]
        assert row.n == len(values)
        assert row.mean == pytest.approx(np.mean(values))
        assert row.best_mean == pytest.approx(np.mean(values) + 0.01)
        assert row.acc_many == pytest.approx(np.mean(values) + 0.2)
        assert row.acc_few is None
        if len(values) > 1:
            assert row.std == pytest.approx(np.std(values, ddof=1))
    ce = ACC["ce"]
    for method in ("dv", "cb"):
        row = by_method[method]
        assert row.diff == pytest.approx(np.mean(ACC[method]) - np.mean(ce))
        assert row.p_value == pytest.approx(
            stats.ttest_ind(ACC[method], ce, equal_var=False).pvalue)
        assert row.p_value_mwu == pytest.approx(
            stats.mannwhitneyu(ACC[method], ce, alternative="two-sided").pvalue)
    assert by_method["dv"].p_value < 0.01 < by_method["cb"].p_value
    assert by_method["ldam"].p_value is None and by_method["ldam"].test_note == NEEDS_SEEDS
    assert by_method["ce"].test_note == "baseline"


def test_best_metric_other_baseline_and_filters(store):
    rows = leaderboard({"workspace": str(store)}, {"imbalance": "100"}, metric="best",
                       baseline="cb")
    dv = next(r for r in rows if r.method == "dv")
    assert dv.mean == pytest.approx(np.mean(ACC["dv"]) + 0.01)
    assert dv.p_value == pytest.approx(stats.ttest_ind(
        np.add(ACC["dv"], 0.01), np.add(ACC["cb"], 0.01), equal_var=False).pvalue)
    assert dv.baseline == "cb@h-cb"
    only = leaderboard({"workspace": str(store)}, {"imbalance": "200"})
    assert [(r.method, r.n, r.imbalance) for r in only] == [("ce", 2, "200")]
    everything = leaderboard({"workspace": str(store)})
    assert len(everything) == 5
    assert "| dv |" in format_markdown(everything)
    assert format_csv(everything).splitlines()[0].startswith("dataset,imbalance,backbone")


def test_a_seed_run_twice_counts_once():
    def run(seed, acc, end):
        return {"run_id": f"r{seed}{end}", "end_time": end, "tags": {
            "lt.method": "ce", "lt.seed": str(seed), "lt.dataset": "d", "lt.imbalance": "10",
            "lt.backbone": "b", "lt.protocol": "p", "lt.cfg_hash": "h"},
            "metrics": {"final/acc": acc}}
    rows = build([run(0, 0.5, 1), run(0, 0.7, 2), run(1, 0.6, 1)])
    assert rows[0].n == 2 and rows[0].mean == pytest.approx(0.65)


def test_command_json(store):
    out = subprocess.run([sys.executable, "-m", "lt_bench", "leaderboard", f"workspace={store}",
                          "imbalance=100", "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    dv = next(r for r in rows if r["method"] == "dv")
    assert {"mean", "std", "p_value", "p_value_mwu", "n", "diff"} <= set(dv)
    assert dv["imbalance"] == 100.0  # a number, not the tag's string
    assert dv["std"] == pytest.approx(np.std(ACC["dv"], ddof=1))
    assert dv["p_value"] == pytest.approx(
        stats.ttest_ind(ACC["dv"], ACC["ce"], equal_var=False).pvalue)
    text = subprocess.run([sys.executable, "-m", "lt_bench", "leaderboard",
                           f"workspace={store}", "imbalance=100"], capture_output=True,
                          text=True, check=True).stdout
    assert "final acc % (mean ± std)" in text and NEEDS_SEEDS in text
    bad = subprocess.run([sys.executable, "-m", "lt_bench", "leaderboard",
                          f"workspace={store / 'nowhere'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no tracking store" in bad.stderr
