"""The PV-collapse report on a hand-made workspace: which classes it counts as collapsed (n ≤ D†),
their weights against dv's once both are scaled to mean 1, and their accuracy beside dv's and ce's."""
import json

import pytest
import yaml

from experiments.pv_collapse import main

COUNTS = [50, 20, 4, 3]


def write_run(workspace, name, method, weights, per_class, seed=0, acc=0.5):
    folder = workspace / "runs" / f"{name}-seed{seed}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"method": method}))
    (folder / "results.json").write_text(json.dumps({
        "status": "FINISHED", "dataset": "cifar100_lt", "imbalance": 100.0, "seed": seed,
        "classes": ["a", "b", "c", "d"], "train_counts": COUNTS,
        "class_weights": [[1.0] * 4, weights] if weights else [],
        "best": {"acc": acc, "per_class": per_class}}))


@pytest.fixture
def workspace(tmp_path):
    # pv's last weights sum to 2 (mean 0.5): scaled to mean 1 they are 2, 1.6, 0.2, 0.2
    write_run(tmp_path, "pv", {"name": "pv", "convention": "authors", "components": None},
              [1.0, 0.8, 0.1, 0.1], [0.9, 0.7, 0.1, 0.0], acc=0.6)
    # dv's sum to 8 (mean 2): scaled, 0.25, 0.5, 1, 2.25
    write_run(tmp_path, "dv", {"name": "dv", "convention": "authors"},
              [0.5, 1.0, 2.0, 4.5], [0.8, 0.6, 0.4, 0.3], acc=0.7)
    write_run(tmp_path, "ce", {"name": "ce"}, None, [0.95, 0.5, 0.2, None], acc=0.4)
    # another seed's dv and a paper-convention pv stay out of seed 0's comparison
    write_run(tmp_path, "dv", {"name": "dv", "convention": "authors"}, [1, 1, 1, 1],
              [0, 0, 0, 0], seed=1)
    write_run(tmp_path, "pvp", {"name": "pv", "convention": "paper"}, [1, 1, 1, 1], [0, 0, 0, 0])
    return tmp_path


def test_collapsed_classes_weights_and_accuracy(workspace, capsys):
    assert main([str(workspace), "--out", str(workspace / "p.png")]) == 0
    text = capsys.readouterr().out
    assert "**pv D†=4, seed 0**: best-epoch error 40.0 %, ce 60.0 %, dv (expected) 30.0 %" in text
    assert "| classes | n | weight: pv / dv (expected) | accuracy %: pv / ce / dv (expected) |" in text
    # classes 4 and 3 (D† = C = 4 axes: a class of n ≤ 4 spans at most 3): pv's weights 0.2 and 0.2 (geometric mean 0.2), dv's 1 and 2.25 (1.5);
    # accuracy pv (0.1 + 0) / 2, ce 0.2 (its other class has no test images), dv (0.4 + 0.3) / 2
    assert "| collapsed (n ≤ 4): 2 | 3–4 | 0.2 / 1.5 | 5.0 / 20.0 / 35.0 |" in text
    # classes 50 and 20: pv √(2 · 1.6), dv √(0.25 · 0.5)
    assert "| the others: 2 | 20–50 | 1.79 / 0.354 | 80.0 / 72.5 / 70.0 |" in text
    assert text.count("**pv") == 1
    assert (workspace / "p.png").stat().st_size > 0


@pytest.mark.parametrize("components, collapsed", [
    (3, "| collapsed (n ≤ 3): 1 | 3–3 |"),  # D† = 3 axes: only the class of 3 cannot span them
    (10, "| collapsed (n ≤ 4): 2 | 3–4 |"),  # more than C means all C, as in the method
])
def test_components_decide_which_classes_collapse(workspace, capsys, components, collapsed):
    for folder in (workspace / "runs").glob("pv-*"):
        (folder / "config.yaml").write_text(yaml.safe_dump(
            {"method": {"name": "pv", "convention": "authors", "components": components}}))
    main([str(workspace)])
    assert collapsed in capsys.readouterr().out


def test_no_pv_run_says_what_to_train(tmp_path, capsys):
    write_run(tmp_path, "ce", {"name": "ce"}, None, [1, 1, 1, 1])
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished pv run" in err and "zheng_ng_table2" in err
