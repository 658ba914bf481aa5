"""A study's report as text for the terminal, as markdown shaped like the paper's table, and as a
picture of ours against the paper's per cell."""

from __future__ import annotations

from pathlib import Path

from lt_bench.compare.plot import DPI, WIDTH_IN, clipped
from lt_bench.compare.verdict import CellReport, Report
from lt_bench.workspace.files import atomic_writer


def _ms(mean: float | None, std: float | None, n: int | None = None) -> str:
    if mean is None:
        return "—"
    text = f"{mean:.1f}" + ("" if std is None else f" ± {std:.1f}")
    return text + ("" if n is None else f" ({n})")


def _diff(c: CellReport) -> str:
    if c.diff is None:
        return "—"
    return f"{c.diff:+.1f} [{c.low:+.1f}, {c.high:+.1f}]"


def _p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}")


def headline(report: Report) -> str:
    s = report.study
    other = "final" if s.statistic == "best" else "best"
    return (f"{s.title}: top-1 {s.reports} %, ours ({s.statistic} epoch; {other} epoch beside "
            f"it) against the paper's; Δ = ours − paper with Welch's 95 % interval")


def _cell_lines(report: Report, column: str) -> list[list[str]]:
    s = report.study
    lines = []
    for row in s.rows:
        c = report.cells[row.label, column]
        lines.append([row.label, _ms(c.mean, c.std, c.ours.n or None),
                      _ms(c.other_mean, c.other_std), c.paper.text.replace("<b>", "")
                      .replace("</b>", "") or "—", _diff(c), c.verdict])
    return lines


def _table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]

    def fmt(cells):
        return "  ".join(x.ljust(w) for x, w in zip(cells, widths)).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def claim_lines(report: Report) -> list[str]:
    out = []
    for c in report.claims:
        out.append(f'"{c.claim.text}": {c.verdict}')
        for column, better, than, holds, p in c.checks:
            a, b = report.cells[better, column], report.cells[than, column]
            if a.mean is None or b.mean is None:
                missing = " and ".join(x for x, c in ((better, a), (than, b)) if c.mean is None)
                out.append(f"  {column}: {missing} not run")
                continue
            sign = ("<" if report.study.reports == "error" else ">") if holds else "not better than"
            out.append(f"  {column}: {better} {_ms(a.mean, None)} {sign} {than} "
                       f"{_ms(b.mean, None)} (one-sided Welch p {_p(p)})")
    return out


def notes(report: Report) -> list[str]:
    return [f"{c.row}, {c.column}: {c.ours.note}" for c in report.cells.values() if c.ours.note]


def format_text(report: Report) -> str:
    s = report.study
    other = "final" if s.statistic == "best" else "best"
    parts = [headline(report)]
    if report.setup_lines:
        parts.append("set-up departs from the paper's: " + "; ".join(report.setup_lines))
    for column in s.columns:
        parts.append("")
        parts.append(column.label)
        parts.append(_table(["row", f"ours {s.statistic} (n)", f"ours {other}", "paper",
                             "Δ [95 % CI]", "verdict"], _cell_lines(report, column.label)))
    if report.claims:
        parts += ["", "claims (our runs):", *claim_lines(report)]
    if notes(report):
        parts += ["", *notes(report)]
    return "\n".join(parts)


def format_markdown(report: Report, picture: str | None = None) -> str:
    """The paper's shape: rows methods, columns settings; each cell ours, the paper's, Δ and
    the verdict."""
    s = report.study
    other = "final" if s.statistic == "best" else "best"
    better = "lower" if s.reports == "error" else "higher"
    out = [f"## {s.title}", ""]
    if s.source:
        out += [f"Source: {s.source}.", ""]
    out += [f"Top-1 {s.reports} % ({better} is better); each cell: ours at the {s.statistic} "
            f"epoch, mean ± std (seeds), then the {other} epoch; the paper's mean ± std; Δ = ours "
            "− paper with Welch's 95 % interval; the verdict.", ""]
    if report.setup_lines:
        out += ["**Set-up departs from the paper's:**", "",
                *[f"- {line}" for line in report.setup_lines], ""]
    out.append("| | " + " | ".join(c.label for c in s.columns) + " |")
    out.append("|---|" + "---|" * len(s.columns))
    for row in s.rows:
        cells = []
        for column in s.columns:
            c = report.cells[row.label, column.label]
            cells.append(f"{_ms(c.mean, c.std, c.ours.n or None)}<br>{other} "
                         f"{_ms(c.other_mean, c.other_std)}<br>paper {c.paper.text}<br>"
                         f"Δ {_diff(c)}<br>*{c.verdict}*")
        out.append(f"| {row.label} | " + " | ".join(cells) + " |")
    if report.claims:
        out += ["", "**Claims, checked on our runs:**", ""]
        out += [f"- {line.strip()}" if not line.startswith("  ") else f"  - {line.strip()}"
                for line in claim_lines(report)]
    if notes(report):
        out += ["", *[f"- {n}" for n in notes(report)]]
    if picture:
        out += ["", f"![ours against the paper]({picture})"]
    return "\n".join(out) + "\n"


def draw(report: Report, path: Path, root: Path | None = None) -> Path:
    """``study_figure`` as a PNG, written as every workspace file is (``lt_bench.workspace.files``:
    never through a link below ``root``)."""
    import matplotlib.pyplot as plt

    fig = study_figure(report)
    try:
        with atomic_writer(path, root) as f:
            fig.savefig(f, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def study_figure(report: Report):
    """One panel per column, a line per row (labels read level, however many rows): the paper's
    mean ± std and ours, one above the other; 960 px wide, the width MLflow's artifact viewer
    and a README give a picture."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report.study
    n = len(s.columns)
    per_line = min(n, 3)
    lines = (n + per_line - 1) // per_line
    fig, axes = plt.subplots(lines, per_line, sharey=True, squeeze=False, layout="constrained",
                             figsize=(WIDTH_IN, 1.4 + (0.75 + 0.32 * len(s.rows)) * lines))
    for ax in axes.flat[n:]:
        ax.axis("off")
    y = range(len(s.rows))
    for ax, column in zip(axes.flat, s.columns):
        cells = [report.cells[r.label, column.label] for r in s.rows]
        for offset, colour, label, points in (
                (-0.17, "0.55", "paper", [(c.paper.mean, c.paper.std) for c in cells]),
                (0.17, "tab:blue", f"ours ({s.statistic} epoch)", [(c.mean, c.std)
                                                                  for c in cells])):
            ys = [i + offset for i, (m, _) in zip(y, points) if m is not None]
            ms = [m for m, _ in points if m is not None]
            es = [sd or 0.0 for m, sd in points if m is not None]
            ax.errorbar(ms, ys, xerr=clipped(ms, es), fmt="o", color=colour, capsize=3,
                        label=label)
        ax.set_yticks(list(y), [r.label for r in s.rows])
        ax.set_ylim(len(s.rows) - 0.5, -0.5)  # the study's first row on top, as in its table
        ax.set_title(column.label, fontsize=10)
        ax.set_xlabel(f"top-1 {s.reports} %")
        ax.grid(axis="x", alpha=0.3)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle("\n".join(textwrap.wrap(s.title, 90)), fontsize=11)
    return fig
