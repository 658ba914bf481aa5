"""The held-out validation split (``data.val_per_class``) and best-epoch selection on it."""

import pytest
import torch
from test_data_sources import cfg, write_cifar_pickle, write_folder
from test_run_train import TINY

from lt_bench.config import load_config
from lt_bench.data import load_data
from lt_bench.data.longtail import hold_out_validation
from lt_bench.errors import LtBenchError
from lt_bench.run.train import train
from lt_bench.workspace.record import from_history


def test_validation_comes_from_left_out_images_first():
    labels = torch.arange(3).repeat_interleave(10)  # 3 classes x 10 images
    # the long-tailed subset keeps 10, 5 and 2 images of classes 0, 1, 2
    keep = torch.cat([torch.arange(0, 10), torch.arange(10, 15), torch.arange(20, 22)])
    train_idx, val_idx = hold_out_validation(labels, keep, 3, 0, ["a", "b", "c"], "src")
    assert torch.bincount(labels[val_idx], minlength=3).tolist() == [3, 3, 3]  # balanced
    # class 0 kept everything, so it gives up 3 training images; 1 and 2 lose none
    assert torch.bincount(labels[train_idx], minlength=3).tolist() == [7, 5, 2]
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert set(train_idx.tolist()) <= set(keep.tolist())
    assert set(range(10, 15)) | {20, 21} <= set(train_idx.tolist())  # tail subsets unchanged
    assert not set(val_idx[labels[val_idx] > 0].tolist()) & set(keep.tolist())
    again = hold_out_validation(labels, keep, 3, 0, ["a", "b", "c"], "src")
    assert torch.equal(again[1], val_idx)  # seeded
    other = hold_out_validation(labels, keep, 3, 1, ["a", "b", "c"], "src")
    assert not torch.equal(other[1], val_idx)


def test_a_class_left_without_training_images_is_an_error():
    labels = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(LtBenchError, match=r"val_per_class=2 .*'b'.*lower data.val_per_class"):
        hold_out_validation(labels, torch.arange(5), 2, 0, ["a", "b"], "src")


def test_cifar_lt_and_image_folder_with_validation(tmp_path):
    write_cifar_pickle(tmp_path)  # 20 train images per class
    plain = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path))
    data = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path, val_per_class=4))
    assert data.num_val == 40 and torch.bincount(data.val_labels).tolist() == [4] * 10
    # only the head class (20 of 20 kept) pays for its validation images
    assert data.train_counts == [16] + plain.train_counts[1:]
    assert data.test_counts == plain.test_counts
    got = torch.cat([y for _, y in data.test_batches(16, device="cpu", split="val")])
    assert torch.equal(got, data.val_labels)
    assert data.describe()["val_total"] == 40

    folder = tmp_path / "folder"
    write_folder(folder, train=6, size=80)  # large images: the DataLoader path
    loader_data = load_data("image_folder_lt", None, cfg(folder, tmp_path, val_per_class=2))
    assert loader_data.train_counts == [4, 4, 4] and loader_data.num_val == 6
    xs, ys = zip(*loader_data.test_batches(4, device="cpu", split="val"))
    assert torch.cat(ys).tolist() == loader_data.val_labels.tolist()
    with pytest.raises(LtBenchError, match="val_per_class"):
        load_data("image_folder_lt", None, cfg(folder, tmp_path, val_per_class=6))
    with pytest.raises(LtBenchError, match=r"data.val_per_class must be ≥ 0"):
        load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path, val_per_class=-1))


def test_best_epoch_is_chosen_on_validation_when_there_is_one(tmp_path):
    cfg_ = load_config([], TINY + ["method=ce", "protocol.epochs=2", "data.val_per_class=5",
                                   f"workspace={tmp_path}"])
    results = train(cfg_)
    assert results.best_chosen_on == "val"
    history = [h for h in results.history if "val/acc" in h]
    assert len(history) == 2
    # a hand-made history where validation and test disagree on the best epoch
    fake = [{"epoch": 0, "test/acc": 0.9, "val/acc": 0.1, "per_class": [], "class_weights": []},
            {"epoch": 1, "test/acc": 0.5, "val/acc": 0.6, "per_class": [], "class_weights": []}]
    data = load_data("synthetic_lt", 20, cfg_.data)
    assert from_history(cfg_, data, fake, "FINISHED", 0.0).best.epoch == 1
    no_val = [{k: v for k, v in h.items() if k != "val/acc"} for h in fake]
    picked = from_history(cfg_, data, no_val, "FINISHED", 0.0)
    assert picked.best.epoch == 0 and picked.best_chosen_on == "test"
