"""Is the authors' PV collapse what the paper saw? The weights and accuracy of the classes it collapses.

    python experiments/pv_collapse.py WORKSPACE [--dataset cifar100_lt] [--imbalance 100]
        [--out docs/bench/pv_collapse.png]

The authors' PV fills the principal axes a class of n ≤ D† samples cannot span with a geometric
mean that includes a round-off eigenvalue, so such a class's volume, and its weight, fall by a
root of round-off (docs/RESULTS.md; ``plugins/class_volume``). The paper blames PV's "last few
principal axes" for its poor CIFAR-100 cells (Table 2). This reads the finished runs under
WORKSPACE/runs: every ``pv`` run under ``convention=authors``, and the ``dv`` and ``ce`` runs of the
same seed as its comparators. For each pv run it prints the classes it collapses, their weight at
the last epoch against the weight dv gave them, and their per-class accuracy (best epoch) beside
dv's and ce's, then the same for the classes it does not collapse. Each run's weights are scaled to
mean 1 over the classes first, so a run normalised by NE and one normalised to mean 1 compare.
The picture draws weight and accuracy against n.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml


def load_runs(workspace: Path, dataset: str, imbalance: float) -> list[dict]:
    """Every finished run of ``dataset`` at ``imbalance`` under ``workspace/runs``, labelled."""
    runs = []
    for results in sorted((workspace / "runs").glob("*/results.json")):
        record = json.loads(results.read_text())
        if (record.get("status") != "FINISHED" or record.get("dataset") != dataset
                or float(record.get("imbalance", 0)) != imbalance):
            continue
        config = yaml.safe_load((results.parent / "config.yaml").read_text())
        record["label"] = label(config["method"], len(record["classes"]))
        if record["label"]:
            runs.append(record)
    return runs


def label(method: dict, classes: int) -> str | None:
    """The run's place in the comparison: pv (authors) by its D†, dv by its normalisation, ce."""
    name = method.get("name")
    if name == "pv" and method.get("convention") == "authors":
        # pv's own default D† is 10; the studies write components: null for all C axes
        components = method.get("components", 10)
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


def compare(pv: dict, others: dict[str, dict]) -> list[str]:
    """Markdown lines for one pv run: its collapsed classes and the rest, against ``others``."""
    d = int(pv["label"].split("=")[1])
    counts = pv["train_counts"]
    collapsed = [k for k, n in enumerate(counts) if 0 < n <= d]
    rest = [k for k in range(len(counts)) if k not in collapsed]
    weights = {"pv": mean_one(pv["class_weights"][-1])}
    accuracy = {"pv": pv["best"]["per_class"]}
    for name, run in others.items():
        accuracy[name] = run["best"]["per_class"]
        if run["class_weights"] and name.startswith("dv"):
            weights[name] = mean_one(run["class_weights"][-1])
    lines = [f"**{pv['label']}, seed {pv['seed']}**: best-epoch error {100 * (1 - pv['best']['acc']):.1f} %"
             + "".join(f", {name} {100 * (1 - run['best']['acc']):.1f} %" for name, run in others.items()),
             "", "| classes | n | weight: " + " / ".join(weights) + " | accuracy %: "
             + " / ".join(accuracy) + " |", "|---|---|---|---|"]
    for title, group in ((f"collapsed (n ≤ {d}): {len(collapsed)}", collapsed),
                         (f"the others: {len(rest)}", rest)):
        if not group:
            lines.append(f"| {title} | – | – | – |")
            continue
        span = f"{min(counts[k] for k in group)}–{max(counts[k] for k in group)}"
        w = " / ".join(f"{geomean([weights[name][k] for k in group]):.3g}" for name in weights)
        a = " / ".join(_pct(average(accuracy[name][k] for k in group)) for name in accuracy)
        lines.append(f"| {title} | {span} | {w} | {a} |")
    lines.append("")
    lines.append("weights: the geometric mean over the group of each run's last-epoch weight, "
                 "scaled to mean 1 over all classes; accuracy: the mean per-class accuracy")
    return lines


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-300)) for v in values) / len(values))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def picture(runs: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for run in runs:
        counts = run["train_counts"]
        tag = f"{run['label']}, seed {run['seed']}"
        if run["class_weights"] and run["label"] != "ce":
            top.plot(counts, mean_one(run["class_weights"][-1]), ".", label=tag)
        pairs = [(n, a) for n, a in zip(counts, run["best"]["per_class"]) if a is not None]
        bottom.plot(*zip(*pairs), ".", alpha=0.7, label=tag)
    for run in runs:
        if run["label"].startswith("pv"):
            d = int(run["label"].split("=")[1])
            top.axvline(d + 0.5, color="grey", lw=0.8, ls=":")
            bottom.axvline(d + 0.5, color="grey", lw=0.8, ls=":")
    top.set(xscale="log", yscale="log", ylabel="class weight, last epoch (mean 1)",
            title="The authors' PV: classes of n ≤ D† samples (left of the dotted lines)")
    bottom.set(xscale="log", xlabel="training images in the class (n)",
               ylabel="test accuracy of the class, best epoch")
    top.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, help="a workspace with finished runs (its runs/)")
    parser.add_argument("--dataset", default="cifar100_lt")
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--out", type=Path, help="where the picture goes (none: no picture)")
    args = parser.parse_args(argv)
    runs = load_runs(args.workspace, args.dataset, args.imbalance)
    pvs = [run for run in runs if run["label"].startswith("pv")]
    if not pvs:
        print(f"pv_collapse: no finished pv run (convention=authors) of {args.dataset} at IF "
              f"{args.imbalance:g} under {args.workspace / 'runs'}; train one first "
              f"(lt-bench reproduce zheng_ng_table2 --row PV)", file=sys.stderr)
        return 2
    for pv in pvs:
        others = {run["label"]: run for run in runs
                  if run["seed"] == pv["seed"] and not run["label"].startswith("pv")}
        print("\n".join(compare(pv, dict(sorted(others.items())))), end="\n\n")
    if args.out:
        picture(runs, args.out)
        print(f"picture: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
