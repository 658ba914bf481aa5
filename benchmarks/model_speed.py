"""ResNet-32 alone: training (fwd + bwd + SGD step) and evaluation images/s on ready-made tensors.

    python benchmarks/model_speed.py            # one process, all cores
    python benchmarks/model_speed.py --processes 2   # N processes at once, cores split evenly

The floor under any CIFAR harness on this machine: batches of 128 × 3 × 32 × 32 random images
already in memory, no data pipeline, 10 timed steps after 3 warm-up steps; evaluation scores
batches of 512 under ``no_grad``. With ``--processes N`` each process gets cores // N intra-op
threads and the table adds their rates: how ``lt-bench sweep jobs=N`` uses the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext


def measure(threads: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from lt_bench.backbones import build_backbone

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_backbone("resnet32", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    out = []
    for precision in ("fp32", "bf16"):
        ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
               else nullcontext())
        model.train()
        for i in range(13):
            if i == 3:
                started = time.perf_counter()
            with ctx:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train = 10 * 128 / (time.perf_counter() - started)
        model.eval()
        xb = torch.randn(512, 3, 32, 32)
        with torch.no_grad(), ctx:
            model(xb)
            started = time.perf_counter()
            for _ in range(4):
                model(xb)
        evaluate = 4 * 512 / (time.perf_counter() - started)
        out.append({"precision": precision, "train": train, "eval": evaluate})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.threads:
        print(json.dumps(measure(args.threads)))
        return
    threads = max(1, (os.cpu_count() or 1) // args.processes)
    children = [subprocess.Popen([sys.executable, __file__, "--threads", str(threads)],
                                 stdout=subprocess.PIPE, text=True)
                for _ in range(args.processes)]
    results = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
    print(f"{args.processes} process(es) × {threads} thread(s), {os.cpu_count()} cores")
    print("| precision | train img/s (sum) | eval img/s (sum) |")
    print("|---|---|---|")
    for i, precision in enumerate(("fp32", "bf16")):
        train = sum(r[i]["train"] for r in results)
        evaluate = sum(r[i]["eval"] for r in results)
        print(f"| {precision} | {train:.0f} | {evaluate:.0f} |")


if __name__ == "__main__":
    main()
