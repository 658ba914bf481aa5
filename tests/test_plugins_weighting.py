"""The count-based methods and losses against float64 formulas written here from their papers."""

import math

import numpy as np
import pytest
import torch

import lt_bench
from lt_bench import LtBenchError, build_method

COUNTS = [500, 120, 40, 9, 3]


def batch(seed=0, n=64, c=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


def ce_per_sample(logits, targets):
    z = logits.double().numpy()
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets.numpy()]


def weighted_mean(alpha, per_sample, targets):
    return float(np.mean(np.asarray(alpha)[targets.numpy()] * per_sample))


def test_ce_is_the_plain_mean_cross_entropy():
    logits, targets = batch()
    loss = build_method("ce", COUNTS)(logits, targets)
    assert loss.item() == pytest.approx(ce_per_sample(logits, targets).mean(), rel=1e-5)


@pytest.mark.parametrize("name,raw", [
    ("inverse_frequency", lambda n: 1.0 / n),
    ("sqrt_inverse_frequency", lambda n: 1.0 / np.sqrt(n)),
    ("effective_number", lambda n: (1 - 0.9999) / (1 - 0.9999 ** n)),
])
def test_count_weightings_match_formula_with_mean_normalisation(name, raw):
    n = np.array(COUNTS, dtype=np.float64)
    expected = raw(n) * len(n) / raw(n).sum()
    criterion = build_method(name, COUNTS)
    np.testing.assert_allclose(criterion.class_weights.double().numpy(), expected, rtol=1e-6)
    logits, targets = batch(1)
    assert criterion(logits, targets).item() == pytest.approx(
        weighted_mean(expected, ce_per_sample(logits, targets), targets), rel=1e-5)


def test_expected_normalisation_makes_the_expected_sample_weight_one():
    n = np.array(COUNTS, dtype=np.float64)
    w = build_method("inverse_frequency", COUNTS, normalization="expected").class_weights
    assert float((w.double().numpy() * n).sum()) == pytest.approx(n.sum(), rel=1e-6)
    w_none = build_method("effective_number", COUNTS, beta=0.99, normalization="none")
    np.testing.assert_allclose(w_none.class_weights.double().numpy(),
                               (1 - 0.99) / (1 - 0.99 ** n), rtol=1e-6)


def test_loss_is_not_torch_weighted_cross_entropy():
    """F.cross_entropy(weight=α) divides by Σα_y and so cancels a global scale of α."""
    logits, targets = batch(2)
    criterion = build_method("inverse_frequency", COUNTS, normalization="expected")
    alpha = criterion.class_weights
    ours = criterion(logits, targets).item()
    torch_weighted = torch.nn.functional.cross_entropy(logits, targets, weight=alpha).item()
    hand = weighted_mean(alpha.double().numpy(), ce_per_sample(logits, targets), targets)
    assert ours == pytest.approx(hand, rel=1e-5)
    assert abs(ours - torch_weighted) > 1e-3 * abs(hand)


def test_doubling_the_weights_doubles_the_loss():
    logits, targets = batch(3)
    one = build_method("inverse_frequency", COUNTS, normalization="none")
    two = build_method("inverse_frequency", [c for c in COUNTS], normalization="none")
    two.class_weights.mul_(2)
    assert two(logits, targets).item() == pytest.approx(2 * one(logits, targets).item(), rel=1e-6)


def test_focal_loss_formula_and_gamma_zero_is_ce():
    logits, targets = batch(4)
    p = np.exp(-ce_per_sample(logits, targets))
    for gamma in (0.0, 1.0, 2.0):
        expected = np.mean(-((1 - p) ** gamma) * np.log(p))
        got = build_method("focal", COUNTS, gamma=gamma)(logits, targets).item()
        assert got == pytest.approx(expected, rel=1e-5)


def test_weighting_composes_with_focal_loss():
    logits, targets = batch(5)
    criterion = build_method("effective_number", COUNTS, beta=0.999, loss="focal", gamma=1.0)
    n = np.array(COUNTS, dtype=np.float64)
    raw = (1 - 0.999) / (1 - 0.999 ** n)
    alpha = raw * len(n) / raw.sum()
    p = np.exp(-ce_per_sample(logits, targets))
    expected = weighted_mean(alpha, -(1 - p) * np.log(p), targets)
    assert criterion(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_ldam_margins_and_scale():
    logits, targets = batch(6)
    n = np.array(COUNTS, dtype=np.float64)
    margins = n ** -0.25
    margins *= 0.5 / margins.max()
    z = logits.double().numpy().copy()
    z[np.arange(len(targets)), targets.numpy()] -= margins[targets.numpy()]
    expected = ce_per_sample(torch.from_numpy(30 * z), targets).mean()
    assert build_method("ldam", COUNTS)(logits, targets).item() == pytest.approx(expected, rel=1e-4)


def test_logit_adjusted_and_balanced_softmax():
    logits, targets = batch(7)
    n = np.array(COUNTS, dtype=np.float64)
    shifted = logits.double() + torch.from_numpy(np.log(n / n.sum()))
    expected = ce_per_sample(shifted, targets).mean()
    for name in ("logit_adjusted", "balanced_softmax"):
        assert build_method(name, COUNTS)(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_start_epoch_defers_the_weights():
    criterion = build_method("inverse_frequency", COUNTS, start_epoch=2)
    assert torch.all(criterion.class_weights == 1)
    criterion.end_epoch()
    assert torch.all(criterion.class_weights == 1)
    criterion.end_epoch()
    assert int(criterion.epoch) == 2
    assert criterion.class_weights[-1] > criterion.class_weights[0]


def test_state_dict_round_trip_carries_weights_and_epoch():
    a = build_method("effective_number", COUNTS, start_epoch=1)
    a.end_epoch()
    b = build_method("effective_number", COUNTS, start_epoch=1)
    b.load_state_dict(a.state_dict())
    assert int(b.epoch) == 1
    assert torch.equal(a.class_weights, b.class_weights)


def test_bf16_logits():
    logits, targets = batch(8)
    loss = build_method("inverse_frequency", COUNTS)(logits.bfloat16(), targets)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


@pytest.mark.parametrize("bad,match", [
    ({"bogus": 1}, "no option 'bogus'"),
    ({"bta": 0.9}, "did you mean 'beta'"),
    ({"normalization": "sum"}, "normalization"),
    ({"beta": 1.5}, "beta must be in"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"start_epoch": -1}, "start_epoch"),
])
def test_bad_options_are_named(bad, match):
    with pytest.raises(LtBenchError, match=match):
        build_method("effective_number", COUNTS, **bad)


@pytest.mark.parametrize("counts,match", [
    ([10, 0, 3], "no training sample"),
    ([5], "at least 2"),
    ([1.5, 2], "whole numbers"),
])
def test_bad_class_counts(counts, match):
    with pytest.raises(LtBenchError, match=match):
        build_method("ce", counts)


def test_unknown_method_suggests_the_closest():
    with pytest.raises(LtBenchError, match="did you mean 'effective_number'"):
        build_method("efective_number", COUNTS)


def test_non_finite_logits_are_a_clear_error():
    logits, targets = batch(9)
    logits[0, 0] = float("nan")
    with pytest.raises(LtBenchError, match="non-finite logits"):
        build_method("ce", COUNTS)(logits, targets)


def test_method_subclass_options_are_introspected():
    opts = lt_bench.method_options("effective_number")
    assert opts["beta"] == 0.9999 and opts["normalization"] == "mean" and opts["start_epoch"] == 0
    assert lt_bench.method_options("focal")["gamma"] == 2.0
