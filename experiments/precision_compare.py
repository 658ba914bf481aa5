"""bf16 against fp32 for the same methods and seeds: accuracy, the methods' gap, class weights.

    python experiments/precision_compare.py WORKSPACE
    python experiments/precision_compare.py evidence/bf16_vs_fp32_quick   # the committed runs

Reads every finished run under ``WORKSPACE/runs`` (a sweep with ``precision=[bf16,fp32]``) and
prints, per method and precision, the final and best accuracy over the seeds; the paired
bf16 − fp32 difference of each seed beside the seed-to-seed spread; the gap between each method
and ``ce`` in both precisions (the comparison's conclusion); and how far the last epoch's class
weights of bf16 lie from fp32's, beside how far two seeds' weights lie from each other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from collections import defaultdict
from pathlib import Path


def load(workspace: Path) -> dict:
    runs = {}
    # a workspace, or a folder of copied results (evidence/bf16_vs_fp32_quick)
    paths = sorted(workspace.glob("runs/*/results.json")) or sorted(workspace.glob("*.json"))
    for path in paths:
        r = json.loads(path.read_text())
        if r.get("status") == "FINISHED":
            runs[(r["method"], r["precision"], r["seed"])] = r
    return runs


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def weight_distance(a: list[float], b: list[float]) -> float:
    """Largest relative difference between two weight vectors."""
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path)
    args = parser.parse_args()
    runs = load(args.workspace)
    methods = sorted({m for m, _, _ in runs})
    seeds = sorted({s for _, _, s in runs})
    acc = defaultdict(dict)
    for (m, p, s), r in runs.items():
        acc[(m, p)][s] = (r["final"]["acc"], r["best"]["acc"], r["class_weights"][-1],
                          r["wall_time_s"])

    print("| method | precision | final acc % | best acc % | seeds | wall s per run |")
    print("|---|---|---|---|---|---|")
    for m, p in itertools.product(methods, ("fp32", "bf16")):
        got = acc.get((m, p), {})
        if got:
            print(f"| {m} | {p} | {spread([v[0] for v in got.values()])} | "
                  f"{spread([v[1] for v in got.values()])} | {len(got)} | "
                  f"{statistics.mean(v[3] for v in got.values()):.0f} |")

    print("\nPaired by seed (same data order and initialisation), final accuracy, points:")
    print("| method | bf16 − fp32 per seed | mean | seed-to-seed std (fp32) |")
    print("|---|---|---|---|")
    for m in methods:
        both = [s for s in seeds if s in acc[(m, "bf16")] and s in acc[(m, "fp32")]]
        diffs = [100 * (acc[(m, "bf16")][s][0] - acc[(m, "fp32")][s][0]) for s in both]
        sd = statistics.stdev([100 * acc[(m, "fp32")][s][0] for s in both]) if len(both) > 1 \
            else float("nan")
        if diffs:
            print(f"| {m} | {', '.join(f'{d:+.2f}' for d in diffs)} | "
                  f"{statistics.mean(diffs):+.2f} | {sd:.2f} |")

    if "ce" in methods:
        print("\nThe comparison: each method minus ce, final accuracy, paired by seed, points:")
        print("| method | fp32 | bf16 |")
        print("|---|---|---|")
        for m in methods:
            if m == "ce":
                continue
            cells = []
            for p in ("fp32", "bf16"):
                gaps = [100 * (acc[(m, p)][s][0] - acc[("ce", p)][s][0]) for s in seeds
                        if s in acc[(m, p)] and s in acc[("ce", p)]]
                cells.append(f"{statistics.mean(gaps):+.2f} ({', '.join(f'{g:+.2f}' for g in gaps)})"
                             if gaps else "—")
            print(f"| {m} | {cells[0]} | {cells[1]} |")

    print("\nLast epoch's class weights, largest relative difference:")
    print("| method | bf16 vs fp32, same seed | fp32 seed vs fp32 seed |")
    print("|---|---|---|")
    for m in methods:
        both = [s for s in seeds if s in acc[(m, "bf16")] and s in acc[(m, "fp32")]]
        across = [weight_distance(acc[(m, "bf16")][s][2], acc[(m, "fp32")][s][2]) for s in both]
        fp32 = [acc[(m, "fp32")][s][2] for s in both]
        seeds_apart = [weight_distance(a, b) for a, b in itertools.combinations(fp32, 2)]
        if across:
            print(f"| {m} | {max(across):.4f} | "
                  f"{max(seeds_apart) if seeds_apart else float('nan'):.4f} |")


if __name__ == "__main__":
    main()
