"""Many / medium / few shot groups from the training counts.

The convention of the long-tailed literature (Liu et al., OLTR, CVPR 2019, followed by LDAM,
decoupling, RIDE, SADE, Zheng & Ng): many-shot classes have more than 100 training images,
few-shot classes fewer than 20, medium-shot the rest (20 to 100, both included). The thresholds
are the config keys ``eval.many_above`` and ``eval.few_below``, with these defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

#: the group names, and the default thresholds in training images: many-shot more than MANY,
#: few-shot fewer than FEW, medium in between (both included). The run record, the leaderboard
#: and the pictures take them from here (this module imports no torch).
GROUP_NAMES = ("many", "medium", "few")
MANY = 100
FEW = 20


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


def group_rule(group: str, many_above: int = MANY, few_below: int = FEW) -> str:
    """The training counts of a group, as a table's header names them: ``>100``, ``20–100``,
    ``<20``."""
    return {"many": f">{many_above}", "medium": f"{few_below}–{many_above}",
            "few": f"<{few_below}"}[group]


def thresholds_of(section) -> dict[str, int]:
    """``{"many_above": …, "few_below": …}`` from a config's ``eval`` section (a mapping, or
    None for a config from before the keys existed: the defaults)."""
    section = section or {}
    return {"many_above": int(section.get("many_above", MANY)),
            "few_below": int(section.get("few_below", FEW))}
