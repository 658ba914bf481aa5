"""The PV-collapse report on a hand-made workspace: the share of each class's radius that is
round-off (the axes its logits cannot span: n − 1 samples, F features), the weights against dv's
once both are scaled to mean 1, and the accuracy beside dv's and ce's, group by group."""
import json

import pytest
import yaml

from experiments.pv_collapse import main, round_off_share

COUNTS = [50, 20, 4, 3]


def write_run(workspace, name, method, weights, per_class, seed=0, acc=0.5):
    folder = workspace / "runs" / f"{name}-seed{seed}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"method": method}))
    (folder / "results.json").write_text(json.dumps({
        "status": "FINISHED", "dataset": "cifar100_lt", "imbalance": 100.0, "seed": seed,
        "classes": ["a", "b", "c", "d"], "train_counts": COUNTS,
        "group_of_class": ["many", "medium", "few", "few"],
        "class_weights": [[1.0] * 4, weights] if weights else [],
        "best": {"acc": acc, "per_class": per_class}}))


def pv_components(workspace, components):
    for folder in (workspace / "runs").glob("pv-*"):
        (folder / "config.yaml").write_text(yaml.safe_dump(
            {"method": {"name": "pv", "convention": "authors", "components": components}}))


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


def test_groups_weights_and_accuracy(workspace, capsys):
    assert main([str(workspace), "--out", str(workspace / "p.png")]) == 0
    text = capsys.readouterr().out
    assert "**pv D†=4, seed 0** (F = unbounded features): best-epoch error 40.0 %, ce 60.0 %, " \
           "dv (expected) 30.0 %" in text
    assert "| weight: pv / dv (expected) | accuracy %: pv / ce / dv (expected) |" in text
    # 50 and 20 samples span all 4 axes: no round-off, the radius untouched
    assert "| many: 1 | 50–50 | 0.00 | 1 | 2 / 0.25 | 90.0 / 95.0 / 80.0 |" in text
    assert "| medium: 1 | 20–20 | 0.00 | 1 | 1.6 / 0.5 | 70.0 / 50.0 / 60.0 |" in text
    # 4 samples span 3 of the 4 axes (share 1/4); 3 samples keep 3 components, one of them
    # round-off (1/3): factors 1e-14^(1/4) = 3e-4 and 1e-14^(1/3) = 2e-5. Weights: pv √(0.2 · 0.2),
    # dv √(1 · 2.25); accuracy pv (10 + 0) / 2, ce 20 (its other class has no test images),
    # dv (40 + 30) / 2
    assert "| few: 2 | 3–4 | 0.25–0.33 | 2e-05–0.0003 | 0.2 / 1.5 | 5.0 / 20.0 / 35.0 |" in text
    assert text.count("**pv") == 1
    assert (workspace / "p.png").stat().st_size > 0


def test_the_features_bound_every_class(workspace, capsys):
    # F = 2: the logits span 2 axes whatever n is, so 2 of the 4 axes are round-off for n >= 4
    main([str(workspace), "--features", "2"])
    text = capsys.readouterr().out
    assert "| many: 1 | 50–50 | 0.50 | 1e-07 |" in text
    assert "| few: 2 | 3–4 | 0.33–0.50 |" in text


@pytest.mark.parametrize("components, few", [
    (3, "| few: 2 | 3–4 | 0.00–0.33 |"),  # 3 axes: 4 samples span them, 3 do not
    (10, "| few: 2 | 3–4 | 0.25–0.33 |"),  # more than C means all C, as in the method
])
def test_components_decide_the_share(workspace, capsys, components, few):
    pv_components(workspace, components)
    main([str(workspace)])
    assert few in capsys.readouterr().out


@pytest.mark.parametrize("n, axes, classes, features, share", [
    (500, 100, 100, 64, 0.36),  # CIFAR-100 on ResNet-32: 36 of 100 axes flat
    (80, 100, 100, 64, 16 / 80),  # 80 components kept, 64 spanned, the fill their mean
    (5, 100, 100, 64, 1 / 5),  # 5 kept, 4 spanned
    (5, 10, 100, 64, 1 / 5),
    (11, 10, 100, 64, 0.0),  # D† = 10 of 10 spanned
    (12, 10, 10, None, 0.0),
])
def test_round_off_share(n, axes, classes, features, share):
    assert round_off_share(n, axes, classes, features) == pytest.approx(share)


def test_no_pv_run_says_what_to_train(tmp_path, capsys):
    write_run(tmp_path, "ce", {"name": "ce"}, None, [1, 1, 1, 1])
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished pv run" in err and "zheng_ng_table2" in err


def test_a_run_without_its_config_is_left_out(workspace, capsys):
    (workspace / "runs" / "ce-seed0" / "config.yaml").unlink()
    main([str(workspace)])
    text = capsys.readouterr().out
    assert "accuracy %: pv / dv (expected) |" in text and "ce 60.0" not in text
