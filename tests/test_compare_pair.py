"""``reproduce --against``: two settings' cells paired by seed, against a hand-computed case."""

from __future__ import annotations

import pytest

from lt_bench.compare.pair import format_pairs, pair_cells, paired_interval
from lt_bench.compare.study import load_study
from lt_bench.compare.verdict import Ours


def test_paired_interval_by_hand():
    # differences 3, 4, 3: mean 10/3, sd sqrt(1/3), se 1/3, t(0.975, 2) = 4.302653
    n, m, low, high = paired_interval({0: 30.0, 1: 32.0, 2: 31.0, 7: 1.0},
                                      {0: 27.0, 1: 28.0, 2: 28.0, 5: 2.0})
    assert n == 3 and m == pytest.approx(10 / 3)
    assert (low, high) == pytest.approx((10 / 3 - 4.302653 / 3, 10 / 3 + 4.302653 / 3),
                                        abs=1e-5)
    assert paired_interval({0: 1.0}, {0: 0.5}) == (1, 0.5, None, None)  # no interval from one
    assert paired_interval({0: 1.0}, {1: 0.5}) == (0, None, None, None)  # no seed in common


def test_the_table_sets_both_settings_beside_the_paper():
    study = load_study("zheng_ng_table1_if100")
    ours = {("CE", "CIFAR-10 IF 100"): Ours([32.0, 33.0], seeds=[0, 1])}
    other = {("CE", "CIFAR-10 IF 100"): Ours([27.0, 27.5], seeds=[0, 1])}
    cells = pair_cells(study, ours, other)
    text = format_pairs(study, cells, "data.copy=jpeg", "data.copy=webp")
    ce = next(line for line in text.splitlines() if line.startswith("CE"))
    assert "32.5 ± 0.7 (2)" in ce and "27.2 ± 0.4 (2)" in ce and "26.5 ± 0.5" in ce
    assert "+5.2 [" in ce and "(2 pairs)" in ce
    dv = next(line for line in text.splitlines() if line.startswith("DV"))
    assert dv.split()[1:4] == ["—", "—", "—"]
    assert "| CE | 32.5 ± 0.7 (2) |" in format_pairs(study, cells, "a", "b", markdown=True)
