"""Does language help the VL-LTR-style head? Three heads on one image network, side by side.

On CIFAR-10-LT (IF 100 by default), ResNet-32 trains with
  * its plain linear head (``backbone=resnet32``),
  * the VL-LTR-style head with random class anchors (``backbone=vl_ltr backbone.tower=resnet32
    backbone.anchors=random``: the same architecture, no language),
  * the VL-LTR-style head with sentence anchors from a real text model (``backbone.anchors=FILE``,
    written by ``lt-bench anchors``, e.g. all-MiniLM-L6-v2 over configs/anchors/cifar10.yaml),
each under ``method=ce`` for ``--seeds`` seeds, through ``lt-bench sweep`` (resumable: the same
command again skips what finished). Then it prints a markdown table (final-epoch accuracy overall
and per group, ECE; mean ± std (n); each head against the linear one with Welch's 95 % interval
and p) and draws the picture. Issue 25, part 4; docs/RESULTS.md reads the numbers.

    python experiments/language_anchors.py --anchors workspace/anchors/cifar10_minilm.pt \\
        --data-root ../shared/data --workspace workspace/language_anchors --jobs 1 --side-by-side
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = (("acc", "overall"), ("acc_many", "many"), ("acc_medium", "medium"),
           ("acc_few", "few"), ("ece", "ECE"))


def arms(anchors: str) -> dict[str, list[str]]:
    vl = ["backbone=vl_ltr", "backbone.tower=resnet32"]
    return {"linear head": ["backbone=resnet32"],
            "VL-LTR head, random anchors": [*vl, "backbone.anchors=random"],
            "VL-LTR head, language anchors": [*vl, f"backbone.anchors={anchors}"]}


def common(args) -> list[str]:
    return [f"dataset={args.dataset}", f"imbalance={args.imbalance}", f"data.root={args.data_root}",
            f"data.copy={args.data_copy}", f"protocol={args.protocol}",
            f"workspace={args.workspace}", f"tracking.tracker={args.tracker}"]


def sweep_command(args, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "lt_bench", "sweep", *common(args), *overrides,
            "methods=[ce]", f"seeds={args.seeds}", f"jobs={args.jobs}"]


def train(args, heads: dict[str, list[str]]) -> None:
    """The heads' sweeps one after another, or side by side (each logging to its own file)
    with ``--side-by-side``: 3 seeds on 2 workers leave one idle for a third of each sweep."""
    if not args.side_by_side:
        for overrides in heads.values():
            command = sweep_command(args, overrides)
            print("$", " ".join(command[2:]), flush=True)
            if subprocess.run(command).returncode != 0:
                raise SystemExit(f"language_anchors: the sweep failed: {' '.join(command[2:])}")
        return
    Path(args.workspace).mkdir(parents=True, exist_ok=True)
    running = []
    for i, overrides in enumerate(heads.values()):
        command = sweep_command(args, overrides)
        log = Path(args.workspace) / f"sweep-{i}.log"
        print("$", " ".join(command[2:]), f"> {log}", flush=True)
        running.append((command, subprocess.Popen(command, stdout=log.open("a"),
                                                  stderr=subprocess.STDOUT)))
    failed = [" ".join(c[2:]) for c, p in running if p.wait() != 0]
    if failed:
        raise SystemExit(f"language_anchors: sweep(s) failed: {'; '.join(failed)}")


def results_of(args, overrides: list[str]) -> list[dict]:
    """The finished runs' results.json of one head, seeds 0 .. seeds-1."""
    from lt_bench.config import load_config
    from lt_bench.workspace.layout import results_file, run_folder
    from lt_bench.workspace.record import finished_result

    found = []
    for seed in range(args.seeds):
        cfg = load_config([], [*common(args), *overrides, "method=ce", f"seed={seed}"])
        file = results_file(run_folder(cfg))
        if finished_result(file) is not None:  # the run layer's own test of "finished"
            found.append(json.loads(file.read_text()))
    return found


def stats(values: list[float]):
    from lt_bench.tracking.records import mean, sample_std

    return mean(values), sample_std(values), len(values)


def against(values: list[float], base: list[float]) -> str:
    """Δ of means with Welch's 95 % interval and two-sided p, in points."""
    from lt_bench.compare.leaderboard import compare
    from lt_bench.compare.verdict import welch_interval

    (m1, s1, n1), (m2, s2, n2) = stats(values), stats(base)
    if n1 < 2 or n2 < 2:
        return "–"
    low, high = welch_interval(m1, s1, n1, m2, s2, n2)
    p = compare(values, base)[0]  # the leaderboard's Welch p
    return f"{100 * (m1 - m2):+.2f} [{100 * low:+.2f}, {100 * high:+.2f}], p {p:.2f}"


def table(heads: dict[str, list[dict]]) -> str:
    """Rows the heads; each head's overall accuracy against the one before it in ``arms``
    (random anchors against the linear head: the head; language against random: language)."""
    names = list(heads)
    lines = ["| head | " + " | ".join(name for _, name in COLUMNS) + " | overall, Δ vs the row "
             "above [95 %], Welch p |", "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for i, (head, runs) in enumerate(heads.items()):
        cells = []
        for key, _ in COLUMNS:
            values = [r["final"][key] for r in runs if r["final"].get(key) is not None]
            m, s, n = stats(values)
            cells.append("n/a" if m is None else
                         f"{100 * m:.2f} ± {100 * (s or 0):.2f} ({n})")
        versus = "" if i == 0 else against([r["final"]["acc"] for r in runs],
                                           [r["final"]["acc"] for r in heads[names[i - 1]]])
        lines.append(f"| {head} | " + " | ".join(cells) + f" | {versus} |")
    language, linear = heads[names[-1]], heads[names[0]]
    lines.append(f"\nlanguage anchors against the linear head, overall: "
                 f"{against([r['final']['acc'] for r in language], [r['final']['acc'] for r in linear])}")
    lines.append("per class (mean over seeds, %): " + "; ".join(
        f"{head}: " + " ".join("n/a" if m is None else f"{100 * m:.1f}"
                               for m in class_means(runs))
        for head, runs in heads.items() if runs))
    return "\n".join(lines)


def class_means(runs: list[dict]) -> list[float | None]:
    """Each class's final accuracy averaged over the seeds; None for a class without test
    images (results.json writes null there, and a mean of nothing is no number)."""
    means = []
    for values in zip(*[r["final"]["per_class"] for r in runs]):
        known = [v for v in values if v is not None]
        means.append(sum(known) / len(known) if known else None)
    return means


def picture(heads: dict[str, list[dict]], out: Path) -> None:
    """Left, the groups as bars with the seeds as dots; right, each class's accuracy (mean over
    seeds) from the largest class to the smallest, where a head's gains and losses lie."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, n) for k, n in COLUMNS[:4]
            if any(r["final"].get(k) is not None for runs in heads.values() for r in runs)]
    fig, (ax, right) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[1, 1.3])
    width = 0.8 / len(heads)
    for i, (head, runs) in enumerate(heads.items()):
        for j, (key, _) in enumerate(keys):
            values = [100 * r["final"][key] for r in runs if r["final"].get(key) is not None]
            m, s, n = stats(values)
            if m is None:
                continue
            x = j + (i - (len(heads) - 1) / 2) * width
            ax.bar(x, m, width, yerr=s or 0, capsize=3, color=f"C{i}",
                   label=f"{head} (n={n})" if j == 0 else None)
            ax.scatter([x] * n, values, s=8, color="black", zorder=3)
        if runs:
            per_class = [float("nan") if m is None else 100 * m for m in class_means(runs)]
            right.plot(range(len(per_class)), per_class, marker="o", color=f"C{i}")
    some = next(runs for runs in heads.values() if runs)
    right.set_xticks(range(len(some[0]["classes"])),
                     [f"{c}\n{n}" for c, n in zip(some[0]["classes"], some[0]["train_counts"])],
                     fontsize=7)
    right.set_ylabel("per-class accuracy, mean over seeds (%)")
    right.set_title("per class (training images below the name)", fontsize=10)
    ax.set_xticks(range(len(keys)), [name for _, name in keys])
    ax.set_ylabel("final-epoch test accuracy (%)")
    ax.set_title("groups (bars: mean ± std; dots: seeds)", fontsize=10)
    fig.suptitle("ResNet-32 on CIFAR-10-LT, ce: linear head and VL-LTR-style head")
    fig.legend(loc="lower center", ncol=len(heads), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"picture: {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--anchors", required=True, help="the language anchors file")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--data-copy", default="auto",
                        help="which copy of CIFAR (auto: the lossless one; the committed runs "
                             "were on jpeg)")
    parser.add_argument("--workspace", default="workspace/language_anchors")
    parser.add_argument("--dataset", default="cifar10_lt")
    parser.add_argument("--imbalance", default="100")
    parser.add_argument("--protocol", default="language_cifar")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tracker", default="mlflow")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run the three heads' sweeps at once (use with --jobs 1)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--picture", default="docs/bench/language_anchors.png")
    args = parser.parse_args(argv)
    args.anchors = str(Path(args.anchors).resolve())  # the path is part of the config hash
    start = time.time()
    if not args.report_only:
        train(args, arms(args.anchors))
        print(f"trained in {(time.time() - start) / 60:.1f} min", flush=True)
    heads = {head: results_of(args, o) for head, o in arms(args.anchors).items()}
    print(table(heads))
    picture(heads, Path(args.picture))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
