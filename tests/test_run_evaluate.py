"""Issue 25, part 3: evaluation that says where a method helps. Expected calibration error,
accuracy under shifted test priors and configurable group thresholds, each against a case
computed by hand here; the new keys leave every existing config hash alone; results.json keeps
reading both ways."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lt_bench import LtBenchError
from lt_bench.compare.leaderboard import build, format_csv, format_markdown, format_text
from lt_bench.config import config_hash, load_config
from lt_bench.run.evaluate import (
    confidence_bin,
    evaluate,
    expected_calibration_error,
    shifted_accuracies,
    shifted_priors,
)
from lt_bench.tracking.records import summary_metrics
from lt_bench.workspace.record import SHIFTED, Score, from_history, read_result

TRAIN_COUNTS = [300, 50, 5]  # many, medium, few under the default thresholds


def logits_for(predicted: int, confidence: float, classes: int = 3) -> list[float]:
    """Logits whose softmax gives ``confidence`` to ``predicted`` and the rest evenly."""
    rest = (1 - confidence) / (classes - 1)
    return [math.log(confidence if c == predicted else rest) for c in range(classes)]


# (target, predicted, confidence): class 0 is many-shot, 1 medium, 2 few
SAMPLES = [(0, 0, 0.90), (0, 1, 0.90), (1, 1, 0.62), (1, 0, 0.58), (2, 2, 0.95), (2, 2, 0.75)]


class HandData:
    """The samples above as a test set, scored by a 'model' that returns their logits."""

    classes = ["a", "b", "c"]
    train_counts = TRAIN_COUNTS
    num_val = 0

    def __init__(self, samples=SAMPLES):
        self.targets = torch.tensor([t for t, _, _ in samples])
        self.logits = torch.tensor([logits_for(p, c) for _, p, c in samples])

    def test_batches(self, batch_size, *, device, rank, world_size, split):
        for i in range(0, len(self.targets), batch_size):
            index = torch.arange(i, min(i + batch_size, len(self.targets)))
            yield index, self.targets[index]

    def model(self, index):
        return self.logits[index]


# -- expected calibration error -----------------------------------------------------------------
def test_ece_of_hand_made_logits():
    # 15 bins of width 1/15: 0.90 and 0.90 share (13/15, 14/15]: accuracy 1/2, confidence 0.9;
    # 0.62 is alone in (9/15, 10/15], 0.58 alone in (8/15, 9/15]; weights |B|/N = 2/4, 1/4, 1/4
    samples = SAMPLES[:4]
    logits = torch.tensor([logits_for(p, c) for _, p, c in samples])
    targets = torch.tensor([t for t, _, _ in samples])
    by_hand = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.62) + 1 / 4 * abs(0 - 0.58)
    assert expected_calibration_error(logits, targets) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.44)


def test_bins_are_closed_on_the_right():
    edges = torch.tensor([1 / 15 + 1e-6, 2 / 15 - 1e-6, 2 / 15 + 1e-6, 0.999, 1.0])
    assert confidence_bin(edges).tolist() == [1, 1, 2, 14, 14]


def test_evaluate_reports_ece_overall_and_per_group():
    report = evaluate(HandData().model, HandData(), "cpu", batch_size=4)
    # the group of a sample is its true class's: many = the two 0.90, medium = 0.62 and 0.58,
    # few = 0.95 and 0.75 both right, each alone in its bin
    many = abs(0.5 - 0.9)
    medium = 1 / 2 * abs(1 - 0.62) + 1 / 2 * abs(0 - 0.58)
    few = 1 / 2 * abs(1 - 0.95) + 1 / 2 * abs(1 - 0.75)
    overall = (2 * abs(0.5 - 0.9) + abs(1 - 0.62) + abs(0 - 0.58) + abs(1 - 0.95)
               + abs(1 - 0.75)) / 6
    assert report["ece_many"] == pytest.approx(many)
    assert report["ece_medium"] == pytest.approx(medium)
    assert report["ece_few"] == pytest.approx(few)
    assert report["ece"] == pytest.approx(overall)
    assert report["acc"] == pytest.approx(4 / 6)
    assert report["per_class"] == pytest.approx([0.5, 0.5, 1.0])


def test_a_group_without_test_samples_has_no_ece():
    data = HandData(SAMPLES[:4])  # no sample of the few-shot class
    report = evaluate(data.model, data, "cpu", batch_size=10)
    assert report["ece_few"] is None and report["acc_few"] is None
    assert report["ece"] == pytest.approx(0.44)


# -- shifted test priors ------------------------------------------------------------------------
def test_a_class_without_test_images_has_no_accuracy_not_zero(tmp_path):
    from lt_bench.compare.plot import by_count

    data = HandData(SAMPLES[:4])  # no test image of class 2
    report = evaluate(data.model, data, "cpu", batch_size=10)
    assert report["per_class"] == [0.5, 0.5, None]
    # it reads back from a results.json, and the comparison picture leaves it out
    fields = {k: report[k] for k in ("acc", "per_class", "ece")}
    assert Score.from_dict({"epoch": 0, **fields}).per_class == [0.5, 0.5, None]
    assert by_count([10, 10, 3], report["per_class"]) == {10: 0.5}


def test_shifted_priors_of_hand_made_per_class_accuracies():
    # training counts out of order: class 1 is the head (rank 0), class 2 rank 1, class 0 the tail
    per_class, counts = [0.9, 0.6, 0.3], [5, 300, 50]
    head, middle, tail = 0.6, 0.3, 0.9

    def under(weights):  # weights of (head, middle, tail)
        return (weights[0] * head + weights[1] * middle + weights[2] * tail) / sum(weights)

    got = shifted_accuracies(per_class, counts)
    assert list(got) == list(SHIFTED)
    for f in (50, 10, 5):  # p ∝ f^(-rank/(C-1)), C - 1 = 2
        assert got[f"forward{f}"] == pytest.approx(under([1, f ** -0.5, 1 / f]))
        assert got[f"backward{f}"] == pytest.approx(under([1 / f, f ** -0.5, 1]))
    assert got["uniform"] == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert got["forward50"] == pytest.approx((0.6 + 0.3 / math.sqrt(50) + 0.9 / 50)
                                             / (1 + 1 / math.sqrt(50) + 1 / 50))
    priors = shifted_priors(counts)
    assert all(sum(p) == pytest.approx(1) for p in priors.values())
    assert priors["forward50"][1] / priors["forward50"][0] == pytest.approx(50)


def test_shifted_priors_leave_out_classes_without_test_images():
    got = shifted_accuracies([0.9, 0.0, 0.5], [300, 50, 5], present=[True, False, True])
    assert got["uniform"] == pytest.approx(0.7)
    assert got["forward10"] == pytest.approx((0.9 + 0.5 / 10) / (1 + 1 / 10))
    assert shifted_accuracies([0.5], [10], present=[False]) == {}
    assert shifted_accuracies([0.5], [10]) == {name: 0.5 for name in SHIFTED}


def test_evaluate_reports_the_shifted_accuracies():
    report = evaluate(HandData().model, HandData(), "cpu", batch_size=6)
    assert report["shifted_uniform"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert report["shifted_backward50"] == pytest.approx(
        (0.5 / 50 + 0.5 / math.sqrt(50) + 1.0) / (1 / 50 + 1 / math.sqrt(50) + 1))


# -- group thresholds ---------------------------------------------------------------------------
def test_moved_thresholds_move_a_class_to_another_group():
    data = HandData()
    default = evaluate(data.model, data, "cpu", batch_size=6)
    moved = evaluate(data.model, data, "cpu", batch_size=6,
                     thresholds={"many_above": 40, "few_below": 20})
    assert (default["classes_many"], default["classes_medium"]) == (1, 1)
    assert (moved["classes_many"], moved["classes_medium"]) == (2, 0)
    assert moved["acc_many"] == pytest.approx(2 / 4) and moved["acc_medium"] is None
    # the many-shot ECE now pools the 0.90, 0.90 (one bin), 0.62 and 0.58 (a bin each)
    assert moved["ece_many"] == pytest.approx(
        (2 * abs(0.5 - 0.9) + abs(1 - 0.62) + abs(0 - 0.58)) / 4)
    few = evaluate(data.model, data, "cpu", batch_size=6,
                   thresholds={"many_above": 400, "few_below": 51})
    assert (few["classes_many"], few["classes_medium"], few["classes_few"]) == (0, 1, 2)


def test_the_thresholds_are_config_keys_with_the_literature_defaults():
    cfg = load_config([], ["method=ce"])
    assert (cfg.eval.many_above, cfg.eval.few_below) == (100, 20)
    cfg = load_config([], ["method=ce", "eval.many_above=40", "eval.few_below=5"])
    assert (cfg.eval.many_above, cfg.eval.few_below) == (40, 5)


@pytest.mark.parametrize("overrides,key", [
    (["eval.few_below=200"], "eval.few_below"),
    (["eval.many_above=10", "eval.few_below=11"], "eval.few_below"),
    (["eval.many_above=-1", "eval.few_below=0"], "eval.many_above"),
    (["eval.few_below=-3"], "eval.few_below")])
def test_inverted_or_negative_thresholds_are_one_line_naming_the_key(overrides, key):
    with pytest.raises(LtBenchError, match=f"'{key}'") as info:
        load_config([], ["method=ce", *overrides])
    assert "\n" not in str(info.value)


# -- the config hash of every existing configuration --------------------------------------------
DV_AUTHORS = ["protocol=zheng_ng_code", "dataset=cifar10_lt", "imbalance=100", "method=dv",
              "method.convention=authors"]
CE = ["protocol=zheng_ng_code", "dataset=cifar10_lt", "imbalance=100", "method=ce"]


def test_the_new_keys_leave_existing_hashes_alone():
    # both computed before the eval section existed; runs in progress and finished are found by
    # these
    # (by the rule of lt_bench before data.copy, which `workspace upgrade` reads them by)
    assert config_hash(load_config([], DV_AUTHORS), legacy=True) == "c5305ff21c"
    assert config_hash(load_config([], CE), legacy=True) == "775fc039b5"
    ce = config_hash(load_config([], CE))
    typed = load_config([], [*CE, "eval.many_above=100", "eval.few_below=20"])
    assert config_hash(typed) == ce  # at the defaults: the same setting
    moved = load_config([], [*CE, "eval.many_above=50"])
    assert config_hash(moved) != ce  # other groups: not pooled with the default's


# -- the run record -----------------------------------------------------------------------------
class Data:
    classes = ["a", "b"]
    train_counts = [200, 10]


def history():
    metrics = {"test/acc": 0.4, "test/acc_many": 0.8, "test/acc_few": 0.0, "test/ece": 0.12,
               "test/ece_many": 0.1, "test/ece_few": 0.3,
               **{f"test/shifted_{n}": 0.1 * i for i, n in enumerate(SHIFTED)}}
    return [{"epoch": 0, "per_class": [0.8, 0.0], "class_weights": [1.0, 1.0], **metrics},
            {"epoch": 1, "per_class": [0.9, 0.1], "class_weights": [1.0, 1.0],
             **metrics, "test/acc": 0.5, "test/ece": 0.05}]


def test_ece_and_shifted_reach_the_score_the_file_and_the_tracker(tmp_path):
    cfg = load_config([], ["method=ce", "eval.many_above=150"])
    result = from_history(cfg, Data(), history(), "FINISHED", 1.0)
    assert result.final.ece == 0.05 and result.best.ece == 0.05 and result.final.ece_few == 0.3
    assert result.final.ece_medium is None
    assert result.final.shifted == {n: pytest.approx(0.1 * i) for i, n in enumerate(SHIFTED)}
    assert result.group_thresholds == {"many_above": 150, "few_below": 20}
    assert all("test/ece" in h for h in result.history)  # every evaluated epoch keeps it
    result.save(tmp_path / "results.json")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["final"]["ece"] == 0.05
    assert saved["best"]["shifted"]["backward50"] == pytest.approx(0.6)
    assert read_result(tmp_path / "results.json") == result
    metrics = summary_metrics(result)
    assert metrics["final/ece"] == 0.05 and metrics["best/ece_many"] == 0.1
    assert metrics["final/shifted_forward50"] == 0.0
    assert metrics["final/shifted_backward50"] == pytest.approx(0.6)
    assert "final/ece_medium" not in metrics  # None: left out


# -- the leaderboard ----------------------------------------------------------------------------
def record(method: str, seed: int, acc: float, ece: float, params: dict | None = None) -> dict:
    metrics = {"final/acc": acc, "final/acc_many": acc, "final/ece": ece,
               "final/ece_many": ece / 2,
               **{f"final/shifted_{n}": acc - 0.01 * i for i, n in enumerate(SHIFTED)}}
    return {"run_id": f"{method}{seed}", "end_time": 1, "metrics": metrics,
            "params": params or {}, "tags": {
                "lt.method": method, "lt.seed": str(seed), "lt.dataset": "d",
                "lt.imbalance": "10", "lt.backbone": "b", "lt.protocol": "p",
                "lt.cfg_hash": f"h{method}"}}


def test_the_leaderboard_has_ece_and_shifted_columns_and_names_the_thresholds():
    rows = build([record("ce", 0, 0.6, 0.10), record("ce", 1, 0.7, 0.20),
                  record("dv", 0, 0.5, 0.04, {"eval.many_above": "50", "eval.few_below": "10"})])
    ce = next(r for r in rows if r.method == "ce")
    assert ce.ece == pytest.approx(0.15) and ce.ece_many == pytest.approx(0.075)
    assert ce.shifted["backward50"] == pytest.approx(0.65 - 0.06)
    assert (ce.many_above, ce.few_below) == (100, 20)
    text = format_text(rows)
    header = text.splitlines()[1]
    assert "many (>100 | >50) %" in header and "few (<20 | <10) %" in header
    assert "ECE %" in header and "forward50" not in header
    assert "15.00" in text.splitlines()[3] or "15.00" in text.splitlines()[4]
    assert "group thresholds differ: ce: many >100, few <20; dv: many >50, few <10" in text
    wide = format_markdown(rows, ("ece", "shifted")).splitlines()[2]
    assert "| ECE many % |" in wide and "| forward50 % |" in wide and "| backward50 % |" in wide
    csv_header = format_csv(rows).splitlines()[0].split(",")
    assert {"ece", "ece_few", "shifted_uniform", "many_above", "label"} <= set(csv_header)
    same = build([record("ce", 0, 0.6, 0.1)])
    assert "many (>100) %" in format_text(same) and "medium (20–100) %" in format_text(same)
    assert "thresholds differ" not in format_text(same)


def test_the_columns_option_and_its_help():
    import argparse

    from lt_bench.commands.leaderboard import add_parser, parse_columns

    assert parse_columns("") == ()
    assert parse_columns("shifted,ece") == ("ece", "shifted")
    assert parse_columns("all") == ("ece", "shifted")
    with pytest.raises(LtBenchError, match="unknown column set 'p'.*ece, shifted") as info:
        parse_columns("ece,p")
    assert "\n" not in str(info.value)
    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    text = " ".join(sub.choices["leaderboard"].format_help().split())
    assert "--columns" in text and "forward50" in text and "many (>100)" in text


# -- a real run ---------------------------------------------------------------------------------
def test_a_run_records_them_at_every_evaluated_epoch(tmp_path):
    from lt_bench.run.train import train

    cfg = load_config([], [
        "dataset=synthetic_lt", "imbalance=20", "protocol.batch_size=64", "protocol.lr=0.05",
        "protocol.warmup_epochs=0", "precision=fp32", "quiet=true", "deterministic=true",
        "method=ce", "protocol.epochs=2", "tracking.tracker=local", f"workspace={tmp_path}",
        "eval.many_above=90", "eval.few_below=15"])
    result = train(cfg)
    assert result.train_counts == [200, 94, 44, 21, 10]
    # many > 90: 200 and 94; few < 15: 10
    assert result.group_of_class == ["many", "many", "medium", "medium", "few"]
    assert result.group_thresholds == {"many_above": 90, "few_below": 15}
    assert (result.final.classes_many, result.final.classes_few) == (2, 1)
    for h in result.history:
        assert 0 <= h["test/ece"] <= 1 and "test/ece_few" in h
        assert set(SHIFTED) <= {k.removeprefix("test/shifted_") for k in h}
    final = result.final
    assert final.shifted["uniform"] == pytest.approx(sum(final.per_class) / 5)
    assert final.shifted == pytest.approx(shifted_accuracies(final.per_class,
                                                             result.train_counts))
    assert final.ece == result.history[-1]["test/ece"]
