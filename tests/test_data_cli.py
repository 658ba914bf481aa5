"""``lt-bench data describe``: text and JSON descriptions, and the config fallback."""

import json
import pickle

import numpy as np
import pytest

from lt_bench.cli import main
from lt_bench.commands.data import histogram
from lt_bench.data import lt_counts


@pytest.fixture
def cifar_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(10), 30)
    for i, part in enumerate(np.array_split(np.arange(len(y)), 5), 1):
        batch = {"data": rng.integers(0, 256, (len(part), 3072), dtype=np.uint8),
                 "labels": y[part].tolist()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(pickle.dumps(
        {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": [0, 1] * 10}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    return tmp_path


def args(root):
    return ["dataset=cifar10_lt", "imbalance=10", f"data.root={root}",
            f"data.cache_dir={root / 'cache'}", "data.progress=false"]


def test_describe_json(cifar_root, capsys):
    assert main(["data", "describe", *args(cifar_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == lt_counts(30, 10, 10) == [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
    assert out["total"] == 118 and out["imbalance"] == 10.0
    assert out["groups"] == {"many": 0, "medium": 2, "few": 8}
    assert out["classes"] == list("abcdefghij")


def test_describe_text_and_yaml(cifar_root, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: cifar10_lt\nimbalance: 5\n")
    assert main(["data", "describe", str(config), *args(cifar_root)[2:]]) == 0
    out = capsys.readouterr().out
    assert "10 classes" in out and "imbalance 5.0" in out and "█" in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "describe", "dataset=cifar10_lt", f"data.root={tmp_path}/none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lt-bench: error:") and "\n" not in err and "data.root" in err


def test_histogram_bins_many_classes():
    text = histogram(list(range(1000, 0, -1)), [str(i) for i in range(1000)], rows=20)
    assert len(text.splitlines()) == 20 and "classes 0–49" in text


def test_describe_counts_groups_by_the_configured_thresholds(capsys):
    """synthetic_lt at IF 20 (5 classes): the counts decide the groups, the thresholds move them."""
    from lt_bench.data.groups import group_sizes

    args = ["data", "describe", "dataset=synthetic_lt", "imbalance=20", "--json"]
    assert main(args) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    wide = {"many_above": max(counts) - 1, "few_below": min(counts) + 1}
    assert main([*args, f"eval.many_above={wide['many_above']}",
                 f"eval.few_below={wide['few_below']}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["group_thresholds"] == wide
    assert info["groups"] == group_sizes(counts, **wide)
    assert info["groups"]["many"] == 1 and info["groups"]["few"] == 1
