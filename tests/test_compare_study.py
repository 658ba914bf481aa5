"""``lt-bench reproduce``: a study's loading and its one-line errors, the set-up diff, Welch's
interval and the verdicts against hand-computed cases, claims, no pooling across data, and a
two-cell study trained end to end on generated data and resumed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from lt_bench import LtBenchError
from lt_bench.cli import main
from lt_bench.compare.study import Cell, load_study, parse_cell, setup_diff
from lt_bench.compare.verdict import (
    Ours,
    build_report,
    cell_report,
    one_sided_p,
    ours_of,
    welch_interval,
)
from lt_bench.config import load_config
from lt_bench.workspace.record import RunResult, Score

TINY = ["imbalance=20", "protocol.batch_size=64", "protocol.lr=0.05", "protocol.warmup_epochs=0",
        "precision=fp32", "quiet=true", "tracking.tracker=local", "protocol.epochs=4",
        "protocol.start_epoch=2", "protocol.milestones=[3]"]


def study_dict(**changes) -> dict:
    d = {
        "name": "two_cells", "title": "Two cells", "protocol": "quick", "seeds": 2,
        "statistic": "best", "paper_reports": "error",
        "setup": {"protocol.epochs": {"paper": 200, "quote": "trained for 200 epochs"},
                  "protocol.batch_size": {"paper": 64, "quote": "batch 64"},
                  "seeds": {"paper": 30, "quote": "30 times"}},
        "columns": [{"label": "synthetic IF 20", "dataset": "synthetic_lt", "imbalance": 20}],
        "rows": [{"label": "CE", "method": "ce"},
                 {"label": "DV", "method": "dv", "options": {"convention": "authors"}}],
        "cells": {"CE": ["40.0 ± 1.0"], "DV": ["35.0 ± 1.0"]}, "paper_seeds": 30,
        "claims": [{"text": "DV beats CE", "better": "DV", "than": ["CE"], "columns": "all"}],
    }
    d.update(changes)
    return d


def write(tmp_path: Path, d: dict) -> Path:
    path = tmp_path / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    return path


def test_cells_parse_as_printed():
    assert parse_cell("<b>20.8</b> ± 0.3", 30, "t") == Cell("<b>20.8</b> ± 0.3", 20.8, 0.3, 30)
    assert parse_cell("34.7", None, "t").std is None
    assert parse_cell("-", 30, "t").mean is None
    with pytest.raises(LtBenchError, match="cell '20,8' is not"):
        parse_cell("20,8", 30, "t")


@pytest.mark.parametrize("change, message", [
    ({"statistic": "median"}, "statistic='median': choose best or final"),
    ({"cells": {"CE": ["1 ± 1", "2 ± 2"]}}, "cells of 'CE' must list one value per column"),
    ({"cells": {"CEE": ["1 ± 1"]}}, "cells names 'CEE', which is not a row .did you mean 'CE'"),
    ({"claims": [{"better": "DW", "than": "CE"}]}, r"a claim names 'DW'.*choose from: CE, DV\)"),
    ({"rows": [{"label": "CE"}]}, "rows: the key 'method' is missing"),
])
def test_a_bad_study_is_one_line_naming_file_and_key(tmp_path, change, message):
    path = write(tmp_path, study_dict(**change))
    with pytest.raises(LtBenchError, match=message) as err:
        load_study(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_study_names_the_shipped_ones():
    with pytest.raises(LtBenchError, match="did you mean 'zheng_ng_table1'.*shipped: "):
        load_study("zheng_ng_tabel1")


def test_the_setup_diff_names_each_departure(tmp_path):
    study = load_study(str(write(tmp_path, study_dict())))
    cfg = load_config([], ["protocol=short_cifar", "dataset=synthetic_lt"])
    lines, same = setup_diff(study, cfg, seeds=3)
    assert lines == ['protocol.epochs 49 ≠ 200 (paper: "trained for 200 epochs")',
                     'protocol.batch_size 100 ≠ 64 (paper: "batch 64")',
                     'seeds 3 ≠ 30 (paper: "30 times")']
    assert same == 0


def test_welch_interval_by_hand():
    """ours 20, 22, 24 (mean 22, s 2, n 3) against 20.8 ± 0.3 (30): v1 = 4/3, v2 = 0.003,
    df = (v1 + v2)² / (v1²/2 + v2²/29), interval 1.2 ± t(0.975, df) √(v1 + v2)."""
    from scipy import stats

    v1, v2 = 4 / 3, 0.09 / 30
    df = (v1 + v2) ** 2 / (v1 ** 2 / 2 + v2 ** 2 / 29)
    half = stats.t.ppf(0.975, df) * math.sqrt(v1 + v2)
    low, high = welch_interval(22.0, 2.0, 3, 20.8, 0.3, 30)
    assert low == pytest.approx(1.2 - half) and high == pytest.approx(1.2 + half)
    # without the paper's std: ours alone, t with n − 1 = 2 degrees of freedom
    low, high = welch_interval(22.0, 2.0, 3, 20.8, None, None)
    assert high - 1.2 == pytest.approx(stats.t.ppf(0.975, 2) * 2 / math.sqrt(3))


def test_verdicts():
    paper = Cell("20.8 ± 0.3", 20.8, 0.3, 30)
    assert cell_report("r", "c", Ours([20.0, 22.0, 21.0]), paper).verdict == "consistent"
    assert cell_report("r", "c", Ours([30.0, 30.5, 29.5]), paper).verdict == "differs"
    assert cell_report("r", "c", Ours([20.0]), paper).verdict == "too few seeds"
    assert cell_report("r", "c", Ours(), paper).verdict == "not run"
    assert cell_report("r", "c", Ours([20.0, 21.0]), Cell("-")).verdict == "no paper number"


def test_one_sided_p_and_claims(tmp_path):
    from scipy import stats

    a, b = [20.0, 21.0, 22.0], [25.0, 26.0, 24.0]
    assert one_sided_p(a, b, True) == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False).pvalue / 2)
    study = load_study(str(write(tmp_path, study_dict())))
    key = ("synthetic IF 20")
    holds = build_report(study, {("DV", key): Ours(a), ("CE", key): Ours(b)})
    assert holds.claims[0].verdict == "holds"
    fails = build_report(study, {("DV", key): Ours(b), ("CE", key): Ours(a)})
    assert fails.claims[0].verdict == "fails"
    close = build_report(study, {("DV", key): Ours([20.0, 24.0]), ("CE", key): Ours([21.0, 23.5])})
    assert close.claims[0].verdict == "direction only (not significant everywhere)"
    assert build_report(study, {("DV", key): Ours(a)}).claims[0].verdict.startswith("not tested")


def run_result(seed: int, acc: float, fingerprint: str | None) -> RunResult:
    r = RunResult("FINISHED", "ce", "synthetic_lt", 20.0, "resnet32", "quick", seed,
                  final=Score(3, acc - 0.01), best=Score(2, acc))
    if fingerprint:
        r.provenance = {"data_fingerprint": fingerprint}
    return r


def test_runs_on_two_data_sets_are_not_pooled(tmp_path):
    study = load_study(str(write(tmp_path, study_dict())))
    ours = ours_of([run_result(0, 0.6, "aaa"), run_result(1, 0.62, "aaa"),
                    run_result(2, 0.9, "bbb")], study)
    assert ours.values == pytest.approx([40.0, 38.0]) and ours.seeds == [0, 1]
    assert ours.other == pytest.approx([41.0, 39.0])
    assert "2 runs on data aaa, 1 run on data bbb" in ours.note and "not pooled" in ours.note
    assert ours.note.endswith("shown: data aaa")


@pytest.mark.slow
def test_a_two_cell_study_end_to_end_and_resumed(tmp_path, capsys):
    path = write(tmp_path, study_dict())
    args = ["reproduce", str(path), *TINY, f"workspace={tmp_path / 'w'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 rows x 1 columns x 2 seeds = 4 runs" in out
    assert 'set-up: protocol.epochs 4 ≠ 200 (paper: "trained for 200 epochs")' in out
    assert "set-up: 1 of 3 items the paper states are as it states" in out
    assert "synthetic IF 20" in out and '"DV beats CE":' in out
    folder = tmp_path / "w" / "studies" / "two_cells"
    markdown = (folder / "two_cells.md").read_text()
    assert "| | synthetic IF 20 |" in markdown and "paper 40.0 ± 1.0" in markdown
    assert (folder / "two_cells.png").stat().st_size > 10_000
    assert len(list((tmp_path / "w" / "runs").glob("*/results.json"))) == 4
    assert main(args) == 0  # again: nothing left to train, the same report
    again = capsys.readouterr().out
    assert "(4 already finished, 0 to run)" in again
    assert again.split("\nTwo cells: top-1")[1] == out.split("\nTwo cells: top-1")[1]


def test_rows_and_columns_can_be_chosen_and_claims_follow():
    from lt_bench.compare.study import select

    study = select(load_study("zheng_ng_table1"), ["CIFAR-10 IF 100"], ["CE", "EN", "DV"])
    assert [c.label for c in study.columns] == ["CIFAR-10 IF 100"]
    assert [r.label for r in study.rows] == ["CE", "EN", "DV"]
    assert study.claims and all(c.columns == ["CIFAR-10 IF 100"] for c in study.claims)
    assert all(set(c.than) <= {"CE", "EN"} and c.than for c in study.claims)
    with pytest.raises(LtBenchError, match="--row 'DW' is not a row of study zheng_ng_table1 .choose from: CE, EN, DV, "):
        select(load_study("zheng_ng_table1"), rows=["DW"])


def test_the_report_is_logged_to_its_own_mlflow_run(tmp_path, template_db, capsys):
    import shutil

    from lt_bench.tracking.store import TAG, client, tracking_uri

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    path = write(tmp_path, study_dict())
    assert main(["reproduce", str(path), "--report-only", f"workspace={ws}",
                 "tracking.tracker=mlflow"]) == 0
    assert "CE   —" in capsys.readouterr().out  # nothing trained: every cell says so
    c = client(tracking_uri({"workspace": str(ws)}))
    exp = c.get_experiment_by_name("study-two_cells")
    runs = c.search_runs([exp.experiment_id], f"tags.`{TAG}role` = 'study'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert sorted(a.path for a in c.list_artifacts(runs[0].info.run_id)) == [
        "two_cells.md", "two_cells.png"]


def test_runs_trained_with_the_data_elsewhere_are_found(tmp_path):
    """data.root is part of a run folder's name: runs brought home from a machine whose data lay
    elsewhere are still this cell's runs (the fingerprint says whether the data were the same)."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from lt_bench.compare.verdict import collect
    from lt_bench.config import config_hash
    from lt_bench.workspace.layout import run_folder

    common = ["dataset=synthetic_lt", "method=ce", "seed=1", f"workspace={tmp_path}"]
    there = load_config([], [*common, "data.root=/far/away"])
    here = load_config([], [*common, "data.root=/close/by"])
    assert run_folder(there) != run_folder(here)
    folder = run_folder(there)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(there))
    run_result(1, 0.7, "aaa").save(folder / "results.json", root=tmp_path)
    study = load_study(str(write(tmp_path, study_dict())))
    job = SimpleNamespace(run_dir=run_folder(here), cfg=here, method="ce", seed=1,
                          cfg_hash=config_hash(here))
    ours = collect(study, {("CE", "synthetic IF 20"): [job]})[("CE", "synthetic IF 20")]
    assert ours.values == pytest.approx([30.0]) and ours.seeds == [1]
    other = load_config([], [*common, "data.root=/far/away", "protocol.lr=0.5"])
    job.cfg, job.run_dir = other, run_folder(other)  # another config: not this run
    assert collect(study, {("CE", "x"): [job]})[("CE", "x")].n == 0


def test_the_study_picture_fits_its_width_with_level_labels_and_a_whole_title(tmp_path,
                                                                               overflows):
    from lt_bench.compare.render import study_figure

    rows = [{"label": f"method number {i}", "method": "ce"} for i in range(12)]
    columns = [{"label": f"synthetic IF {f}", "dataset": "synthetic_lt", "imbalance": f}
               for f in (10, 20, 50, 100)]
    title = "A study whose title is longer than any picture is wide: " + "words " * 30
    study = load_study(str(write(tmp_path, study_dict(
        title=title, rows=rows, columns=columns, claims=[],
        cells={r["label"]: ["40.0 ± 1.0"] * 4 for r in rows}))))
    ours = {(r["label"], c["label"]): Ours([30.0 + i, 31.0 + i])
            for i, r in enumerate(rows) for c in columns}
    fig = study_figure(build_report(study, ours))
    assert fig.get_figwidth() * 120 <= 1000 and not overflows(fig)
    labels = fig.axes[0].get_yticklabels()
    assert [t.get_text() for t in labels] == [r["label"] for r in rows]
    assert all(t.get_rotation() == 0 for t in labels)
    assert fig._suptitle.get_text().replace("\n", " ") == title.strip()
