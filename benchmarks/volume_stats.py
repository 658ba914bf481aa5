"""Class-volume statistics for one iNaturalist-sized epoch: time and peak memory of DV and BV.

    python benchmarks/volume_stats.py [--classes 8142] [--samples 437513] [--batch 256]

iNaturalist 2018 has C = 8,142 classes and N = 437,513 training images. One epoch of the
``dv`` / ``bv`` criterion sees N logit rows of width C in batches; this script feeds it exactly
that, through the method's own ``observe`` (what the training step calls) and ``end_epoch``
(all-reduce, radii, S30, NE normalisation, reset). The logits are random, drawn before the clock
starts (a pool of 8 batches reused with fresh targets), because the training pass computes them
anyway; the class counts are 2 each plus an exponential long tail (shape ratio 500) scaled
so that they sum to N, and the targets are a shuffle of those labels.

Each method runs in a fresh process so that its peak resident memory (``ru_maxrss``) is its
own; the table gives the peak and the increase over the process before the method was built.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

POOL = 8


def counts_for(classes: int, samples: int, imbalance: float = 500.0) -> list[int]:
    import torch

    if samples < 2 * classes:
        raise SystemExit(f"--samples must be at least 2 per class ({2 * classes})")
    shape = imbalance ** (-torch.arange(classes, dtype=torch.float64) / max(1, classes - 1))
    # two per class (ddof=1 needs them), the rest shared along the exponential tail
    counts = 2 + (shape / shape.sum() * (samples - 2 * classes)).floor().long()
    counts[0] += samples - int(counts.sum())  # the head class absorbs the rounding
    return counts.tolist()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one(method: str, classes: int, samples: int, batch: int) -> dict:
    import torch

    from lt_bench.api import build_method

    counts = counts_for(classes, samples)
    gen = torch.Generator().manual_seed(0)
    labels = torch.repeat_interleave(torch.arange(classes), torch.tensor(counts))
    targets = labels[torch.randperm(samples, generator=gen)]
    pool = [torch.randn(batch, classes, generator=gen) * 3 for _ in range(POOL)]
    build_method(method, [3, 2])  # loads the plugins first: their imports are not the method's
    before = rss_mib()
    criterion = build_method(method, counts, start_epoch=0).train()
    started = time.perf_counter()
    for i, start in enumerate(range(0, samples, batch)):
        y = targets[start:start + batch]
        criterion.observe(pool[i % POOL][:len(y)], y)
    gathered = time.perf_counter()
    seen = int(criterion.stats.count.sum())
    criterion.end_epoch()
    done = time.perf_counter()
    weights = criterion.class_weights
    assert seen == samples, (seen, samples)
    assert bool(torch.isfinite(weights).all())
    ne = float((weights.double() * torch.tensor(counts, dtype=torch.float64)).sum() / samples)
    return {"method": method, "gather_s": gathered - started, "end_epoch_s": done - gathered,
            "total_s": done - started, "peak_mib": rss_mib(), "increase_mib": rss_mib() - before,
            "expected_weight": ne, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=8142)
    parser.add_argument("--samples", type=int, default=437513)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--methods", default="dv,bv")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one method
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.classes, args.samples, args.batch)))
        return
    print(f"# {platform.processor() or platform.machine()}, C = {args.classes:,}, "
          f"N = {args.samples:,}, batch {args.batch}")
    print("| method | gather (s) | end_epoch (s) | total (s) | peak RSS (MiB) | "
          "increase (MiB) | Σ n·α / N | threads |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", method, "--classes",
                              str(args.classes), "--samples", str(args.samples), "--batch",
                              str(args.batch)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['method']} | {r['gather_s']:.1f} | {r['end_epoch_s']:.2f} | "
              f"{r['total_s']:.1f} | {r['peak_mib']:.0f} | {r['increase_mib']:.0f} | "
              f"{r['expected_weight']:.6f} | {r['threads']} |", flush=True)


if __name__ == "__main__":
    main()
