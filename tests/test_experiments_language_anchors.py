"""The language-anchors benchmark's report with a class that has no test images (its per-class
accuracy is None in results.json): the class is shown as n/a, the others keep their means."""
from experiments.language_anchors import class_means, picture, table


def run(acc, per_class):
    return {"final": {"acc": acc, "acc_many": acc, "per_class": per_class},
            "classes": ["a", "b", "c"], "train_counts": [50, 10, 5]}


HEADS = {"linear": [run(0.5, [0.6, 0.2, None]), run(0.7, [0.8, 0.4, None])],
         "language": [run(0.6, [0.7, 0.3, None]), run(0.8, [0.9, None, None])]}


def test_class_means_skip_missing_classes():
    means = class_means(HEADS["language"])
    assert means[0] == (0.7 + 0.9) / 2
    assert means[1] == 0.3  # one seed had no number for it: the mean of the one that had
    assert means[2] is None


def test_table_and_picture_take_a_class_without_test_images(tmp_path):
    text = table(HEADS)
    assert "linear: 70.0 30.0 n/a" in text and "language: 80.0 30.0 n/a" in text
    picture(HEADS, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
