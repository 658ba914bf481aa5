"""Is the authors' PV collapse what the paper saw? The weights and accuracy of the classes it collapses.

    python experiments/pv_collapse.py WORKSPACE [--dataset cifar100_lt] [--imbalance 100]
        [--features N] [--out docs/bench/pv_collapse.png]

The authors' PV takes a class's radius from the eigenvalues of its logits' covariance, and where
the logits span fewer directions than the radius uses, some of those eigenvalues are round-off
(``ROUND_OFF`` of the largest, ``plugins/class_volume``). Two things bound the span: a class of n
samples spans at most n − 1 directions, and a linear head on F features puts every class's
logits in an F-dimensional subspace (ResNet-32: F = 64, so on CIFAR-100 every class with more than
64 samples is flat along 36 of its 100 axes). The paper blames PV's "last few principal axes" for
its poor CIFAR-100 cells (Table 2). This reads the finished runs under WORKSPACE/runs: every
``pv`` run under ``convention=authors``, and the ``dv`` and ``ce`` runs of the same seed as its
comparators. For each pv run and each group of classes (many, medium, few) it prints the share of
the radius's axes that is round-off, the factor that puts on the radius, the last-epoch weight
against dv's (each run's weights scaled to mean 1 over the classes, so NE and mean-1 normalisation
compare) and the per-class accuracy (best epoch) beside dv's and ce's. The picture draws weight
and accuracy against n.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path

from lt_bench.tracking.records import saved_config
from lt_bench.workspace.layout import runs_folder
from lt_bench_plugins.class_volume import ROUND_OFF, PrincipalVolume


DEFAULT_COMPONENTS = inspect.signature(PrincipalVolume.__init__).parameters["components"].default


def load_runs(workspace: Path, dataset: str, imbalance: float) -> list[dict]:
    """Every finished run of ``dataset`` at ``imbalance`` under ``workspace/runs``, labelled."""
    runs = []
    for results in sorted(runs_folder(workspace).glob("*/results.json")):
        record = json.loads(results.read_text())
        if (record.get("status") != "FINISHED" or record.get("dataset") != dataset
                or float(record.get("imbalance", 0)) != imbalance):
            continue
        # a missing or unreadable config.yaml is {}: the run has no label and stays out
        record["label"] = label(saved_config(results.parent).get("method") or {},
                                len(record["classes"]))
        if record["label"]:
            runs.append(record)
    return runs


def label(method: dict, classes: int) -> str | None:
    """The run's place in the comparison: pv (authors) by its D†, dv by its normalisation, ce."""
    name = method.get("name")
    if name == "pv" and method.get("convention") == "authors":
        # the studies write components: null for all C axes; absent, pv's own default
        components = method.get("components", DEFAULT_COMPONENTS)
        return f"pv D†={classes if components is None else min(int(components), classes)}"
    if name == "dv" and method.get("convention") == "authors":
        return f"dv ({method.get('normalization', 'expected')})"
    return "ce" if name == "ce" else None


def mean_one(weights: list[float]) -> list[float]:
    scale = len(weights) / sum(weights)
    return [w * scale for w in weights]


def average(values) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def round_off_share(n: int, axes: int, classes: int, features: int | None) -> float:
    """The share of the authors' radius (a mean of log eigenvalues) that comes from round-off.

    sklearn's PCA keeps min(n, C) components; the logits span min(n − 1, F) of them. With
    D† ≤ kept the radius averages the first D†; otherwise the kept ones, the fill being their mean.
    """
    spanned = min(n - 1, features if features is not None else classes, classes)
    kept = min(n, classes)
    used = axes if axes <= kept else kept
    return max(0, used - spanned) / used


def compare(pv: dict, others: dict[str, dict], features: int | None) -> list[str]:
    """Markdown lines for one pv run, by group of classes, against ``others`` of its seed."""
    d = int(pv["label"].split("=")[1])
    counts, classes = pv["train_counts"], len(pv["train_counts"])
    weights = {"pv": mean_one(pv["class_weights"][-1])}
    accuracy = {"pv": pv["best"]["per_class"]}
    for name, run in others.items():
        accuracy[name] = run["best"]["per_class"]
        if run["class_weights"] and name.startswith("dv"):
            weights[name] = mean_one(run["class_weights"][-1])
    lines = [f"**{pv['label']}, seed {pv['seed']}** (F = {features or 'unbounded'} features): "
             f"best-epoch error {100 * (1 - pv['best']['acc']):.1f} %"
             + "".join(f", {name} {100 * (1 - run['best']['acc']):.1f} %" for name, run in others.items()),
             "", "| classes | n | round-off share of the radius | its factor on the radius "
             "| weight: " + " / ".join(weights) + " | accuracy %: " + " / ".join(accuracy) + " |",
             "|---|---|---|---|---|---|"]
    groups = pv.get("group_of_class") or ["all"] * classes
    for group in dict.fromkeys(groups):
        members = [k for k in range(classes) if groups[k] == group and counts[k] > 0]
        if not members:
            continue
        shares = [round_off_share(counts[k], d, classes, features) for k in members]
        span = f"{min(counts[k] for k in members)}–{max(counts[k] for k in members)}"
        w = " / ".join(f"{geomean([weights[name][k] for k in members]):.2g}" for name in weights)
        a = " / ".join(_pct(average(accuracy[name][k] for k in members)) for name in accuracy)
        lines.append(f"| {group}: {len(members)} | {span} | {_span(shares, '{:.2f}')} | "
                     f"{_span([ROUND_OFF ** f for f in shares], '{:.1g}')} | {w} | {a} |")
    lines += ["", "round-off share: of the axes the radius averages, those the class's logits do not "
              f"span (min(n − 1, F) spanned); factor: ROUND_OFF ({ROUND_OFF:g}) to that power; "
              "weight: the geometric mean over the group of the last-epoch weights, scaled to mean 1 "
              "over all classes; accuracy: the mean per-class accuracy at the best epoch"]
    return lines


def _span(values: list[float], fmt: str) -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}–{high}"


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-300)) for v in values) / len(values))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def picture(runs: list[dict], out: Path, features: int | None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    for i, run in enumerate(runs):
        colour, counts = f"C{i}", run["train_counts"]
        tag = f"{run['label']}, seed {run['seed']}"
        if run["class_weights"] and run["label"] != "ce":
            top.plot(counts, mean_one(run["class_weights"][-1]), ".", color=colour, label=tag)
        pairs = sorted((n, a) for n, a in zip(counts, run["best"]["per_class"]) if a is not None)
        bottom.plot(*zip(*pairs), ".", color=colour, alpha=0.25)
        # the mean of each ten classes by n: per-class accuracy alone is too noisy to read
        bins = [pairs[k:k + 10] for k in range(0, len(pairs), 10)]
        bottom.plot([geomean([n for n, _ in b]) for b in bins],
                    [sum(a for _, a in b) / len(b) for b in bins], "-o", ms=3, color=colour, label=tag)
    if features:
        for ax in (top, bottom):
            ax.axvline(features + 0.5, color="grey", lw=0.8, ls=":")
        top.annotate(f"n > {features}: the logits span at most F = {features} axes",
                     (features + 2, 0.02), xycoords=("data", "axes fraction"), fontsize=8,
                     color="grey")
    top.set(xscale="log", yscale="log", ylabel="class weight, last epoch (mean 1)",
            title="The authors' PV: weights and accuracy by class size")
    bottom.set(xscale="log", xlabel="training images in the class (n)",
               ylabel="test accuracy, best epoch\n(dots: classes; lines: means of 10)")
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def feature_width(backbone: str | None, classes: int) -> int | None:
    """The input width of the backbone's last linear layer: the rank bound on its logits."""
    import torch

    if backbone is None:
        return None
    from lt_bench.backbones import build_backbone

    try:
        linear = [m for m in build_backbone(backbone, classes).modules()
                  if isinstance(m, torch.nn.Linear)]
    except Exception:  # a backbone that needs more (weights, a text model): no bound known
        return None
    return linear[-1].in_features if linear else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, help="a workspace with finished runs (its runs/)")
    parser.add_argument("--dataset", default="cifar100_lt")
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--features", type=int,
                        help="the width of the features the head reads (default: the backbone's)")
    parser.add_argument("--out", type=Path, help="where the picture goes (none: no picture)")
    args = parser.parse_args(argv)
    runs = load_runs(args.workspace, args.dataset, args.imbalance)
    pvs = [run for run in runs if run["label"].startswith("pv")]
    if not pvs:
        print(f"pv_collapse: no finished pv run (convention=authors) of {args.dataset} at IF "
              f"{args.imbalance:g} under {args.workspace / 'runs'}; train one first "
              f"(lt-bench reproduce zheng_ng_table2 --row PV)", file=sys.stderr)
        return 2
    features = args.features or feature_width(pvs[0].get("backbone"), len(pvs[0]["classes"]))
    for pv in pvs:
        others = {run["label"]: run for run in runs
                  if run["seed"] == pv["seed"] and not run["label"].startswith("pv")}
        print("\n".join(compare(pv, dict(sorted(others.items())), features)), end="\n\n")
    if args.out:
        picture(runs, args.out, features)
        print(f"picture: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
