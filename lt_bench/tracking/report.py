"""A finished run's artifact files: per-class table, weight trajectory, and plots (PNG, Agg).

``write_report(result, cfg, folder)`` writes, for a ``lt_bench.workspace.record.RunResult``, into
``folder``::

    config.yaml                    the resolved config
    per_class_accuracy.csv         class, train count, group, final and best accuracy
    class_weights.csv / .json      the class weights at the end of every epoch
    results.json                   the run record (as in the run folder)
    plots/per_class_accuracy.png   accuracy against training count (log x)
    plots/class_weights.png        each class's weight over epochs
    plots/confusion_matrix.png     final-epoch confusion matrix (at most 100 classes)
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

from lt_bench.data import groups
from lt_bench.workspace.layout import config_file, results_file
from lt_bench.workspace.record import MAX_CONFUSION_CLASSES, RunResult


def _groups(result: RunResult) -> list[str]:
    if result.group_of_class:
        return list(result.group_of_class)

    return groups(result.train_counts)


def write_report(result: RunResult, cfg: dict | None, folder: Path) -> list[Path]:
    """Write the artifact files for ``result`` into ``folder``; return their paths."""
    folder = Path(folder)
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if cfg is not None:
        path = config_file(folder)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        written.append(path)

    classes = [str(c) for c in result.classes]
    counts = list(result.train_counts)
    final = result.final.per_class if result.final else []
    best = result.best.per_class if result.best else []
    group = _groups(result)
    n = len(classes) or len(final)
    classes = classes or [str(i) for i in range(n)]

    path = folder / "per_class_accuracy.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_index", "class", "train_count", "group", "final_acc", "best_acc"])
        for i in range(n):
            w.writerow([i, classes[i], counts[i] if i < len(counts) else "",
                        group[i] if i < len(group) else "",
                        final[i] if i < len(final) else "", best[i] if i < len(best) else ""])
    written.append(path)

    weights = result.class_weights
    if weights:
        path = folder / "class_weights.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", *classes[:len(weights[0])]])
            for epoch, row in enumerate(weights):
                w.writerow([epoch, *row])
        written.append(path)
        path = folder / "class_weights.json"
        path.write_text(json.dumps({"classes": classes, "train_counts": counts,
                                    "weights": weights}))
        written.append(path)

    path = results_file(folder)
    result.save(path, root=folder)  # the caller's folder (a fresh temporary one), not a run's
    written.append(path)
    written += write_plots(result, classes, counts, final, weights, folder / "plots")
    return written


def write_plots(result: RunResult, classes, counts, per_class, weights,
                folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    title = (f"{result.method} on {result.dataset} "
             f"(IF {result.imbalance}, seed {result.seed})")
    written = []
    if per_class and counts and len(counts) == len(per_class):
        written.append(_plot_per_class(plt, title, counts, per_class, folder))
    if weights:
        written.append(_plot_weights(plt, title, classes, counts, weights, folder))
    confusion = result.confusion
    if confusion and len(confusion) <= MAX_CONFUSION_CLASSES:
        written.append(_plot_confusion(plt, title, classes, confusion, folder))
    return written


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_per_class(plt, title: str, counts, per_class, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    shown = [(max(c, 1), a) for c, a in zip(counts, per_class) if a is not None]  # no test image
    ax.scatter([c for c, _ in shown], [a for _, a in shown], s=14, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("top-1 accuracy (final epoch)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return _save(plt, fig, folder / "per_class_accuracy.png")


def _plot_weights(plt, title: str, classes, counts, weights, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    cols = list(zip(*weights))
    cmap = plt.get_cmap("viridis")
    order = sorted(range(len(cols)), key=lambda i: -(counts[i] if i < len(counts) else 0))
    for rank, i in enumerate(order):
        ax.plot(range(1, len(weights) + 1), cols[i], lw=1,
                color=cmap(rank / max(1, len(cols) - 1)),
                label=classes[i] if len(cols) <= 10 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("class weight")
    ax.set_title(title + "\n(colour: head → tail)", fontsize=9)
    if len(cols) <= 10:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(plt, fig, folder / "class_weights.png")


def _plot_confusion(plt, title: str, classes, confusion, folder: Path) -> Path:
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(5 + n / 20, 4.5 + n / 20), dpi=100)
    rows = [[v / max(1, sum(r)) for v in r] for r in confusion]
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 20:
        ax.set_xticks(range(n), [c[:10] for c in classes[:n]], rotation=90, fontsize=7)
        ax.set_yticks(range(n), [c[:10] for c in classes[:n]], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (head → tail)")
    ax.set_title(title, fontsize=9)
    return _save(plt, fig, folder / "confusion_matrix.png")


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
