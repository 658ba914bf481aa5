"""Many / medium / few shot groups from the training counts (the usual LT thresholds)."""

from __future__ import annotations

from collections.abc import Sequence

MANY = 100  # more than this: many-shot
FEW = 20  # fewer than this: few-shot; in between (inclusive): medium


def groups(train_counts: Sequence[int]) -> list[str]:
    """'many' (> 100 images), 'medium' (20…100) or 'few' (< 20) for each class."""
    out = []
    for n in train_counts:
        n = int(n)
        out.append("many" if n > MANY else "few" if n < FEW else "medium")
    return out


def group_sizes(train_counts: Sequence[int]) -> dict[str, int]:
    """How many classes fall in each group: ``{"many": …, "medium": …, "few": …}``."""
    labels = groups(train_counts)
    return {g: labels.count(g) for g in ("many", "medium", "few")}
