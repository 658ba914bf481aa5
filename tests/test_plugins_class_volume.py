"""The class-volume methods dv, pv, bv against the paper's formulas computed here in float64."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lt_bench_plugins.class_volume.volume import SIGMA_FLOOR

from lt_bench import LtBenchError, build_method

COUNTS = [120, 80, 60, 45, 35, 30]
C = len(COUNTS)


def make_epoch(counts=COUNTS, seed=0, offset=0.0, scale=1.0):
    """One epoch of logits [N, C] (float64) and targets: each class n_i samples, its own spread."""
    rng = np.random.default_rng(seed)
    c = len(counts)
    t = rng.permutation(np.repeat(np.arange(c), counts))
    mix = rng.normal(size=(c, c)) / np.sqrt(c)
    spread = rng.uniform(0.3, 3.0, size=(c, c))  # class k, axis j
    x = (rng.normal(size=(len(t), c)) @ mix) * spread[t] + 2.0 * np.eye(c)[t]
    return x * scale + offset, t


def axis_sigmas(xc, k, kind, components=10):
    """σ of class k's samples xc along the axes of DV, BV or PV (the paper's definitions)."""
    c = xc.shape[1]
    if kind == "dv":
        return np.std(xc, axis=0, ddof=1)
    if kind == "bv":
        return np.array([np.std(xc[:, k] - xc[:, j], ddof=1) for j in range(c) if j != k])
    eig = np.sort(np.linalg.eigvalsh(np.cov(xc, rowvar=False, ddof=1)))[::-1]
    d = c if components is None else min(components, c)
    return np.sqrt(np.clip(eig[:d], 0.0, None))


def reference_weights(x, t, counts, kind, components=10, substitute_below=30,
                      normalization="expected"):
    """α_i ∝ r_i / n_i, r_i = (∏ σ)^(1/D), S-substitution, Σ n α = Σ n (non-degenerate data)."""
    x = np.asarray(x, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    c = len(counts)
    log_r = np.full(c, np.nan)
    for k in range(c):
        xc = x[t == k]
        if len(xc) >= 2:
            log_r[k] = np.mean(np.log(axis_sigmas(xc, k, kind, components)))
    valid = ~np.isnan(log_r)
    donors = valid & (counts >= substitute_below)
    log_r[~donors | (counts < substitute_below)] = np.mean(log_r[donors])
    raw = np.exp(log_r) / counts
    if normalization == "none":
        return raw
    return raw * counts.sum() / (counts * raw).sum()


def run_epoch(method, x, t, batch=64, dtype=torch.float32):
    method.train()
    logits = torch.as_tensor(x).to(dtype)
    targets = torch.as_tensor(t)
    for i in range(0, len(t), batch):
        method(logits[i:i + batch], targets[i:i + batch])
    method.end_epoch()
    return method.class_weights.double().numpy()


def f32(x):
    """The values the method sees when the logits are float32."""
    return torch.as_tensor(x).float().double().numpy()


@pytest.mark.parametrize("kind", ["dv", "pv", "bv"])
def test_weights_after_one_epoch_match_the_paper(kind):
    x, t = make_epoch()
    method = build_method(kind, COUNTS)
    weights = run_epoch(method, x, t)
    expected = reference_weights(f32(x), t, COUNTS, kind)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert np.isclose((weights * np.array(COUNTS)).sum(), sum(COUNTS))
    assert weights.std() > 0.05  # the data really gives different weights


def test_pv_components():
    x, t = make_epoch(seed=4)
    for components in (2, None, 50):
        weights = run_epoch(build_method("pv", COUNTS, components=components), x, t)
        np.testing.assert_allclose(weights, reference_weights(f32(x), t, COUNTS, "pv",
                                                              components), rtol=1e-5)
    with pytest.raises(LtBenchError, match="components"):
        build_method("pv", COUNTS, components=0)


@pytest.mark.parametrize("kind", ["dv", "bv"])
def test_substitution_below_30(kind):
    counts = [120, 80, 60, 45, 20, 8]  # classes 4 and 5 have fewer than 30 training samples
    x, t = make_epoch(counts, seed=5)
    weights = run_epoch(build_method(kind, counts), x, t)
    np.testing.assert_allclose(weights, reference_weights(f32(x), t, counts, kind), rtol=1e-5)
    # explicitly: r_4 = r_5 = exp(mean log r of classes 0..3), so α_4 · 20 = α_5 · 8
    assert np.isclose(weights[4] * 20, weights[5] * 8, rtol=1e-6)  # float32 weights
    log_r = [np.mean(np.log(axis_sigmas(f32(x)[t == k], k, kind))) for k in range(4)]
    ratio = np.exp(np.mean(log_r)) / 20 / (np.exp(log_r[0]) / 120)
    assert np.isclose(weights[4] / weights[0], ratio, rtol=1e-5)

    disabled = run_epoch(build_method(kind, counts, substitute_below=0), x, t)
    np.testing.assert_allclose(
        disabled, reference_weights(f32(x), t, counts, kind, substitute_below=0), rtol=1e-5)
    assert not np.isclose(disabled[4] * 20, disabled[5] * 8, rtol=1e-3)


@pytest.mark.parametrize("kind", ["dv", "bv"])
def test_constant_offset_leaves_weights_unchanged(kind):
    x, t = make_epoch(seed=6)
    base = run_epoch(build_method(kind, COUNTS), x, t, dtype=torch.float64)
    shifted = run_epoch(build_method(kind, COUNTS), x + 37.5, t, dtype=torch.float64)
    np.testing.assert_allclose(shifted, base, rtol=1e-9)


def test_scaling_leaves_dv_weights_unchanged():
    x, t = make_epoch(seed=7)
    base = run_epoch(build_method("dv", COUNTS), x, t, dtype=torch.float64)
    for s in (0.01, 25.0):
        scaled = run_epoch(build_method("dv", COUNTS), x * s, t, dtype=torch.float64)
        np.testing.assert_allclose(scaled, base, rtol=1e-9)


@pytest.mark.parametrize("kind", ["dv", "pv", "bv"])
def test_large_offset_small_spread(kind):
    x, t = make_epoch(seed=8, offset=1e3, scale=1e-2)
    weights = run_epoch(build_method(kind, COUNTS), x, t, dtype=torch.float64)
    np.testing.assert_allclose(weights, reference_weights(x, t, COUNTS, kind), rtol=1e-6)


@pytest.mark.parametrize("kind", ["dv", "pv", "bv"])
def test_bf16_logits(kind):
    x, t = make_epoch(seed=9)
    weights = run_epoch(build_method(kind, COUNTS), x, t, dtype=torch.bfloat16)
    seen = torch.as_tensor(x).bfloat16().double().numpy()
    np.testing.assert_allclose(weights, reference_weights(seen, t, COUNTS, kind), rtol=1e-5)


@pytest.mark.parametrize("kind", ["dv", "pv", "bv"])
def test_degenerate_classes_give_finite_weights(kind):
    x, t = make_epoch(seed=10)
    keep = (t != 4) & ~((t == 5) & (np.cumsum(t == 5) > 1))  # class 4: 0 samples, class 5: 1
    x, t = x[keep].copy(), t[keep]
    x[t == 2, 1] = 0.75  # class 2 does not vary along logit 1 (nor along e_2 − e_1 for bv)
    if kind == "bv":
        x[t == 2, 2] = x[t == 2, 1] + 0.5
    weights = run_epoch(build_method(kind, COUNTS), x, t)
    assert np.isfinite(weights).all() and (weights > 0).all()
    # classes without a variance take the substitute exp(mean log r of classes 0..3)
    assert np.isclose(weights[4] * COUNTS[4], weights[5] * COUNTS[5], rtol=1e-6)
    if kind == "dv":  # the zero σ is floored at SIGMA_FLOOR × the largest σ of any class
        xs = f32(x)
        sigmas = [np.std(xs[t == k], axis=0, ddof=1) for k in range(4)]
        floor = SIGMA_FLOOR * max(s.max() for s in sigmas)
        log_r = [np.mean(np.log(np.maximum(s, floor))) for s in sigmas]
        r = np.exp(log_r + [np.mean(log_r)] * 2) / np.array(COUNTS)
        np.testing.assert_allclose(weights, r * sum(COUNTS) / (r * COUNTS).sum(), rtol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_raise_at_end_epoch(bad):
    method = build_method("dv", COUNTS)
    x, t = make_epoch(seed=11)
    logits = torch.as_tensor(x).float()
    logits[3, 2] = bad
    method.observe(logits, torch.as_tensor(t))  # what forward does on an accelerator
    with pytest.raises(LtBenchError, match="non-finite"):
        method.end_epoch()
    with pytest.raises(LtBenchError, match="non-finite"):
        method(logits, torch.as_tensor(t))  # on the CPU forward refuses them directly


def test_uniform_until_first_statistics():
    method = build_method("bv", COUNTS)
    assert (method.class_weights == 1).all()
    method.end_epoch()  # an epoch without any training batch
    assert (method.class_weights == 1).all()
    method.eval()
    x, t = make_epoch(seed=12)
    method(torch.as_tensor(x).float(), torch.as_tensor(t))  # evaluation: not observed
    method.end_epoch()
    assert (method.class_weights == 1).all()


def test_start_epoch():
    x0, t0 = make_epoch(seed=13)
    x1, t1 = make_epoch(seed=14)
    method = build_method("dv", COUNTS, start_epoch=2)
    assert not method.wants_statistics()
    weights = run_epoch(method, x0, t0)  # epoch 0: not gathered
    assert (weights == 1).all() and (method.stats.count == 0).all()
    assert method.wants_statistics()
    method.train()
    method(torch.as_tensor(x1[:64]).float(), torch.as_tensor(t1[:64]))
    assert method.stats.count.sum() == 64  # epoch 1 is gathered
    assert (method.class_weights == 1).all()  # still uniform during it
    weights = run_epoch(method, x1[64:], t1[64:])  # rest of epoch 1 -> first weights
    np.testing.assert_allclose(weights, reference_weights(f32(x1), t1, COUNTS, "dv"), rtol=1e-5)
    assert int(method.epoch) == 2


def test_no_statistics_long_before_start_epoch(monkeypatch):
    method = build_method("pv", COUNTS, start_epoch=10)

    def boom(*args, **kwargs):
        raise AssertionError("statistics gathered although not needed")

    monkeypatch.setattr(method.stats, "update", boom)
    monkeypatch.setattr(method.stats, "all_reduce", boom)
    x, t = make_epoch(seed=15)
    for _ in range(3):
        assert not method.wants_statistics()
        run_epoch(method, x, t)
    assert (method.class_weights == 1).all()


def test_loss_is_mean_of_weighted_per_sample_losses():
    x, t = make_epoch(seed=16)
    method = build_method("dv", COUNTS)
    run_epoch(method, x, t)
    alpha = method.class_weights.double()
    assert abs(alpha.mean().item() - 1.0) > 0.05  # non-unit mean: the two formulas differ
    logits = torch.as_tensor(x[:50]).double()
    targets = torch.as_tensor(t[:50])
    loss = method(logits, targets, observe=False)
    ce = -F.log_softmax(logits, dim=1)[torch.arange(50), targets]
    hand = (alpha[targets] * ce).mean()
    torch.testing.assert_close(loss.double(), hand, rtol=1e-5, atol=0)
    torch_weighted = F.cross_entropy(logits, targets, weight=alpha)
    assert not torch.isclose(loss.double(), torch_weighted, rtol=1e-3)


def test_unnormalised_weights_and_doubling():
    x, t = make_epoch(seed=17)
    method = build_method("dv", COUNTS, normalization="none")
    weights = run_epoch(method, x, t)
    np.testing.assert_allclose(weights, reference_weights(f32(x), t, COUNTS, "dv",
                                                          normalization="none"), rtol=1e-5)
    logits, targets = torch.as_tensor(x[:40]).float(), torch.as_tensor(t[:40])
    loss = method(logits, targets, observe=False)
    # logits twice as spread: every σ doubles, so do r and the un-normalised weights
    doubled = build_method("dv", COUNTS, normalization="none")
    np.testing.assert_allclose(run_epoch(doubled, 2 * x, t), 2 * weights, rtol=1e-5)
    doubled.class_weights.copy_(2 * method.class_weights)
    torch.testing.assert_close(doubled(logits, targets, observe=False), 2 * loss)


@pytest.mark.parametrize("kind", ["dv", "pv", "bv"])
def test_state_dict_round_trip(kind):
    x0, t0 = make_epoch(seed=18)
    x1, t1 = make_epoch(seed=19)
    a = build_method(kind, COUNTS, start_epoch=1)
    run_epoch(a, x0, t0)
    a(torch.as_tensor(x1[:150]).float(), torch.as_tensor(t1[:150]))  # half an epoch
    b = build_method(kind, COUNTS, start_epoch=1)
    b.load_state_dict(a.state_dict())
    assert int(b.epoch) == 1
    assert torch.equal(b.class_weights, a.class_weights) and not (b.class_weights == 1).all()
    for name, buf in a.stats.state_dict().items():
        assert torch.equal(getattr(b.stats, name), buf), name
    wa = run_epoch(a, x1[150:], t1[150:])
    wb = run_epoch(b, x1[150:], t1[150:])
    np.testing.assert_array_equal(wa, wb)
    np.testing.assert_allclose(wb, reference_weights(f32(x1), t1, COUNTS, kind), rtol=1e-5)


def test_options_and_errors():
    with pytest.raises(LtBenchError, match="bogus"):
        build_method("dv", COUNTS, bogus=1)
    with pytest.raises(LtBenchError, match="substitute_below"):
        build_method("bv", COUNTS, substitute_below=-1)
    with pytest.raises(LtBenchError, match=r"(?s)GiB.*dv or bv"):
        build_method("pv", [10] * 700)
    method = build_method("pv", COUNTS, components=3, substitute_below=5, start_epoch=2)
    assert method.normalization == "expected" and method.components == 3
    assert method.substitute_below == 5


# -- torch.distributed ---------------------------------------------------------------------------
def _distributed_worker(rank, world_size, init_file, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        x, t = make_epoch(seed=20)
        half = slice(0, 170) if rank == 0 else slice(170, None)  # uneven, different halves
        result = {}
        for kind in ("dv", "pv", "bv"):
            method = build_method(kind, COUNTS)
            result[kind] = torch.as_tensor(run_epoch(method, x[half], t[half]))
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        # Without the barrier one rank may tear gloo down while the other still talks to it.
        dist.barrier()
        dist.destroy_process_group()
    # The results are saved: leave without the interpreter's teardown, where a gloo thread
    # still joinable at exit made std::terminate abort a rank now and then (SIGABRT in CI and
    # on a loaded 2-core machine, never reproduced alone).
    os._exit(0)


def test_all_reduce_two_processes(tmp_path):
    import torch.multiprocessing as mp

    for attempt in range(2):
        # gloo now and then aborts a rank while the ranks connect (std::terminate in its TCP
        # transport, of the kind in pytorch/pytorch#188266; seen in CI). One more try is safe,
        # and hides no defect of ours: it is taken only for that abort (SIGABRT) and only when
        # no rank got as far as saving a result, i.e. before any of lt_bench's code computed
        # anything; the second try starts from nothing (a fresh rendezvous file), and what is
        # asserted below comes from it alone.
        try:
            mp.spawn(_distributed_worker, args=(2, str(tmp_path / f"init{attempt}"),
                                                str(tmp_path)), nprocs=2, join=True)
            break
        except mp.ProcessExitedException as exc:
            if attempt or exc.signal_name != "SIGABRT" or any(tmp_path.glob("rank*.pt")):
                raise
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    x, t = make_epoch(seed=20)
    for kind in ("dv", "pv", "bv"):
        assert torch.equal(ranks[0][kind], ranks[1][kind]), kind  # identical on every rank
        single = run_epoch(build_method(kind, COUNTS), x, t)
        np.testing.assert_allclose(ranks[0][kind].numpy(), single, rtol=1e-6)


# -- a class that does not vary ---------------------------------------------------------------
FLAT_TARGETS = torch.tensor([0] * 5 + [1] * 5)
SPREAD = torch.tensor([[0.0, 0.0], [2, 2], [0, 2], [2, 0], [1, 1]])  # σ = 1 on both axes (ddof 1)


def test_a_class_with_identical_logits_is_a_logged_data_condition(caplog):
    """Class 0's logits never vary: its σ is floored at 1e-6 × the largest σ (class 1's, 1),
    so r = (1e-6, 1), α ∝ r/n with n = (5, 5), normalised so that Σ n α = Σ n = 10."""
    x = torch.cat([torch.ones(5, 2), SPREAD])
    method = build_method("dv", [5, 5], substitute_below=0)
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        method(x, FLAT_TARGETS)
        method.end_epoch()
    r = torch.tensor([1e-6, 1.0], dtype=torch.float64)
    expected = r / 5 * (10 / (5 * (r / 5)).sum())
    torch.testing.assert_close(method.class_weights.double(), expected, rtol=1e-6, atol=0)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "indices [0]" in said[0] and "not an error" in said[0]
    assert "bug" not in said[0]


def test_when_no_class_varies_the_weights_stay_and_it_is_said(caplog):
    method = build_method("bv", [5, 5], substitute_below=0)
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        method(torch.ones(10, 2), FLAT_TARGETS)
        method.end_epoch()
    assert method.class_weights.tolist() == [1.0, 1.0]
    assert any("weights stay" in r.getMessage() for r in caplog.records)
