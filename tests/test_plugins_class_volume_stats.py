"""lt_bench_plugins.class_volume.volume: the streaming per-class statistics against a float64 two-pass reference."""

from __future__ import annotations

import lt_bench_plugins.class_volume.volume as vol
import numpy as np
import pytest
import torch

from lt_bench import LtBenchError

C = 5


def make_data(n=300, c=C, seed=0, offset=0.0, std=1.0, missing=(4,)):
    """Logits [n, c] float64 with class-dependent spread; classes in ``missing`` never occur."""
    rng = np.random.default_rng(seed)
    classes = [k for k in range(c) if k not in missing]
    t = rng.choice(classes, size=n)
    mix = rng.normal(size=(c, c))  # correlated axes, so the covariance is not diagonal
    x = rng.normal(size=(n, c)) @ mix * (1.0 + t[:, None]) * std + offset + t[:, None] * 0.5
    return x, t


def reference_moments(x, t, c=C):
    """count, mean, m2 (diagonal), cross with the own logit, full M2: two-pass, float64, loops."""
    x = np.asarray(x, dtype=np.float64)
    count = np.zeros(c)
    mean = np.zeros((c, c))
    m2 = np.zeros((c, c))
    cross = np.zeros((c, c))
    full = np.zeros((c, c, c))
    for k in range(c):
        xc = x[t == k]
        count[k] = len(xc)
        if len(xc) == 0:
            continue
        mean[k] = xc.mean(axis=0)
        d = xc - mean[k]
        m2[k] = (d**2).sum(axis=0)
        cross[k] = (d * d[:, [k]]).sum(axis=0)
        full[k] = d.T @ d
    return count, mean, m2, cross, full


def feed(moments, x, t, batch=37, dtype=torch.float64):
    for i in range(0, len(t), batch):
        moments.update(torch.as_tensor(x[i:i + batch]).to(dtype), torch.as_tensor(t[i:i + batch]))


def assert_moments(moments, ref, rtol=1e-10, atol=1e-9):
    count, mean, m2, cross, full = ref
    np.testing.assert_array_equal(moments.count.numpy(), count)
    np.testing.assert_allclose(moments.mean.numpy(), mean, rtol=rtol, atol=atol)
    np.testing.assert_allclose(moments.m2.numpy(), m2, rtol=rtol, atol=atol)
    if moments.has_cross:
        np.testing.assert_allclose(moments.cross.numpy(), cross, rtol=rtol, atol=atol)
    if moments.has_full:
        np.testing.assert_allclose(moments.full.numpy(), full, rtol=rtol, atol=atol)


def test_streaming_matches_two_pass_reference():
    x, t = make_data()
    moments = vol.ClassMoments(C, cross=True, full=True)
    feed(moments, x, t)
    assert_moments(moments, reference_moments(x, t))
    assert moments.count[4] == 0 and (moments.mean[4] == 0).all()  # absent class untouched


def test_update_touches_only_present_rows():
    moments = vol.ClassMoments(C, cross=True)
    moments.update(torch.randn(8, C), torch.tensor([1, 1, 2, 2, 2, 1, 1, 2]))
    for name in ("mean", "m2", "cross"):
        rows = getattr(moments, name)
        assert (rows[[0, 3, 4]] == 0).all()
        assert (rows[[1, 2]] != 0).any()


def test_variances_and_eigenvalues_match_numpy():
    x, t = make_data(missing=())
    moments = vol.ClassMoments(C, cross=True, full=True)
    feed(moments, x, t)
    for k in range(C):
        xc = x[t == k]
        np.testing.assert_allclose(vol.dv_variances(moments)[k].numpy(), np.var(xc, axis=0, ddof=1),
                                   rtol=1e-10)
        bv = [np.var(xc[:, k] - xc[:, j], ddof=1) for j in range(C) if j != k]
        np.testing.assert_allclose(vol.bv_variances(moments)[k].numpy(), bv, rtol=1e-9)
        eig = np.sort(np.linalg.eigvalsh(np.cov(xc, rowvar=False, ddof=1)))[::-1]
        np.testing.assert_allclose(vol.pv_variances(moments, 3)[k].numpy(), eig[:3], rtol=1e-9)
        np.testing.assert_allclose(vol.pv_variances(moments, None)[k].numpy(), eig, rtol=1e-9,
                                   atol=1e-12)


def test_divisor_n_from_the_same_moments():
    """ddof=0 (np.std of the authors' code) is the same sums divided by n instead of n − 1."""
    x, t = make_data(missing=(), seed=3)
    moments = vol.ClassMoments(C, cross=True)
    feed(moments, x, t)
    for k in range(C):
        xc = x[t == k]
        np.testing.assert_allclose(vol.dv_variances(moments, ddof=0)[k].numpy(),
                                   np.var(xc, axis=0, ddof=0), rtol=1e-10)
        bv = [np.var(xc[:, k] - xc[:, j], ddof=0) for j in range(C) if j != k]
        np.testing.assert_allclose(vol.bv_variances(moments, ddof=0)[k].numpy(), bv, rtol=1e-9)
    with pytest.raises(LtBenchError, match="ddof"):
        vol.dv_variances(moments, ddof=2)


def test_merge_of_two_halves_equals_one_pass():
    x, t = make_data(n=401, seed=3, missing=())
    one = vol.ClassMoments(C, cross=True, full=True)
    feed(one, x, t)
    a = vol.ClassMoments(C, cross=True, full=True)
    b = vol.ClassMoments(C, cross=True, full=True)
    # split unevenly, and leave class 0 out of the second half entirely
    first = np.arange(len(t)) < 150
    second = ~first & (t != 0)
    rest = ~first & (t == 0)
    feed(a, x[first], t[first])
    feed(a, x[rest], t[rest])
    feed(b, x[second], t[second])
    a.merge(b)
    for name in ("count", "mean", "m2", "cross", "full"):
        torch.testing.assert_close(getattr(a, name), getattr(one, name), rtol=1e-11, atol=1e-10)
    empty = vol.ClassMoments(C, cross=True, full=True)
    empty.merge(one)
    torch.testing.assert_close(empty.full, one.full, rtol=0, atol=0)
    with pytest.raises(LtBenchError):
        vol.ClassMoments(C).merge(one)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_large_common_offset_is_exact(dtype):
    x, t = make_data(n=2000, seed=1, offset=1e3, std=1e-2, missing=())
    x = torch.as_tensor(x).to(dtype).to(torch.float64).numpy()  # the values the model gives
    moments = vol.ClassMoments(C, cross=True, full=True)
    feed(moments, x, t, batch=64, dtype=dtype)
    for k in range(C):
        xc = x[t == k]
        np.testing.assert_allclose(vol.dv_variances(moments)[k].numpy(),
                                   np.var(xc, axis=0, ddof=1), rtol=1e-6)
        d = xc - xc.mean(axis=0)
        bv = [np.var(d[:, k] - d[:, j], ddof=1) for j in range(C) if j != k]
        np.testing.assert_allclose(vol.bv_variances(moments)[k].numpy(), bv, rtol=1e-6)
        eig = np.sort(np.linalg.eigvalsh(np.cov(xc, rowvar=False, ddof=1)))[::-1]
        np.testing.assert_allclose(vol.pv_variances(moments, None)[k].numpy(), eig, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype):
    x, t = make_data(seed=2)
    xh = torch.as_tensor(x).to(dtype)
    moments = vol.ClassMoments(C, cross=True, full=True)
    for i in range(0, len(t), 50):
        moments.update(xh[i:i + 50], torch.as_tensor(t[i:i + 50]))
    assert_moments(moments, reference_moments(xh.double().numpy(), t))


def test_reset_and_finite_flag():
    moments = vol.ClassMoments(C, cross=True)
    moments.update(torch.randn(10, C), torch.arange(10) % C)
    assert moments.is_finite()
    bad = torch.randn(4, C)
    bad[1, 2] = float("inf")
    moments.update(bad, torch.tensor([0, 1, 2, 3]))
    assert not moments.is_finite()
    moments.reset()
    assert moments.is_finite() and (moments.count == 0).all() and (moments.cross == 0).all()


def test_bad_batches_are_refused():
    moments = vol.ClassMoments(C)
    with pytest.raises(LtBenchError, match="shape"):
        moments.update(torch.randn(3, C + 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(LtBenchError, match="targets"):
        moments.update(torch.randn(3, C), torch.tensor([0, 1, C]))
    moments.update(torch.randn(0, C), torch.zeros(0, dtype=torch.long))  # empty batch: no-op
    assert (moments.count == 0).all()


def test_state_dict_carries_the_statistics():
    x, t = make_data()
    a = vol.ClassMoments(C, cross=True, full=True)
    feed(a, x, t)
    b = vol.ClassMoments(C, cross=True, full=True)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"count", "mean", "m2", "cross", "full"}
    for name in ("count", "mean", "m2", "cross", "full"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_all_reduce_without_distributed_is_a_noop():
    x, t = make_data()
    a = vol.ClassMoments(C, cross=True)
    feed(a, x, t)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    a.all_reduce()
    for k, v in a.state_dict().items():
        assert torch.equal(v, before[k])


def test_pv_memory_limit():
    vol.ClassMoments(645, full=False)  # dv/bv state for that many classes is small
    with pytest.raises(LtBenchError, match=r"(?s)GiB.*dv or bv"):
        vol.ClassMoments(700, full=True)


def test_log_radii_floor_keeps_zero_variance_finite():
    variances = torch.tensor([[4.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
                             dtype=torch.float64)
    valid = torch.tensor([True, True, False])
    log_r = vol.log_radii(variances, valid)
    floor = vol.SIGMA_FLOOR * 2.0  # the largest σ of the valid classes is 2
    expected0 = (np.log(2.0) + np.log(1.0) + np.log(floor)) / 3
    np.testing.assert_allclose(log_r[0].item(), expected0, rtol=1e-12)
    assert log_r[1].item() == 0.0
    assert np.isnan(log_r[2].item())  # not valid: substituted later
    # every variance zero: no spread to compare (equal radii of exp(-708) would underflow into
    # infinite weights), so no class is valid and the method keeps its weights
    flat = vol.log_radii(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([True, True]))
    assert torch.isnan(flat).all()
    # relative floor: scaling every σ by s shifts every log r by log s
    scaled = vol.log_radii(variances * 9.0, valid)
    np.testing.assert_allclose((scaled - log_r)[:2].numpy(), np.log(3.0), rtol=1e-12)


def test_substitution_rule():
    log_r = torch.tensor([0.0, 1.0, 2.0, float("nan"), 5.0], dtype=torch.float64)
    valid = torch.tensor([True, True, True, False, True])
    counts = torch.tensor([100.0, 50.0, 30.0, 40.0, 10.0], dtype=torch.float64)
    raw = vol.class_volume_raw_weights(log_r, valid, counts, substitute_below=30)
    sub = np.exp(np.mean([0.0, 1.0, 2.0]))  # donors: >= 30 training samples and valid
    np.testing.assert_allclose(raw.numpy(), [1 / 100, np.e / 50, np.e**2 / 30, sub / 40,
                                             sub / 10], rtol=1e-12)
    off = vol.class_volume_raw_weights(log_r, valid, counts, substitute_below=0)
    np.testing.assert_allclose(off.numpy()[[0, 1, 2, 4]], [1 / 100, np.e / 50, np.e**2 / 30,
                                                           np.e**5 / 10], rtol=1e-12)
    np.testing.assert_allclose(off[3].item(), np.exp(np.mean([0.0, 1.0, 2.0, 5.0])) / 40)
    none_valid = vol.class_volume_raw_weights(log_r, torch.zeros(5, dtype=torch.bool), counts)
    assert none_valid is None


def test_all_rows_and_present_rows_updates_agree(monkeypatch):
    """Small C merges every class's row each batch (no host sync); large C merges only the
    classes present. Both must give the same statistics, with classes missing from batches."""
    import lt_bench_plugins.class_volume.volume as volume

    g = torch.Generator().manual_seed(11)
    batches = [(torch.randn(16, C, generator=g) * 4 + 7,
                torch.randint(0, C - 1, (16,), generator=g)) for _ in range(5)]  # class C-1 never
    results = []
    for limit in (2**20, 0):
        monkeypatch.setattr(volume, "_DENSE_MAX_ELEMENTS", limit)
        m = vol.ClassMoments(C, cross=True, full=True)
        for x, y in batches:
            m.update(x, y)
        results.append(m)
    dense, sparse = results
    for name in ("count", "mean", "m2", "cross", "full"):
        torch.testing.assert_close(getattr(dense, name), getattr(sparse, name),
                                   rtol=1e-12, atol=1e-9)
    assert dense.count[C - 1] == 0 and torch.all(dense.mean[C - 1] == 0)


def test_radii_by_blocks_equal_the_whole_matrix():
    """The criterion computes the radii a few classes at a time (iNaturalist-sized C would need
    several C x C temporaries otherwise): the same numbers as from the whole matrices."""
    x, t = make_data(n=400, c=7, missing=(5,))
    x[t == 2, 3] = 1.5  # a degenerate axis: the floor applies
    moments = vol.ClassMoments(7, cross=True, full=True)
    feed(moments, x, t)
    valid = moments.valid()
    pairs = ((vol.dv_variances(moments), lambda r: vol.dv_variances(moments, r)),
             (vol.bv_variances(moments), lambda r: vol.bv_variances(moments, r)),
             (vol.pv_variances(moments, 3), lambda r: vol.pv_variances(moments, 3, r)))
    for whole, of_rows in pairs:
        torch.testing.assert_close(of_rows(slice(2, 5)), whole[2:5], rtol=0, atol=0)
        expected = vol.log_radii(whole, valid)
        for chunk in (1, 3, 7):
            got = vol.class_log_radii(of_rows, 7, valid, chunk=chunk)
            torch.testing.assert_close(got, expected, rtol=1e-15, atol=0, equal_nan=True)
    assert torch.isnan(expected[5]) and torch.isfinite(expected[valid]).all()


def test_update_leaves_the_callers_logits_alone():
    moments = vol.ClassMoments(C, cross=True)
    x = torch.randn(8, C, dtype=torch.float64)
    before = x.clone()
    moments.update(x, torch.tensor([0, 1, 1, 2, 2, 2, 3, 3]))
    assert torch.equal(x, before)
