"""Long-tailed counts, the seeded subset, many/medium/few groups and the IF checks."""

import pytest
import torch

from lt_bench.data import groups, lt_counts, make_long_tailed, select_subset
from lt_bench.data.groups import group_sizes
from lt_bench.errors import LtBenchError


def test_exp_profile_matches_hand_computed_values():
    # n_i = int(5000 * 0.01 ** (i / 9)): 5000, 2997.7…, 1796.9…, 1077.2…, 645.7…, 387.1…, …
    assert lt_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert lt_counts(500, 100, 100)[0] == 500 and lt_counts(500, 100, 100)[-1] == 5


@pytest.mark.parametrize("imbalance,c10,c100", [(100, 12406, 10847), (200, 11203, 9502),
                                                (10, 20431, 19573)])
def test_exp_profile_published_totals(imbalance, c10, c100):
    assert sum(lt_counts(5000, 10, imbalance, "exp")) == c10
    assert sum(lt_counts(500, 100, imbalance, "exp")) == c100


def test_step_profile():
    assert lt_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert lt_counts(500, 100, 10, "step") == [500] * 50 + [50] * 50
    assert lt_counts(10, 3, 3, "step") == [10, 3, 3]


def test_imbalance_one_or_none_keeps_everything():
    assert lt_counts(7, 4, 1) == [7] * 4
    assert lt_counts(7, 4, None) == [7] * 4
    labels = torch.arange(4).repeat_interleave(7)
    assert torch.equal(make_long_tailed(labels, list("abcd"), None, "exp", 0, "x"),
                       torch.arange(28))


@pytest.mark.parametrize("bad", [0.5, 0, -3, float("nan"), "many"])
def test_imbalance_below_one_is_an_error(bad):
    with pytest.raises(LtBenchError, match="imbalance"):
        lt_counts(100, 10, bad)


def test_subset_is_seeded_nested_and_independent_of_global_rng():
    labels = torch.arange(5).repeat(40)  # 40 per class, interleaved
    counts = lt_counts(40, 5, 10)
    torch.manual_seed(123)
    a = select_subset(labels, counts, subset_seed=0)
    torch.manual_seed(999)
    b = select_subset(labels, counts, subset_seed=0)
    assert torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == counts
    assert not torch.equal(a, select_subset(labels, counts, subset_seed=1))
    # a larger IF keeps a subset of what a smaller one keeps
    small = set(select_subset(labels, lt_counts(40, 5, 20), 0).tolist())
    assert small <= set(a.tolist())


def test_profile_that_empties_a_class_is_an_error():
    labels = torch.arange(3).repeat_interleave(10)
    with pytest.raises(LtBenchError, match="empty.*imbalance ≤ 10"):
        make_long_tailed(labels, ["a", "b", "c"], 50, "exp", 0, "tiny")


def test_groups_thresholds():
    assert groups([100, 101, 20, 19, 5000, 0]) == ["medium", "many", "medium", "few", "many",
                                                    "few"]
    assert group_sizes([100, 101, 20, 19]) == {"many": 1, "medium": 2, "few": 1}
