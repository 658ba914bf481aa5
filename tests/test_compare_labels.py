"""Issue 25, part 5: a row is named by what sets it apart, never by its config hash alone (the
leaderboard from run folders and from MLflow, the comparison picture), rows on two data sets
never share a name, and the picture's legend lies outside every panel."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_tracking import log_run, make_cfg

from lt_bench.compare.leaderboard import format_text, leaderboard
from lt_bench.compare.plot import class_lines, figure
from lt_bench.tracking.records import labels
from lt_bench.workspace.record import RunResult

DV = {"method.name": "dv", "protocol.lr": "0.1", "seed": "0", "workspace": "/a",
      "precision_used": "bf16"}
DV_AUTHORS = {**DV, "method.convention": "authors", "seed": "1", "workspace": "/b",
              "precision_used": "fp32"}  # bookkeeping differs too: not a label


def test_two_configurations_of_a_method_are_named_by_the_option_that_differs():
    got = labels([("dv", "h1", "d", DV), ("dv", "h2", "d", DV_AUTHORS), ("ce", "h3", "d", {})])
    # dv's default convention is the paper's: a config keeps only options typed away from it
    assert got == ["dv (convention=paper)", "dv (convention=authors)", "ce"]


def test_other_keys_name_them_by_the_shortest_key_value_that_tells_them_apart():
    a = {"method.name": "ce", "protocol.lr": "0.1", "protocol.weight_decay": "0.0005"}
    b = {"method.name": "ce", "protocol.lr": "0.05", "protocol.weight_decay": "0.0002"}
    assert labels([("ce", "h1", "d", a), ("ce", "h2", "d", b)]) == [
        "ce (protocol.lr=0.1)", "ce (protocol.lr=0.05)"]
    # a key hashed only when set stands for its default where it is left out
    c = {"method.name": "ce", "data.pad_mode": "reflect"}
    assert labels([("ce", "h1", "d", {"method.name": "ce"}), ("ce", "h2", "d", c)]) == [
        "ce (data.pad_mode=zero)", "ce (data.pad_mode=reflect)"]


def test_nothing_known_falls_back_to_the_hash_and_data_tell_rows_apart():
    assert labels([("ce", "h1", "d", {}), ("ce", "h2", "d", {})]) == ["ce@h1", "ce@h2"]
    same = {"method.name": "ce", "protocol.lr": "0.1"}
    assert labels([("ce", "h1", "d", same), ("ce", "h2", "d", dict(same))]) == [
        "ce@h1", "ce@h2"]  # one params, two hashes: only the hash tells them apart
    assert labels([("dv", "h1", "aaa", DV), ("dv", "h1", "bbb", DV), ("ce", "h2", "aaa", {})]) \
        == ["dv [data aaa]", "dv [data bbb]", "ce"]


# -- the leaderboard and the picture from run folders -------------------------------------------
COUNTS = [500, 200, 50, 10]
GROUP = ["many", "many", "medium", "few"]


def write_run(ws: Path, method: str, cfg_hash: str, seed: int, acc: float, convention=None,
              data: str | None = None) -> None:
    per_class = [min(1.0, acc + 0.2 - 0.1 * i) for i in range(4)]
    score = {"epoch": 3, "acc": acc, "acc_many": acc + 0.1, "acc_medium": acc,
             "acc_few": acc - 0.1, "per_class": per_class, "ece": 0.05}
    result = RunResult.from_dict({
        "status": "FINISHED", "method": method, "dataset": "cifar10_lt", "imbalance": 100.0,
        "backbone": "resnet32", "protocol": "quick", "seed": seed, "cfg_hash": cfg_hash,
        "classes": list("abcd"), "train_counts": COUNTS, "group_of_class": GROUP,
        "final": score, "best": score,
        "provenance": {"data_fingerprint": data} if data else {}})
    folder = ws / "runs" / f"cifar10_lt-{method}-{cfg_hash}-seed{seed}"
    folder.mkdir(parents=True)
    result.save(folder / "results.json")
    option = f"  convention: {convention}\n" if convention else ""
    (folder / "config.yaml").write_text(
        f"dataset: cifar10_lt\nimbalance: 100.0\nmethod:\n  name: {method}\n{option}"
        f"protocol:\n  name: quick\n  lr: 0.1\nseed: {seed}\nworkspace: {ws}\n")


@pytest.fixture
def ws(tmp_path) -> Path:
    for seed in range(2):
        write_run(tmp_path, "ce", "hce", seed, 0.60 + seed / 100)
        write_run(tmp_path, "dv", "hdvp", seed, 0.65 + seed / 100)
        write_run(tmp_path, "dv", "hdva", seed, 0.66 + seed / 100, convention="authors")
    return tmp_path


def rows_of(ws: Path):
    return leaderboard({"workspace": str(ws), "tracking": {"tracker": "local"}})


def test_the_leaderboard_names_two_dv_configurations_readably(ws):
    rows = rows_of(ws)
    assert sorted(r.label for r in rows) == ["ce", "dv (convention=authors)",
                                             "dv (convention=paper)"]
    text = format_text(rows)
    assert "dv (convention=authors)" in text and "dv (convention=paper)" in text
    assert "@" not in text


def test_the_legend_lies_outside_every_panel(ws):
    fig = figure(rows_of(ws), ws)
    fig.canvas.draw()
    assert all(ax.get_legend() is None for ax in fig.axes)  # one legend, the figure's
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert sorted(t.split(" (n=")[0] for t in texts) == [
        "ce", "dv (convention=authors)", "dv (convention=paper)"]
    assert all("ECE 5.0 %" in t for t in texts)
    box = legend.get_window_extent()
    for ax in fig.axes:
        panel = ax.get_window_extent()
        assert not box.overlaps(panel), (box, panel)
        assert box.y1 <= panel.y0  # below the panels


def test_a_configuration_on_two_data_sets_draws_two_lines(tmp_path):
    write_run(tmp_path, "dv", "hdv", 0, 0.5, data="aaaaaaaaaaaa")
    write_run(tmp_path, "dv", "hdv", 1, 0.5, data="aaaaaaaaaaaa")
    write_run(tmp_path, "dv", "hdv", 2, 0.8, data="bbbbbbbbbbbb")
    rows = rows_of(tmp_path)
    assert sorted(r.label for r in rows) == ["dv [data aaaaaaaaaaaa]", "dv [data bbbbbbbbbbbb]"]
    lines, missing = class_lines(rows, tmp_path)
    assert not missing
    assert lines["dv [data aaaaaaaaaaaa]"]["seeds"] == 2
    assert lines["dv [data bbbbbbbbbbbb]"]["mean"][-1] == pytest.approx(1.0)  # 0.8 + 0.2
    # a seed's folder that holds a run on the other data is not drawn as this row's
    row_a = next(r for r in rows if r.data == "aaaaaaaaaaaa")
    row_a.seeds = [*row_a.seeds, "2"]
    lines, missing = class_lines(rows, tmp_path)
    assert lines["dv [data aaaaaaaaaaaa]"]["seeds"] == 2 and len(missing) == 1
    fig = figure(rows, tmp_path)
    assert len(fig.legends[0].get_texts()) == 2


# -- the leaderboard from MLflow's params -------------------------------------------------------
def test_mlflow_params_name_the_rows(tmp_path, template_db):
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    for seed, acc in enumerate([0.61, 0.63]):
        log_run(make_cfg(ws, "dv", seed), acc)
        authors = make_cfg(ws, "dv", seed)
        authors["method"]["convention"] = "authors"
        log_run(authors, acc)
        log_run(make_cfg(ws, "ce", seed), acc - 0.1)
    rows = leaderboard({"workspace": str(ws)})
    assert sorted(r.label for r in rows) == ["ce", "dv (convention=authors)",
                                             "dv (convention=paper)"]
    assert len({r.cfg_hash for r in rows}) == 3
