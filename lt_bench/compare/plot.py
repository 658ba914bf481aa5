"""The comparison as a picture: one PNG per benchmark setting, drawn from the leaderboard's rows.

Left panel: per method (row), grouped bars of the mean top-1 accuracy over seeds, overall and
many / medium / few-shot, with the sample std over seeds as error bars (none with one seed); a
group no class falls in (None in every row) is left out. Right panel: per-class accuracy against
the class's training count (log x), one line per method (the mean over seeds) in a band from the
lowest to the highest seed. Classes that share a training count are one point, their mean: an
ImageNet-LT line would otherwise zigzag up and down at every count.

A third panel, when the runs recorded them, draws the accuracy under shifted test priors
(forward long-tailed, uniform, backward; ``lt_bench.run.evaluate``). A method is named as in the
leaderboard (``dv (convention=authors)`` when two configurations of it are in the setting; with
the data fingerprint when one configuration ran on two data sets, so no two rows share a name,
a colour or a line). One legend, below the panels, names each method with its seeds and its mean
expected calibration error: it never covers a bar or a line.

Per-class accuracy is not in the tracker's records: it is read from the run folders'
``results.json`` (``<workspace>/runs/<dataset>-<method>-<cfg_hash>-seed<seed>``). A store filled
from other machines may lack them; one line says so and the panel draws the runs that are here.

Several settings give several files: ``FILE.png`` becomes ``FILE-<setting>.png`` (a row of
panels per setting in one figure would shrink every panel as a sweep's grid grows).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from lt_bench.config import protocol_label
from lt_bench.data.groups import FEW, MANY, group_rule
from lt_bench.errors import LtBenchError
from lt_bench.tracking import tracker_name
from lt_bench.tracking.mlflow_artifacts import log_sweep_run
from lt_bench.tracking.records import SETTING, mean, sample_std
from lt_bench.tracking.store import imbalance_tag
from lt_bench.workspace.files import atomic_writer
from lt_bench.workspace.layout import folder_name, results_file, runs_folder, sweeps_folder
from lt_bench.workspace.provenance import fingerprint
from lt_bench.workspace.record import SHIFTED, finished_or_skip

GROUPS = ("overall", "many", "medium", "few")
BAND = "band: lowest to highest seed"
#: 8 in × 120 dpi: the picture's native width (960 px) is the width MLflow's artifact viewer
#: gives it (about 1000 px), so its 10-11 pt text reads there unscaled
WIDTH_IN, DPI = 8.0, 120


def setting_of(row) -> tuple:
    return tuple(getattr(row, k) for k in SETTING)


def setting_slug(setting: tuple) -> str:
    dataset, imbalance, backbone, protocol = setting
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset}-IF{imbalance}-{backbone}-{protocol}")


def labels(rows: list) -> list[str]:
    """The leaderboard's names of the rows (``Row.label``); for rows without one, the method,
    ``method@hash`` where a method has two configurations, and the data where one has two."""
    count = defaultdict(set)
    for row in rows:
        count[row.method].add((row.cfg_hash, getattr(row, "data", "")))
    out = []
    for r in rows:
        if getattr(r, "label", ""):
            out.append(r.label)
            continue
        hashes = {h for h, _ in count[r.method]}
        name = f"{r.method}@{r.cfg_hash}" if len(hashes) > 1 else r.method
        same = [d for h, d in count[r.method] if h == r.cfg_hash]
        out.append(f"{name} [data {r.data}]" if len(same) > 1 else name)
    return out


def bar_data(rows: list) -> dict[str, dict[str, tuple[float, float | None, int]]]:
    """{group: {label: (mean, std or None, seeds)}}, groups without a class left out."""
    out: dict[str, dict] = {}
    for group in GROUPS:
        cells = {}
        for label, row in zip(labels(rows), rows):
            if group == "overall":
                cells[label] = (row.mean, row.std, row.n)
                continue
            values = row.group_values.get(group, [])
            if getattr(row, f"acc_{group}") is not None:
                cells[label] = (getattr(row, f"acc_{group}"), sample_std(values), len(values))
        if cells:
            out[group] = cells
    return out


def class_lines(rows: list, workspace: Path, out=print) -> tuple[dict[str, dict], list[str]]:
    """{label: {counts, mean, low, high, seeds}} from the run folders, and the missing folders
    (a corrupt results.json is one line on ``out`` too). ``counts`` ascend; ``mean``/``low``/
    ``high`` are over seeds of each count's class mean."""
    lines, missing = {}, []
    for label, row in zip(labels(rows), rows):
        per_seed = []
        for seed in row.seeds:
            folder = runs_folder(workspace) / folder_name(row.dataset, row.method, row.cfg_hash, seed)
            result = finished_or_skip(results_file(folder), out)
            if result is not None and getattr(row, "data", "") and \
                    fingerprint(result.provenance) != row.data:
                result = None  # the run of this seed on the other data: not this row's
            score = result.score(row.metric) if result is not None else None
            if score is None or len(score.per_class) != len(result.train_counts):
                missing.append(folder.name)
                continue
            per_seed.append(by_count(result.train_counts, score.per_class))
        if not per_seed:
            continue
        counts = sorted(per_seed[0])
        per_seed = [s for s in per_seed if sorted(s) == counts]  # another class split: left out
        lines[label] = {"counts": counts, "seeds": len(per_seed),
                        "mean": [mean([s[c] for s in per_seed]) for c in counts],
                        "low": [min(s[c] for s in per_seed) for c in counts],
                        "high": [max(s[c] for s in per_seed) for c in counts]}
    return lines, missing


def by_count(counts: list[int], accuracy: list[float | None]) -> dict[int, float]:
    grouped = defaultdict(list)
    for count, acc in zip(counts, accuracy):
        if acc is not None:  # a class without test images has no accuracy to show
            grouped[int(count)].append(float(acc))
    return {c: mean(v) for c, v in grouped.items()}


def figure(rows: list, workspace: Path, out=print, protocol: str = ""):
    """The figure of one setting's rows (matplotlib, Agg); ``protocol`` names it in the title
    with its overridden values (``protocol_label``), else the rows' protocol tag does."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    lines, missing = class_lines(rows, workspace, out)
    if missing:
        total = sum(len(r.seeds) for r in rows)
        out(f"comparison plot: {len(missing)} of {total} runs have no finished results.json under "
            f"{runs_folder(workspace)} (a store filled on other machines?), e.g. {missing[0]}; "
            + ("the per-class panel is drawn from the others" if lines
               else "the per-class panel is left out"))
    shifted = {label: row.shifted for label, row in zip(labels(rows), rows)
               if getattr(row, "shifted", None)}
    panels = 1 + bool(lines) + bool(shifted)
    # panels stacked, WIDTH_IN × DPI = 960 px wide: MLflow's artifact viewer shows a picture at
    # about 1000 px, where panels side by side (1,400 px) shrank their text below reading size.
    # Constrained layout keeps the legend, placed "outside", off every panel.
    fig, axes = plt.subplots(panels, 1, figsize=(WIDTH_IN, 0.9 + 4.2 * panels), dpi=DPI,
                             squeeze=False, layout="constrained")
    # by name, not by rank: a method keeps its colour from one setting's figure to the next
    colours = {label: plt.get_cmap("tab10")(sorted(labels(rows)).index(label) % 10)
               for label in labels(rows)}
    _bars(axes[0][0], bar_data(rows), colours)
    axes[0][0].set_xlabel("class group, by training images: " + ", ".join(
        f"{g} " + " | ".join(dict.fromkeys(group_rule(g, getattr(r, "many_above", MANY),
                                                      getattr(r, "few_below", FEW))
                                           for r in rows)) for g in ("many", "medium", "few")),
        fontsize=8)
    if lines:
        _lines(axes[1][0], lines, colours)
    if shifted:
        _shifted(axes[-1][0], shifted, colours)
    _legend(fig, rows, lines, colours)
    first = rows[0]
    fig.suptitle(f"{first.dataset}, imbalance {first.imbalance}, {first.backbone}, protocol "
                 f"{protocol or first.protocol}\ntop-1 accuracy over seeds, {first.metric} epoch",
                 fontsize=11)
    return fig


def _legend(fig, rows: list, lines: dict, colours: dict) -> None:
    """One legend for every panel, below them: a method, its seeds (and those the per-class
    panel found, where fewer) and its mean ECE."""
    from matplotlib.patches import Patch

    handles, texts = [], []
    for label, row in zip(labels(rows), rows):
        found = lines.get(label, {}).get("seeds", row.n)
        ece = getattr(row, "ece", None)
        texts.append(f"{label} (n={row.n}" + (f"; per class n={found}" if found != row.n else "")
                     + (f"; ECE {100 * ece:.1f} %" if ece is not None else "") + ")")
        handles.append(Patch(color=colours[label]))
    fig.legend(handles, texts, loc="outside lower center", ncol=min(len(texts), 3), fontsize=8,
               title="method (seeds; mean expected calibration error)", title_fontsize=8,
               frameon=False)


def clipped(means, spreads, low: float = 0.0, high: float = 100.0) -> list[list[float]]:
    """Error bars of ± ``spreads`` cut at the ends of the scale (a percentage cannot pass 0 or
    100): matplotlib's asymmetric ``yerr``, [below, above]."""
    below = [min(s, max(0.0, m - low)) for m, s in zip(means, spreads)]
    above = [min(s, max(0.0, high - m)) for m, s in zip(means, spreads)]
    return [below, above]


def _bars(ax, data: dict, colours: dict) -> None:
    names = list(colours)
    width = 0.8 / max(1, len(names))
    for i, label in enumerate(names):
        cells = [(g, *data[group][label]) for g, group in enumerate(data) if label in data[group]]
        xs = [g - 0.4 + width * (i + 0.5) for g, *_ in cells]
        heights = [100 * value for _, value, _, _ in cells]
        n = max((seeds for *_, seeds in cells), default=0)
        ax.bar(xs, heights, width, color=colours[label], label=f"{label} (n={n})")
        spread = [(x, h, 100 * std) for x, h, (_, _, std, _) in zip(xs, heights, cells)
                  if std is not None]  # one seed has no spread: no bar, not a zero-length one
        if spread:
            x, h, err = zip(*spread)
            ax.errorbar(x, h, yerr=clipped(h, err), fmt="none", ecolor="black", elinewidth=1,
                        capsize=3, label=f"_std {label}")
    ax.set_xticks(range(len(data)), list(data))
    ax.set_ylabel("top-1 accuracy % (mean over seeds)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("by class group; error bar: ± sample std over seeds (none for one seed)",
                 fontsize=9)


def _lines(ax, lines: dict, colours: dict) -> None:
    for label, line in lines.items():
        xs = [max(c, 1) for c in line["counts"]]
        ax.plot(xs, [100 * v for v in line["mean"]], marker="o", ms=3, lw=1.5,
                color=colours[label], label=f"{label} (n={line['seeds']})")
        ax.fill_between(xs, [100 * v for v in line["low"]], [100 * v for v in line["high"]],
                        color=colours[label], alpha=0.18, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("top-1 accuracy % (mean over seeds)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(f"per class, against its training count; line: mean, {BAND}", fontsize=9)


def _shifted(ax, shifted: dict[str, dict[str, float]], colours: dict) -> None:
    """Mean accuracy over seeds under each shifted test prior, head-heavy to tail-heavy."""
    for label, values in shifted.items():
        points = [(i, 100 * values[n]) for i, n in enumerate(SHIFTED) if n in values]
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, lw=1.5, color=colours[label],
                    label=f"_shifted {label}")
    ax.set_xticks(range(len(SHIFTED)), [n.replace("forward", "fwd ").replace("backward", "bwd ")
                                        for n in SHIFTED], fontsize=8)
    ax.set_xlabel("test prior: forward long-tailed (imbalance) ← uniform → backward", fontsize=8)
    ax.set_ylabel("top-1 accuracy % (mean over seeds)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title("under shifted test priors: Σ_c p_c · acc_c (SADE's protocol)", fontsize=9)


def image_format(path: Path) -> str:
    """The format ``path``'s suffix names (png without one), or one line listing those that
    work: matplotlib's error would come after every run was read."""
    from matplotlib.backend_bases import FigureCanvasBase

    name = Path(path).suffix.lower().lstrip(".") or "png"
    known = FigureCanvasBase.get_supported_filetypes()
    if name not in known:
        raise LtBenchError(f"cannot draw a picture as {str(path)!r}: end the file name in ."
                           + ", .".join(sorted(known)) + " (e.g. comparison.png)")
    return name


def write_figures(rows: list, workspace: Path, path: Path, suffix: bool = False,
                  out=print, root: Path | None = None, cfgs: list = ()) -> list[Path]:
    """One picture per setting of ``rows``: ``path`` itself for a single setting unless
    ``suffix``, else ``<stem>-<setting>.<ext>`` beside it (ext: png without one). Each is written
    to a temporary beside it and renamed (matplotlib would follow a planted link), never through a
    link below ``root`` (default: the picture's own folder). ``cfgs``, the sweep's configs,
    let each title name the protocol's overridden values."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path = path if path.suffix else path.with_name(path.name + ".png")
    image_format(path)
    settings: dict[tuple, list] = {}
    for row in rows:
        settings.setdefault(setting_of(row), []).append(row)
    written = []
    for setting, members in settings.items():
        target = (path.with_name(f"{path.stem}-{setting_slug(setting)}{path.suffix}")
                  if suffix or len(settings) > 1 else path)
        fig = figure(members, workspace, out,
                     protocol_label(_cfg_of(cfgs, members[0])) if cfgs else "")
        try:
            with atomic_writer(target, target.parent if root is None else root) as f:
                fig.savefig(f, format=image_format(target))
        finally:
            plt.close(fig)
        written.append(target)
    return written


def sweep_figures(cfgs: list, rows: list, out=print) -> list[Path]:
    """The sweep's closing pictures, ``<workspace>/sweeps/comparison-<setting>.png``, each also
    an artifact of a sweep-level MLflow run when the tracker is MLflow."""
    first = cfgs[0]
    workspace = Path(first.workspace).expanduser()
    paths = write_figures(rows, workspace, sweeps_folder(workspace) / "comparison.png", suffix=True,
                          out=out, root=workspace, cfgs=cfgs)
    for target in paths:
        out(f"sweep: comparison plot {target}")
    if tracker_name(first) == "mlflow":
        by_slug = {setting_slug(setting_of(r)): r for r in rows}
        for target in paths:
            row = by_slug[target.stem.removeprefix("comparison-")]
            cfg = _cfg_of(cfgs, row)
            run_id = log_sweep_run(cfg, [target])
            out(f"sweep: the plot is an artifact of MLflow run {run_id} (tag lt.role=sweep)")
    return paths


def _cfg_of(cfgs: list, row) -> Any:
    for cfg in cfgs:
        if (cfg.dataset, imbalance_tag(cfg.imbalance), cfg.backbone.name) == (
                row.dataset, row.imbalance, row.backbone):
            return cfg
    return cfgs[0]
