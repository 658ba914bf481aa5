"""One study's cells under two settings, side by side: ``lt-bench reproduce NAME --against
KEY=VALUE``. The question it answers is "what does this one change do to the paper's numbers?",
e.g. the JPEG export against lossless pixels (``--against data.copy=jpeg``).

Each cell's runs of the two settings are paired by seed: same seed, same subset, same schedule,
only the change differs. The paired difference (this setting − the other) gets the t interval of
the per-seed differences, which is narrower than an unpaired one whenever seeds move both
settings alike. The paper's cell stands beside both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lt_bench.compare.study import Study
from lt_bench.compare.verdict import Ours, mean_std


@dataclass
class PairedCell:
    row: str
    column: str
    ours: Ours
    other: Ours
    paper: str
    pairs: int = 0
    diff: float | None = None
    low: float | None = None
    high: float | None = None


def paired_interval(a: dict[int, float], b: dict[int, float], level: float = 0.95
                    ) -> tuple[int, float | None, float | None, float | None]:
    """(pairs, mean difference a − b over the seeds both have, its ``level`` t interval);
    the interval needs two pairs, the mean one."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if not diffs:
        return 0, None, None, None
    m = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return 1, m, None, None
    from scipy import stats

    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return len(diffs), m, m - half, m + half


def pair_cells(study: Study, ours: dict, other: dict) -> list[PairedCell]:
    out = []
    for r in study.rows:
        for c in study.columns:
            key = (r.label, c.label)
            a, b = ours.get(key, Ours()), other.get(key, Ours())
            paper = study.cells[key].text
            n, diff, low, high = paired_interval(dict(zip(a.seeds, a.values)),
                                                 dict(zip(b.seeds, b.values)))
            out.append(PairedCell(r.label, c.label, a, b, paper, n, diff, low, high))
    return out


def _ms(o: Ours) -> str:
    m, s = mean_std(o.values)
    if m is None:
        return "—"
    return f"{m:.1f}" + (f" ± {s:.1f}" if s is not None else "") + f" ({o.n})"


def _delta(c: PairedCell) -> str:
    if c.diff is None:
        return "—"
    if c.low is None:
        return f"{c.diff:+.1f} (1 pair)"
    return f"{c.diff:+.1f} [{c.low:+.1f}, {c.high:+.1f}] ({c.pairs} pairs)"


def format_pairs(study: Study, cells: list[PairedCell], mine: str, theirs: str,
                 markdown: bool = False) -> str:
    """The side-by-side table, one block per column (text, or markdown for a report file)."""
    unit = "top-1 error %" if study.reports == "error" else "top-1 accuracy %"
    head = ["row", mine, theirs, "Δ paired [95 % CI]", "paper"]
    lines = [f"{study.title}: {unit}, {study.statistic} epoch, {mine} against {theirs}; "
             f"Δ = {mine} − {theirs}, paired by seed"]
    for column in [c.label for c in study.columns]:
        rows = [[c.row, _ms(c.ours), _ms(c.other), _delta(c), c.paper]
                for c in cells if c.column == column]
        lines += ["", f"### {column}" if markdown else column]
        if markdown:
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
            for r in [head, ["-" * w for w in widths], *rows]:
                lines.append("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    return "\n".join(lines)
