"""Every source on tiny generated data: pickled CIFAR, ImageFolder, .tar.gz, lists, iNat json."""

import json
import logging
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lt_bench.data import DataConfig, LoaderData, TensorData, load_data, lt_counts
from lt_bench.errors import LtBenchError


def cfg(root, tmp_path, **kw):
    return DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), progress=False,
                      workers=0, **kw)


def rgb(seed, size=8):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_cifar_pickle(root, variant="cifar10", per_class=20, classes=10, test_per_class=3):
    """torchvision's pickled layout with random images (labels interleaved across batches)."""
    rng = np.random.default_rng(0)
    train_y = np.tile(np.arange(classes), per_class)
    test_y = np.tile(np.arange(classes), test_per_class)
    names = [f"c{i}" for i in range(classes)]
    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i, part in enumerate(np.array_split(np.arange(len(train_y)), 5), 1):
            batch = {"data": rng.integers(0, 256, (len(part), 3072), dtype=np.uint8),
                     "labels": train_y[part].tolist(), "batch_label": f"batch {i}"}
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
        test = {"data": rng.integers(0, 256, (len(test_y), 3072), dtype=np.uint8),
                "labels": test_y.tolist()}
        (folder / "test_batch").write_bytes(pickle.dumps(test))
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for split, y in (("train", train_y), ("test", test_y)):
            entry = {"data": rng.integers(0, 256, (len(y), 3072), dtype=np.uint8),
                     "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}
            (folder / split).write_bytes(pickle.dumps(entry))
        (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))
    return folder


def write_folder(root, classes=("ant", "bee", "cat"), train=6, test=2, size=8, ext="png",
                 test_name="test"):
    for split, n in (("train", train), (test_name, test)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rgb(1000 * c + i + (0 if split == "train" else 500), size)).save(
                    d / f"{i:04d}.{ext}")
    return root


def test_cifar10_pickle_long_tailed(tmp_path):
    write_cifar_pickle(tmp_path)
    data = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path))
    assert isinstance(data, TensorData)
    assert data.train_counts == lt_counts(20, 10, 10) == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert data.test_counts == [3] * 10  # the test set stays balanced
    assert data.classes == [f"c{i}" for i in range(10)]
    assert data.imbalance == pytest.approx(10.0)
    assert data.train_images.shape == (sum(data.train_counts), 3, 32, 32)
    assert data.train_images.dtype == torch.uint8
    # the cache file exists and a second load (from it) gives the same subset
    assert list((tmp_path / "cache").glob("cifar10-pickle-*.pt"))
    again = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path))
    assert torch.equal(again.train_images, data.train_images)
    step = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path, profile="step"))
    assert step.train_counts == [20] * 5 + [2] * 5
    other = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path, subset_seed=1))
    assert other.train_counts == data.train_counts
    assert not torch.equal(other.train_images, data.train_images)


def test_cifar_normalisation_options(tmp_path):
    """dataset: the channel statistics of all the training images (not of the long-tailed
    subset); cifar_fixed: the authors' constants. Both reach the batches."""
    write_cifar_pickle(tmp_path)
    data = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path))
    every = np.concatenate([pickle.loads(p.read_bytes())["data"] for p in
                            sorted((tmp_path / "cifar-10-batches-py").glob("data_batch_*"))])
    every = every.reshape(-1, 3, 32 * 32) / 255.0
    np.testing.assert_allclose(data.mean, every.mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(data.std, every.std(axis=(0, 2)), rtol=1e-5)
    assert len(every) > len(data.train_labels)  # the subset is smaller than what was averaged
    fixed = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path, normalize="cifar_fixed",
                                            augment="none"))
    np.testing.assert_allclose(fixed.mean, [125.3 / 255, 123.0 / 255, 113.9 / 255])
    np.testing.assert_allclose(fixed.std, [63.0 / 255, 62.1 / 255, 66.7 / 255])
    x, _ = next(fixed.test_batches(4, device="cpu"))
    mean = torch.tensor([125.3, 123.0, 113.9], dtype=torch.double)[:, None, None]
    std = torch.tensor([63.0, 62.1, 66.7], dtype=torch.double)[:, None, None]
    expected = (fixed.test_images[:4].double() - mean) / std  # in pixel units: the /255 cancels
    torch.testing.assert_close(x.double(), expected, rtol=1e-5, atol=1e-5)
    reflect = load_data("cifar10_lt", 10, cfg(tmp_path, tmp_path, pad_mode="reflect"))
    assert reflect.pad_mode == "reflect" and data.pad_mode == "zero"


def test_cifar100_pickle(tmp_path):
    write_cifar_pickle(tmp_path, "cifar100", per_class=10, classes=100, test_per_class=1)
    data = load_data("cifar100_lt", 5, cfg(tmp_path, tmp_path))
    assert data.train_counts == lt_counts(10, 100, 5)
    assert sum(data.test_counts) == 100 and len(data.classes) == 100


def test_cifar_folder_and_tar_give_the_same_data(tmp_path):
    src = write_folder(tmp_path / "cifar10-jpeg", classes=[f"k{i}" for i in range(10)],
                       train=10, test=2, size=32)
    a = load_data("cifar10_lt", 5, cfg(tmp_path, tmp_path))
    assert a.train_counts == lt_counts(10, 10, 5) and a.test_counts == [2] * 10
    first = np.asarray(Image.open(src / "train" / "k0" / "0000.png"))
    test0 = np.array(Image.open(src / "test" / "k0" / "0000.png"))
    assert torch.equal(torch.from_numpy(test0).permute(2, 0, 1), a.test_images[0])
    archive_dir = tmp_path / "arch"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar10-jpeg")
    b = load_data("cifar10_lt", 5, cfg(archive_dir, tmp_path))
    assert b.train_counts == a.train_counts and b.classes == a.classes
    assert torch.equal(a.train_images, b.train_images)
    assert torch.equal(a.test_images, b.test_images)
    assert first.shape == (32, 32, 3)


def test_missing_cifar_offline_says_which_archive_to_put_where(tmp_path):
    """data.download=auto (the default) tries the fetch; offline (conftest) it fails in one
    line that names the archive, the folder and the key."""
    with pytest.raises(LtBenchError) as info:
        load_data("cifar10_lt", 100, cfg(tmp_path / "nowhere", tmp_path))
    msg = str(info.value)
    assert "\n" not in msg and "downloading it failed" in msg
    for part in ("cifar-10-batches-py", "cifar10-jpeg.tar.gz", str(tmp_path / "nowhere"),
                 "data.root"):
        assert part in msg


def test_missing_cifar_is_fetched_into_data_root(tmp_path, monkeypatch):
    """A stand-in for torchvision's download writes the pickles where it is told; the data set
    then loads from them."""
    calls = []

    def fetch(variant, root):
        calls.append((variant, root))
        write_cifar_pickle(root)

    monkeypatch.setattr("lt_bench.data.builders.fetch_cifar", fetch)
    data = load_data("cifar10_lt", 5, cfg(tmp_path / "fresh", tmp_path))
    assert calls == [("cifar10", tmp_path / "fresh")] and len(data.classes) == 10


def test_download_false_never_fetches(tmp_path, monkeypatch):
    monkeypatch.setattr("lt_bench.data.builders.fetch_cifar",
                        lambda *a: pytest.fail("fetched with data.download=false"))
    with pytest.raises(LtBenchError, match="data.download=false"):
        load_data("cifar10_lt", 100, cfg(tmp_path / "nowhere", tmp_path, download=False))


def test_image_folder_small_goes_on_tensors(tmp_path):
    write_folder(tmp_path / "f", train=8, test=2, test_name="val")
    data = load_data("image_folder_lt", 4, cfg(tmp_path / "f", tmp_path))
    assert isinstance(data, TensorData)
    assert data.train_counts == lt_counts(8, 3, 4) == [8, 4, 2]
    assert data.test_counts == [2, 2, 2] and data.classes == ["ant", "bee", "cat"]
    assert data.padding == 1  # H // 8
    same = load_data("image_folder_lt", None, cfg(tmp_path / "f", tmp_path))
    assert same.train_counts == [8, 8, 8]


def test_image_folder_large_uses_the_loader(tmp_path):
    write_folder(tmp_path / "f", train=4, test=2, size=80, ext="jpg")
    data = load_data("image_folder_lt", 2, cfg(tmp_path / "f", tmp_path, image_size=24))
    assert isinstance(data, LoaderData)
    assert data.train_counts == [4, 2, 2]
    x, y = next(data.train_batches(0, 3, device="cpu", seed=0))
    assert x.shape == (3, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, ys = zip(*data.test_batches(4, device="cpu"))
    assert torch.cat(ys).tolist() == [0, 0, 1, 1, 2, 2]
    assert xs[0].shape[1:] == (3, 24, 24)


def test_image_folder_tar_is_extracted_once(tmp_path):
    src = write_folder(tmp_path / "f", train=4, test=1)
    with tarfile.open(tmp_path / "mine.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="mine")
    data = load_data("image_folder_lt", None, cfg(tmp_path / "mine.tar.gz", tmp_path))
    assert data.train_counts == [4, 4, 4]
    assert len(list((tmp_path / "cache").glob("extract-mine-*"))) == 1


def test_empty_class_is_an_error(tmp_path):
    write_folder(tmp_path / "f")
    (tmp_path / "f" / "train" / "dog").mkdir()
    with pytest.raises(LtBenchError, match="'dog'.*no training images"):
        load_data("image_folder_lt", None, cfg(tmp_path / "f", tmp_path))


@pytest.mark.parametrize("pipeline", ["tensor", "loader"])
def test_corrupt_image_is_named(tmp_path, pipeline):
    write_folder(tmp_path / "f")
    bad = tmp_path / "f" / "train" / "bee" / "0003.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(LtBenchError, match="0003.png") as info:
        data = load_data("image_folder_lt", None, cfg(tmp_path / "f", tmp_path, pipeline=pipeline))
        for _ in data.train_batches(0, 4, device="cpu", seed=0):
            pass
    assert "\n" not in str(info.value)


def test_worker_error_comes_back_as_one_line():
    from lt_bench.data.pipeline import _one_line

    wrapped = LtBenchError("Caught LtBenchError in DataLoader worker process 0.\nOriginal "
                           "Traceback (most recent call last):\n  File x\n"
                           "lt_bench.errors.LtBenchError: corrupt or unreadable image /a/b.jpg")
    assert str(_one_line(wrapped)) == "corrupt or unreadable image /a/b.jpg"


def write_list_data(root, name="ImageNet_LT"):
    rows = {"train": [], "test": []}
    for split, per in (("train", [5, 3, 1]), ("test", [2, 2, 2])):
        for label, n in enumerate(per):
            d = root / split / f"n0{label}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rgb(label * 10 + i, 70)).save(d / f"{i}.jpg")
                rows[split].append(f"{split}/n0{label}/{i}.jpg {label}")
    for split in rows:
        (root / f"{name}_{split}.txt").write_text("\n".join(rows[split]) + "\n")


@pytest.mark.parametrize("dataset,prefix", [("imagenet_lt", "ImageNet_LT"),
                                            ("places_lt", "Places_LT")])
def test_file_lists(tmp_path, dataset, prefix, caplog):
    write_list_data(tmp_path, prefix)
    data = load_data(dataset, None, cfg(tmp_path, tmp_path, num_classes=3, image_size=16))
    assert data.train_counts == [5, 3, 1] and data.test_counts == [2, 2, 2]
    assert data.classes == ["n00", "n01", "n02"]
    x, y = next(data.train_batches(0, 9, device="cpu", seed=0))
    assert x.shape == (9, 3, 16, 16) and sorted(y.tolist()) == [0] * 5 + [1] * 3 + [2]
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        load_data(dataset, 100, cfg(tmp_path, tmp_path, num_classes=3))
    assert any("imbalance=100 is ignored" in r.getMessage() for r in caplog.records)


def test_file_list_label_out_of_range_names_file_and_line(tmp_path):
    write_list_data(tmp_path)
    path = tmp_path / "ImageNet_LT_test.txt"
    lines = path.read_text().splitlines()
    lines[3] = "test/n01/0.jpg 7"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LtBenchError, match=r"ImageNet_LT_test.txt, line 4: label 7 .*0…2"):
        load_data("imagenet_lt", None, cfg(tmp_path, tmp_path, num_classes=3))


def test_file_list_missing_says_what_was_looked_for(tmp_path):
    with pytest.raises(LtBenchError, match="ImageNet_LT_train.txt.*data.train_list"):
        load_data("imagenet_lt", None, cfg(tmp_path, tmp_path))


def write_inat(root):
    images, anns = [], []
    k = 0
    for split, per in (("train", {7: 4, 3: 2}), ("val", {7: 1, 3: 1})):
        images, anns = [], []
        for cat, n in per.items():
            for i in range(n):
                rel = f"{split}_val2018/Plantae/{cat}/{i}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb(k, 70)).save(root / rel)
                images.append({"id": k, "file_name": rel})
                anns.append({"id": k, "image_id": k, "category_id": cat})
                k += 1
        doc = {"images": images, "annotations": anns,
               "categories": [{"id": 3, "name": "Rosa"}, {"id": 7, "name": "Quercus"}]}
        (root / f"{split}2018.json").write_text(json.dumps(doc))


def test_inat_json(tmp_path):
    write_inat(tmp_path)
    data = load_data("inat2018", None, cfg(tmp_path, tmp_path, image_size=16))
    assert data.classes == ["Rosa", "Quercus"]  # sorted category ids 3, 7
    assert data.train_counts == [2, 4] and data.test_counts == [1, 1]
    xs = list(data.test_batches(8, device="cpu"))
    assert xs[0][0].shape == (2, 3, 16, 16)


def test_inat_unknown_category_is_an_error(tmp_path):
    write_inat(tmp_path)
    path = tmp_path / "val2018.json"
    doc = json.loads(path.read_text())
    doc["annotations"][1]["category_id"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(LtBenchError, match="val2018.json: annotation 1 .*99"):
        load_data("inat2018", None, cfg(tmp_path, tmp_path))


def test_unknown_dataset_and_bad_options(tmp_path):
    with pytest.raises(LtBenchError, match="unknown dataset 'cifar10lt'.*did you mean"):
        load_data("cifar10lt", 100, cfg(tmp_path, tmp_path))
    with pytest.raises(LtBenchError, match="data.sampler='balance'"):
        load_data("cifar10_lt", 100, cfg(tmp_path, tmp_path, sampler="balance"))
    with pytest.raises(LtBenchError, match="imbalance"):
        load_data("cifar10_lt", 0.5, cfg(tmp_path, tmp_path))
    with pytest.raises(LtBenchError, match="unknown data option 'rooot'"):
        load_data("cifar10_lt", 100, {"rooot": "x"})
    with pytest.raises(LtBenchError, match="data.pad_mode='reflection'.*did you mean 'reflect'"):
        load_data("cifar10_lt", 100, cfg(tmp_path, tmp_path, pad_mode="reflection"))
    with pytest.raises(LtBenchError, match="data.normalize='subset'.*dataset, cifar_fixed"):
        load_data("cifar10_lt", 100, cfg(tmp_path, tmp_path, normalize="subset"))


@pytest.mark.parametrize("key,value", [("pad_mode", "reflect"), ("normalize", "cifar_fixed")])
def test_cifar_crop_options_on_the_loader_pipeline_are_refused(tmp_path, key, value):
    write_folder(tmp_path / "f", train=4, test=2, size=80, ext="jpg")
    with pytest.raises(LtBenchError, match=f"data.{key}={value} applies to small images") as err:
        load_data("image_folder_lt", 2, cfg(tmp_path / "f", tmp_path, **{key: value}))
    assert "\n" not in str(err.value)
