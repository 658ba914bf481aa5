"""The input pipeline: batched augmentation, determinism, sharding and class-aware sampling."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_bench.data import LoaderData, TensorData
from lt_bench.data.pipeline import crop_flip, crop_flip_params, normalize
from lt_bench.data.sampling import epoch_order, generator
from lt_bench.errors import LtBenchError

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def tensor_data(counts=(30, 12, 5), test_per_class=7, sampler="none", augment="standard",
                pad_mode="zero"):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    test_labels = torch.arange(len(counts)).repeat_interleave(test_per_class)
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (len(test_labels), 3, 32, 32), generator=g, dtype=torch.uint8)
    return TensorData("toy", [f"c{i}" for i in range(len(counts))], images, labels, test,
                      test_labels, mean=MEAN, std=STD, sampler=sampler, augment=augment,
                      pad_mode=pad_mode)


def reference_crop_flip(image, oy, ox, flip, pad):
    """torchvision's RandomCrop(padding=pad) + RandomHorizontalFlip, by hand, one image."""
    h, w = image.shape[-2:]
    out = F.pad(image, (pad, pad, pad, pad))[:, oy:oy + h, ox:ox + w]
    return out.flip(-1) if flip else out


def test_flip_really_flips():
    data = tensor_data()
    images = data.train_images[:16]
    idx = torch.arange(16)
    zero = torch.zeros(16, dtype=torch.long)
    out = crop_flip(images, idx, zero, zero, torch.ones(16, dtype=torch.bool), 0)
    assert torch.equal(out, images.flip(-1))
    out = crop_flip(images, idx, zero, zero, torch.zeros(16, dtype=torch.bool), 0)
    assert torch.equal(out, images)


def test_crop_and_flip_match_a_manual_reference_under_a_fixed_generator():
    data = tensor_data()
    images = data.train_images
    idx = torch.arange(0, 40, 3)
    oy, ox, fl = crop_flip_params(len(idx), 32, 32, 4, generator(7))
    oy2, ox2, fl2 = crop_flip_params(len(idx), 32, 32, 4, generator(7))  # same generator seed
    assert torch.equal(oy, oy2) and torch.equal(fl, fl2)
    assert 0 < int(fl.sum()) < len(idx)  # some flipped, some not
    out = crop_flip(images, idx, oy, ox, fl, 4)
    assert out.shape == (len(idx), 3, 32, 32) and out.dtype == torch.uint8
    for k, i in enumerate(idx.tolist()):
        ref = reference_crop_flip(images[i], int(oy2[k]), int(ox2[k]), bool(fl2[k]), 4)
        assert torch.equal(out[k], ref)


def test_crop_zero_padding_is_visible_at_the_borders():
    white = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    idx = torch.arange(4)
    oy = torch.tensor([0, 8, 4, 0])
    ox = torch.tensor([0, 8, 4, 8])
    out = crop_flip(white, idx, oy, ox, torch.zeros(4, dtype=torch.bool), 4)
    assert out.shape == (4, 3, 32, 32)
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, :, :4] == 0).all()
    assert (out[0, :, 4:, 4:] == 255).all()
    assert (out[1, :, -4:, :] == 0).all() and (out[1, :, :, -4:] == 0).all()
    assert (out[2] == 255).all()  # centred crop: no padding
    assert (out[3, :, :4, :] == 0).all() and (out[3, :, :, -4:] == 0).all()


def numpy_reflect_crop_flip(image, oy, ox, flip, pad):
    """RandomCrop(padding=pad, padding_mode='reflect') + flip by hand, with numpy's 'reflect'."""
    h, w = image.shape[-2:]
    padded = np.pad(image.numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = torch.from_numpy(padded[:, oy:oy + h, ox:ox + w].copy())
    return out.flip(-1) if flip else out


def test_reflect_padding_matches_numpy():
    data = tensor_data()
    images, idx = data.train_images, torch.arange(0, 40, 3)
    oy, ox, fl = crop_flip_params(len(idx), 32, 32, 4, generator(11))
    out = crop_flip(images, idx, oy, ox, fl, 4, pad_mode="reflect")
    for k, i in enumerate(idx.tolist()):
        ref = numpy_reflect_crop_flip(images[i], int(oy[k]), int(ox[k]), bool(fl[k]), 4)
        assert torch.equal(out[k], ref)
    # by hand: a row 0 1 … 31 padded by 4 in reflect mode is 4 3 2 1 0 1 … 30 31 30 29 28 27
    ramp = torch.arange(32, dtype=torch.uint8).expand(1, 3, 32, 32)
    corner = crop_flip(ramp, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]),
                       torch.tensor([False]), 4, pad_mode="reflect")
    assert corner[0, 0, 0, :6].tolist() == [4, 3, 2, 1, 0, 1]
    right = crop_flip(ramp, torch.tensor([0]), torch.tensor([0]), torch.tensor([8]),
                      torch.tensor([False]), 4, pad_mode="reflect")
    assert right[0, 0, 0, -5:].tolist() == [31, 30, 29, 28, 27]


def test_reflect_padding_in_the_training_batches():
    """TensorData(pad_mode='reflect') crops from reflected borders, with the crop offsets and
    flips it draws from generator(seed, epoch, rank, 1)."""
    data = tensor_data(pad_mode="reflect")
    x, y = next(data.train_batches(2, 6, device="cpu", seed=4))
    idx = data.train_indices(2, seed=4)
    oy, ox, fl = crop_flip_params(len(idx), 32, 32, 4, generator(4, 2, 0, 1))
    for k in range(6):
        ref = numpy_reflect_crop_flip(data.train_images[idx[k]], int(oy[k]), int(ox[k]),
                                      bool(fl[k]), 4)
        torch.testing.assert_close(x[k], normalize(ref[None], MEAN, STD)[0])
    assert torch.equal(y, data.train_labels[idx[:6]])
    zero = tensor_data()
    assert not torch.equal(next(zero.train_batches(2, 6, device="cpu", seed=4))[0], x)
    with pytest.raises(LtBenchError, match="pad_mode='mirror'"):
        tensor_data(pad_mode="mirror")


def test_normalisation_matches_the_formula():
    data = tensor_data(augment="none")
    x, _ = next(data.test_batches(5, device="cpu"))
    raw = data.test_images[:5].float()
    expected = (raw / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalize(data.test_images[:5], MEAN, STD), expected,
                               rtol=1e-5, atol=1e-5)
    # augment=none: the training batches are the images themselves, normalised, in shuffle order
    xb, yb = next(data.train_batches(0, 4, device="cpu", seed=3))
    idx = data.train_indices(0, seed=3)[:4]
    torch.testing.assert_close(xb, normalize(data.train_images[idx], MEAN, STD))
    assert torch.equal(yb, data.train_labels[idx])


def batches(data, **kw):
    return [(x.clone(), y.clone()) for x, y in data.train_batches(device="cpu", **kw)]


def test_same_seed_same_batches_and_epoch_changes_the_order():
    data = tensor_data()
    a = batches(data, epoch=1, batch_size=8, seed=5)
    b = batches(data, epoch=1, batch_size=8, seed=5)
    assert len(a) == data.num_train_batches(8) == math.ceil(47 / 8)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(data.train_labels.tolist())
    assert not torch.equal(data.train_indices(1, seed=5), data.train_indices(2, seed=5))
    assert not torch.equal(data.train_indices(1, seed=5), data.train_indices(1, seed=6))
    c = batches(data, epoch=2, batch_size=8, seed=5)
    assert not torch.equal(a[0][0], c[0][0])
    assert len(batches(data, epoch=1, batch_size=8, seed=5, drop_last=True)) == 47 // 8


def test_train_shards_are_disjoint_and_test_shards_cover_the_test_set():
    data = tensor_data()
    shards = [data.train_indices(3, seed=0, rank=r, world_size=3) for r in range(3)]
    flat = torch.cat(shards).tolist()
    assert len(flat) == len(set(flat)) == 47 // 3 * 3
    assert all(len(s) == 47 // 3 for s in shards)
    assert data.num_train_batches(4, world_size=3) == math.ceil(15 / 4)
    assert len(batches(data, epoch=3, batch_size=4, seed=0, rank=1, world_size=3)) == 4
    for world in (2, 4):
        parts = [torch.cat([y for _, y in data.test_batches(4, device="cpu", rank=r,
                                                            world_size=world)])
                 for r in range(world)]
        assert torch.equal(torch.cat(parts), data.test_labels)  # exactly, no padding
        idx = [data.test_indices(r, world) for r in range(world)]
        assert sum(len(i) for i in idx) == 21 and len(set(torch.cat(idx).tolist())) == 21


@pytest.mark.parametrize("sampler,expected", [
    ("none", [600 / 700, 90 / 700, 10 / 700]),
    ("sqrt", [v / sum(math.sqrt(n) for n in (600, 90, 10))
              for v in (math.sqrt(600), math.sqrt(90), math.sqrt(10))]),
    ("balanced", [1 / 3] * 3),
])
def test_class_aware_sampler_frequencies(sampler, expected):
    labels = torch.arange(3).repeat_interleave(torch.tensor([600, 90, 10]))
    draws = torch.cat([labels[epoch_order(labels, 3, sampler, seed=0, epoch=e)]
                       for e in range(30)])
    freq = torch.bincount(draws, minlength=3).double() / len(draws)
    torch.testing.assert_close(freq, torch.tensor(expected, dtype=torch.double), atol=0.01,
                               rtol=0)
    assert torch.equal(epoch_order(labels, 3, sampler, 0, 4), epoch_order(labels, 3, sampler, 0, 4))


def test_balanced_sampler_in_the_tensor_pipeline():
    data = tensor_data(counts=(40, 8, 2), sampler="balanced")
    ys = torch.cat([y for e in range(12) for _, y in data.train_batches(e, 50, device="cpu",
                                                                        seed=0)])
    freq = torch.bincount(ys, minlength=3).double() / len(ys)
    assert (freq - 1 / 3).abs().max() < 0.06


def test_randaugment_is_deterministic():
    data = tensor_data(counts=(4, 3, 2), augment="randaugment")
    a = batches(data, epoch=0, batch_size=5, seed=1)
    b = batches(data, epoch=0, batch_size=5, seed=1)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))


def write_images(folder, n=12, size=40):
    from PIL import Image

    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(((torch.arange(size * size * 3).reshape(size, size, 3) * (i + 1)) % 256)
                        .to(torch.uint8).numpy()).save(p)
        paths.append(str(p))
    return paths


def test_loader_path_is_deterministic_whatever_the_workers(tmp_path):
    paths = write_images(tmp_path)
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 2)
    kw = {"image_size": 16, "augment": "standard"}
    d0 = LoaderData("toy", ["a", "b", "c"], paths, labels, paths[:5], labels[:5], workers=0, **kw)
    d1 = LoaderData("toy", ["a", "b", "c"], paths, labels, paths[:5], labels[:5], workers=1, **kw)
    a = batches(d0, epoch=0, batch_size=5, seed=2)
    b = batches(d1, epoch=0, batch_size=5, seed=2)
    assert len(a) == d0.num_train_batches(5) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = batches(d0, epoch=1, batch_size=5, seed=2)
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(a, c))
    shards = [d0.train_indices(0, seed=2, rank=r, world_size=2) for r in range(2)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    tests = [torch.cat([y for _, y in d0.test_batches(2, device="cpu", rank=r, world_size=2)])
             for r in range(2)]
    assert torch.equal(torch.cat(tests), labels[:5])


def test_synthetic_data_honours_pad_mode_and_normalize():
    from lt_bench.config import load_config
    from lt_bench.data import load_data
    from lt_bench.data.pipeline import CIFAR_FIXED_MEAN

    cfg = load_config([], ["dataset=synthetic_lt", "data.pad_mode=reflect",
                           "data.normalize=cifar_fixed"])
    data = load_data("synthetic_lt", 10, cfg.data)
    assert data.pad_mode == "reflect" and list(data.mean) == list(CIFAR_FIXED_MEAN)
