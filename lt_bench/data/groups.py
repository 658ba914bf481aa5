"""Many / medium / few shot groups from the training counts.

The convention of the long-tailed literature (Liu et al., OLTR, CVPR 2019, followed by LDAM,
decoupling, RIDE, SADE, Zheng & Ng): many-shot classes have more than 100 training images,
few-shot classes fewer than 20, medium-shot the rest (20 to 100, both included). The thresholds
are the config keys ``eval.many_above`` and ``eval.few_below``, with these defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

# defined with the run record, which the leaderboard reads without loading torch
from lt_bench.results import FEW, GROUP_NAMES, MANY, group_rule, thresholds_of

__all__ = ["FEW", "GROUP_NAMES", "MANY", "group_rule", "group_sizes", "groups", "thresholds_of"]


def groups(train_counts: Sequence[int], many_above: int = MANY,
           few_below: int = FEW) -> list[str]:
    """'many' (> ``many_above`` images), 'medium' or 'few' (< ``few_below``) for each class."""
    out = []
    for n in train_counts:
        n = int(n)
        out.append("many" if n > many_above else "few" if n < few_below else "medium")
    return out


def group_sizes(train_counts: Sequence[int], many_above: int = MANY,
                few_below: int = FEW) -> dict[str, int]:
    """How many classes fall in each group: ``{"many": …, "medium": …, "few": …}``."""
    labels = groups(train_counts, many_above, few_below)
    return {g: labels.count(g) for g in GROUP_NAMES}
